"""The prefork supervisor: bind once, fork workers, keep the right number of them alive.

Shape after uvicorn's ``supervisors/multiprocess.py`` and php-fpm's process manager:

* The caller binds every listener in the parent (:func:`bind_listeners`) and passes the
  sockets; workers inherit them (:func:`_hand_over` is the one place that knows how).
* Each worker imports the application *after* the fork, so a reload runs fresh code, and
  serves on a fresh event loop. It reports to the parent through a shared-memory
  :class:`~fcgi_async.scoreboard.Scoreboard`: state, request counts and a heartbeat.
* The parent is a plain synchronous loop. Signal handlers only enqueue the signal number (and
  wake the loop through ``signal.set_wakeup_fd``); the loop dispatches ``handle_<signal>`` and
  then does its rounds: reap, kill hung workers, finish reloads, run the process manager.
* Process managers as php-fpm's: ``static`` keeps ``workers`` alive; ``dynamic`` keeps
  between ``pm_min_spare`` and ``pm_max_spare`` idle workers, at most ``pm_max_children``;
  ``ondemand`` forks when a listener becomes readable and no worker is idle, and stops a worker
  idle for ``pm_idle_timeout_s``.

Signals (parent): TERM, INT, QUIT: graceful stop. HUP, USR2: graceful reload (a new generation
first, the old one drains once the new one listens). TTIN/TTOU: one worker more/less.
USR1: reopen log files, here and in every worker.

Worker exit statuses: :data:`EXIT_OK`, :data:`EXIT_STARTUP_FAILED`,
:data:`EXIT_APP_LOAD_FAILED`, :data:`EXIT_UNEXPECTED`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import random
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import NoReturn

from . import _compat
from .config import CRASH_LIMIT, CRASH_WINDOW_S, Config, ConfigError
from .features import install_features
from .logs import reopen_log_files
from .runner import handle_signals, loop_factory
from .scoreboard import Scoreboard, WorkerState
from .server import Server, ServerState
from .server.listeners import open_listeners
from .types import Application

logger = logging.getLogger("fcgi_async.supervisor")

#: A worker stopped cleanly (graceful stop, recycling after max_requests).
EXIT_OK = 0
#: The worker died of something unexpected while serving.
EXIT_UNEXPECTED = 1
#: The application's startup (ASGI lifespan, ``Application.startup``) or listening failed.
EXIT_STARTUP_FAILED = 3
#: The application could not be imported or built (gunicorn uses 4 for the same).
EXIT_APP_LOAD_FAILED = 4

#: Respawn back-off after a crash: base * 2**(recent crashes - 1), capped. Short enough that
#: one crash costs almost nothing, growing so that a crash loop does not burn a CPU.
RESPAWN_BACKOFF_BASE_S = 0.1
RESPAWN_BACKOFF_MAX_S = 5.0
#: How often a worker's event loop bumps its heartbeat.
HEARTBEAT_INTERVAL_S = 1.0
#: How often the supervisor does its rounds when no signal wakes it earlier.
TICK_S = 0.1
#: A draining worker keeps a connection it accepted just before it stopped listening this long
#: for its first request: the web server sent it already, so closing it would lose a request.
FIRST_REQUEST_GRACE_S = 0.5
#: How long a draining worker lets accepts already under way complete (asyncio runs them as
#: tasks, so a connection can be accepted yet not registered when the listeners close).
ACCEPT_SETTLE_S = 0.05
#: How often the first-request grace looks at its connections again.
GRACE_POLL_S = 0.01
#: Beyond graceful_timeout_s, what a worker gets to cancel its requests and shut its app down
#: before SIGKILL.
KILL_MARGIN_S = 5.0
#: dynamic: at most one idle worker above pm_max_spare is stopped per this many seconds
#: (php-fpm's pace).
SCALE_DOWN_INTERVAL_S = 1.0
#: Slots per possible worker: during a reload two generations are alive at once.
SLOTS_PER_WORKER = 2
#: Scoreboard size floor, so that SIGTTIN has room.
MIN_SLOTS = 64
#: Signals the supervisor handles (each has a ``handle_<name>`` method).
HANDLED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
)
#: Signals a worker ignores: they are meant for the supervisor (a terminal hang-up, ^Z-style
#: TTIN/TTOU), which forwards what concerns workers.
_WORKER_IGNORED = (signal.SIGHUP, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU)


def bind_listeners(config: Config, inherited: Sequence[socket.socket] = ()) -> list[socket.socket]:
    """Bind every configured listener in this (the parent) process, before any fork.

    The same choice as the single-process server
    (:func:`fcgi_async.server.listeners.open_listeners`).

    Raises:
        BindError: an address is malformed or cannot be bound; nothing stays bound.
    """
    return open_listeners(config, inherited, log=logger)


def _hand_over(sockets: Sequence[socket.socket]) -> list[socket.socket]:
    """The child's copy of the listening sockets.

    On POSIX ``fork`` already shared them. A Windows path would pass ``socket.share(pid)``
    blobs to a spawned child and rebuild them here with ``socket.fromshare``.
    """
    return list(sockets)


def _describe_status(status: int) -> str:
    """A worker's wait status in words: 'exit status 3 (startup failed)', 'signal SIGKILL'."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    reason = {
        EXIT_OK: "clean",
        EXIT_UNEXPECTED: "error while serving",
        EXIT_STARTUP_FAILED: "startup failed",
        EXIT_APP_LOAD_FAILED: "app could not be loaded",
    }.get(code, "unknown")
    return f"exit status {code} ({reason})"


@dataclass(slots=True)
class Worker:
    """The supervisor's view of one worker process."""

    pid: int
    slot: int
    generation: int
    started_at: float
    #: True once the worker was told to stop (or stopped on its own): it does not count
    #: towards the process manager's target and its exit is no crash.
    retiring: bool = False
    #: When a retiring worker gets SIGKILL if it is still alive.
    kill_at: float = float("inf")
    #: True once SIGKILL was sent.
    killed: bool = False
    #: Seen listening (left STARTING) at least once.
    ready: bool = False


@dataclass(slots=True)
class _Reload:
    """A reload in progress: the new generation starts before the old one drains."""

    generation: int
    target: int
    started_at: float = field(default_factory=time.monotonic)


class Supervisor:
    """Forks and watches worker processes that serve ``sockets``.

    Args:
        config: the configuration (``workers``, ``pm*``, ``max_requests*``,
            ``worker_timeout_s``, ``graceful_timeout_s``).
        load_app: imports and builds the application; called in each worker after the fork.
        sockets: listening sockets bound by the caller, which also closes them after
            :meth:`run` returns.

    :meth:`run` blocks until the supervisor stops and returns the process exit status: 0 after a
    graceful stop, 1 when respawning stopped (crash loop) and no worker is left.

    Raises:
        ConfigError: the platform cannot fork.
    """

    def __init__(
        self,
        config: Config,
        load_app: Callable[[], Application],
        sockets: Sequence[socket.socket],
    ) -> None:
        if not hasattr(os, "fork"):
            raise ConfigError(
                "--workers, --pm and --max-requests need os.fork, which this platform lacks"
            )
        self.config = config
        self.load_app = load_app
        self.sockets = list(sockets)
        #: Workers by pid.
        self.workers: dict[int, Worker] = {}
        #: The generation new workers belong to; a reload increments it.
        self.generation = 0
        #: static: how many workers; dynamic/ondemand: the most workers (SIGTTIN/TTOU move it).
        self.target = config.workers if config.pm == "static" else config.pm_max_children
        max_workers = max(self.target, config.workers, config.pm_max_children)
        self.scoreboard = Scoreboard(max(MIN_SLOTS, SLOTS_PER_WORKER * max_workers))
        self._free_slots = list(range(self.scoreboard.slots - 1, -1, -1))
        self._signals: collections.deque[int] = collections.deque(maxlen=64)
        self._wakeup_r = -1
        self._wakeup_w = -1
        self._stopping = False
        self._stop_deadline = float("inf")
        self._done = False
        self._exit_code = 0
        self._crashes: collections.deque[float] = collections.deque()
        self._respawn_stopped = False
        self._spawn_not_before = 0.0
        self._last_scale_down = 0.0
        self._reload: _Reload | None = None
        #: dynamic, ondemand: the pool is at pm_max_children and wants more (counted once
        #: per episode).
        self._at_max_children = False

    # ----------------------------------------------------------------------- main loop
    def run(self) -> int:
        """Supervise until stopped; return the exit status for the process.

        Call it once, from the main thread (it installs signal handlers), in a process with no
        other threads (``fork`` copies only the calling thread). Its signal handlers are
        restored when it returns, and no worker outlives it.
        """
        previous = self._install_signals()
        try:
            logger.info(
                "supervisor %d: pm %s, %s; listening sockets shared with every worker",
                os.getpid(),
                self.config.pm,
                self._describe_pm(),
            )
            now = time.monotonic()
            initial = {"static": self.target, "dynamic": self.config.pm_start_servers}
            for _ in range(initial.get(self.config.pm, 0)):
                self._spawn(now)
            if self.config.pm == "ondemand":
                logger.info("ondemand: no worker until the first connection")
            while not self._done:
                self._wait()
                self._dispatch_signals()
                self._rounds(time.monotonic())
        finally:
            self._kill_all()
            self._restore_signals(previous)
            self.scoreboard.close()
        return self._exit_code

    def _describe_pm(self) -> str:
        c = self.config
        if c.pm == "static":
            text = f"{self.target} worker(s)"
        elif c.pm == "dynamic":
            text = (
                f"{c.pm_start_servers} at start, {c.pm_min_spare}-{c.pm_max_spare} spare, "
                f"at most {self.target}"
            )
        else:
            text = f"at most {self.target}, idle timeout {c.pm_idle_timeout_s:g} s"
        if c.max_requests:
            text += f", recycled after {c.max_requests}(+{c.max_requests_jitter}) requests"
        return text

    def _install_signals(self) -> dict[int, object]:
        self._wakeup_r, self._wakeup_w = os.pipe()
        for fd in (self._wakeup_r, self._wakeup_w):
            os.set_blocking(fd, False)
        previous: dict[int, object] = {}
        for sig in HANDLED_SIGNALS:
            previous[sig] = signal.signal(sig, self._enqueue_signal)
        previous[-1] = signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        return previous

    def _restore_signals(self, previous: dict[int, object]) -> None:
        wakeup = previous.pop(-1)
        signal.set_wakeup_fd(wakeup if isinstance(wakeup, int) else -1)
        for sig, handler in previous.items():
            if callable(handler) or isinstance(handler, int):
                signal.signal(sig, handler)
            else:  # installed from C, not restorable from Python
                signal.signal(sig, signal.SIG_DFL)
        for fd in (self._wakeup_r, self._wakeup_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _enqueue_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only enqueue: the loop acts on it (set_wakeup_fd already woke it).
        self._signals.append(signum)

    def _wait(self) -> None:
        """Sleep until a signal, a tick, or (ondemand) a connection nobody is there to take."""
        readable = [self._wakeup_r]
        watch = self._watch_listeners()
        listeners = [s.fileno() for s in self.sockets] if watch else []
        readable.extend(listeners)
        try:
            ready, _, _ = select.select(readable, [], [], TICK_S)
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for safety
            ready = []
        if self._wakeup_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wakeup_r, 512):
                    pass
        if any(fd in ready for fd in listeners):
            if len(self._current()) >= self.target:
                # php-fpm's ondemand counts this in fpm_pctl_on_socket_accept: work waits and
                # no child may be forked. Counted once; watching stops until it clears.
                self._note_max_children(True)
            else:
                logger.info("ondemand: a connection is waiting and no worker is idle: forking one")
                self._spawn(time.monotonic())

    def _dispatch_signals(self) -> None:
        while self._signals:
            signum = self._signals.popleft()
            name = signal.Signals(signum).name.lower()
            handler: Callable[[], None] = getattr(self, f"handle_{name}")
            handler()

    def _rounds(self, now: float) -> None:
        self._reap(now)
        if self._stopping:
            if not self.workers:
                logger.info("all workers stopped")
                self._done = True
            elif now >= self._stop_deadline:
                self._sigkill_all("graceful timeout: killing %d worker(s) still running")
            return
        self._check_workers(now)
        self._progress_reload(now)
        if self._respawn_stopped:
            if not self.workers:
                logger.error("no worker left and respawning is stopped: exiting")
                self._exit_code = 1
                self._done = True
            return
        self._manage(now)

    # -------------------------------------------------------------------------- workers
    def _spawn(self, now: float) -> None:
        if not self._free_slots:
            logger.warning("scoreboard full (%d slots): not forking", self.scoreboard.slots)
            return
        slot = self._free_slots.pop()
        self.scoreboard.reset(slot, now=now, state=WorkerState.STARTING)
        generation = self.generation
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                self._become_worker(slot, blocked)
        except OSError as exc:  # EAGAIN (process limit), ENOMEM: try again later
            self.scoreboard.reset(slot, now=now)
            self._free_slots.append(slot)
            self._spawn_not_before = now + RESPAWN_BACKOFF_MAX_S
            logger.error(
                "cannot fork a worker: %s; trying again in %g s", exc, RESPAWN_BACKOFF_MAX_S
            )
            return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self.scoreboard.set_pid(slot, pid)
        self.workers[pid] = Worker(pid, slot, generation, now)
        logger.info("started worker %d (generation %d)", pid, generation)

    def _become_worker(self, slot: int, mask: set[int | signal.Signals]) -> NoReturn:
        """In the child: reset what the parent set up, serve, and exit with a telling status."""
        code = EXIT_UNEXPECTED
        try:
            signal.set_wakeup_fd(-1)
            for sig in HANDLED_SIGNALS:
                signal.signal(sig, signal.SIG_IGN if sig in _WORKER_IGNORED else signal.SIG_DFL)
            for fd in (self._wakeup_r, self._wakeup_w):
                os.close(fd)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            sockets = _hand_over(self.sockets)
            code = _worker_main(self.config, self.load_app, sockets, self.scoreboard, slot)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(BaseException):
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _signal(self, worker: Worker, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, sig)

    def _retire(self, worker: Worker, now: float, reason: str) -> None:
        """Ask a worker to drain and exit (SIGTERM); SIGKILL it if it takes too long."""
        if worker.retiring:
            return
        worker.retiring = True
        worker.kill_at = now + self.config.graceful_timeout_s + KILL_MARGIN_S
        logger.info("stopping worker %d: %s", worker.pid, reason)
        self._signal(worker, signal.SIGTERM)

    def _reap(self, now: float) -> None:
        for pid, worker in list(self.workers.items()):
            try:
                waited, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                waited, status = pid, 0
            if waited == 0:
                continue
            del self.workers[pid]
            if self.scoreboard.state(worker.slot) == WorkerState.DRAINING:
                worker.retiring = True  # it drained on its own and exited before we looked
            self.scoreboard.reset(worker.slot, now=now)
            self._free_slots.append(worker.slot)
            self._worker_exited(worker, status, now)

    def _worker_exited(self, worker: Worker, status: int, now: float) -> None:
        how = _describe_status(status)
        if self._stopping or worker.retiring:
            logger.info("worker %d exited: %s", worker.pid, how)
            return
        if worker.killed:
            logger.warning("worker %d exited: %s; replacing it", worker.pid, how)
            return
        self._crashes.append(now)
        recent = self._recent_crashes(now)
        if recent >= CRASH_LIMIT:
            if not self._respawn_stopped:
                self._respawn_stopped = True
                logger.error(
                    "crash loop: %d workers died within %.0f s, the last one with %s. Not "
                    "respawning any more. The worker's own log lines above say why; fix the "
                    "app (or its environment) and send SIGHUP to try again.",
                    recent,
                    CRASH_WINDOW_S,
                    how,
                )
            else:
                logger.error("worker %d died: %s (respawning is stopped)", worker.pid, how)
            return
        delay = min(RESPAWN_BACKOFF_BASE_S * 2 ** (recent - 1), RESPAWN_BACKOFF_MAX_S)
        self._spawn_not_before = max(self._spawn_not_before, now + delay)
        logger.warning(
            "worker %d died unexpectedly: %s; respawning in %.1f s", worker.pid, how, delay
        )

    def _recent_crashes(self, now: float) -> int:
        """Unexpected worker exits within the last CRASH_WINDOW_S."""
        while self._crashes and now - self._crashes[0] > CRASH_WINDOW_S:
            self._crashes.popleft()
        return len(self._crashes)

    def _check_workers(self, now: float) -> None:
        """Kill hung workers, notice self-draining ones, enforce drain deadlines."""
        timeout = self.config.worker_timeout_s
        for worker in list(self.workers.values()):
            if worker.killed:
                continue
            info = self.scoreboard.read(worker.slot)
            if info.state not in (WorkerState.STARTING, WorkerState.FREE):
                worker.ready = True
            silent = now - info.heartbeat
            if silent > timeout:
                logger.error(
                    "worker %d sent no heartbeat for %.1f s (--worker-timeout %g): its event "
                    "loop is blocked; killing it (SIGKILL)%s",
                    worker.pid,
                    silent,
                    timeout,
                    "" if worker.retiring else " and starting a replacement",
                )
                self._kill(worker)
            elif worker.retiring and now >= worker.kill_at:
                logger.warning(
                    "worker %d still running %.0f s after SIGTERM: killing it",
                    worker.pid,
                    self.config.graceful_timeout_s + KILL_MARGIN_S,
                )
                self._kill(worker)
            elif info.state == WorkerState.DRAINING and not worker.retiring:
                # It stopped listening on its own (max_requests, or someone sent it SIGTERM):
                # its replacement starts now, while it finishes its requests.
                worker.retiring = True
                worker.kill_at = now + self.config.graceful_timeout_s + KILL_MARGIN_S
                logger.info(
                    "worker %d is draining after %d request(s); starting a replacement",
                    worker.pid,
                    info.total_requests,
                )

    def _kill(self, worker: Worker) -> None:
        worker.killed = True
        worker.retiring = True
        self._signal(worker, signal.SIGKILL)

    def _sigkill_all(self, message: str) -> None:
        alive = [w for w in self.workers.values() if not w.killed]
        if alive:
            logger.warning(message, len(alive))
        for worker in alive:
            self._kill(worker)

    def _kill_all(self) -> None:
        """Last resort when run() ends: nothing we forked survives us."""
        for worker in self.workers.values():
            self._signal(worker, signal.SIGKILL)
        for pid in list(self.workers):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.workers.clear()

    # -------------------------------------------------------------------- the manager
    def _current(self) -> list[Worker]:
        """Workers of the current generation that are not on their way out."""
        return [
            w for w in self.workers.values() if w.generation == self.generation and not w.retiring
        ]

    def _idle(self, workers: list[Worker]) -> list[Worker]:
        result = []
        for worker in workers:
            info = self.scoreboard.read(worker.slot)
            if info.state == WorkerState.IDLE and info.active_requests == 0:
                result.append(worker)
        return result

    def _watch_listeners(self) -> bool:
        """ondemand: watch the listeners while a connection would find no idle worker.

        At ``pm_max_children`` they are watched only until a waiting connection has been
        counted as "max children reached": a connection left in the accept queue keeps the
        listener readable, and watching on would turn the loop into a busy loop.
        """
        if self.config.pm != "ondemand" or self._stopping or self._respawn_stopped:
            return False
        if time.monotonic() < self._spawn_not_before:
            return False
        current = self._current()
        if len(current) >= self.target and self._at_max_children:
            return False
        if any(self.scoreboard.state(w.slot) == WorkerState.STARTING for w in current):
            return False
        return not self._idle(current)

    def _manage(self, now: float) -> None:
        current = self._current()
        pm = self.config.pm
        if self._reload is not None:
            wanted = self._reload.target
        elif pm == "static":
            wanted = self.target
        elif pm == "dynamic":
            idle = self._idle(current)
            starting = [w for w in current if not w.ready]
            short = len(idle) + len(starting) < self.config.pm_min_spare
            self._note_max_children(short and len(current) >= self.target)
            if short:
                wanted = min(len(current) + 1, self.target)
            elif len(current) > self.target:  # SIGTTOU lowered the ceiling
                wanted = self.target
            elif (
                len(idle) > self.config.pm_max_spare
                and now - self._last_scale_down >= SCALE_DOWN_INTERVAL_S
            ):
                self._last_scale_down = now
                self._retire(idle[-1], now, "more idle workers than --pm-max-spare")
                return
            else:
                return
        else:  # ondemand: forks happen in _wait; here idle workers are stopped.
            idle = self._idle(current)
            if idle or len(current) < self.target:
                self._note_max_children(False)  # the episode is over: count the next one
            for worker in idle:
                idle_for = now - self.scoreboard.read(worker.slot).last_change
                if idle_for >= self.config.pm_idle_timeout_s:
                    self._retire(worker, now, f"idle for {idle_for:.1f} s (--pm-idle-timeout)")
            return
        if len(current) < wanted and now >= self._spawn_not_before:
            # All missing workers at once (a reload's new generation), unless workers crashed
            # lately: then one at a time, each after its back-off.
            for _ in range(1 if self._recent_crashes(now) else wanted - len(current)):
                self._spawn(now)
        elif len(current) > wanted:
            idle = self._idle(current) or current
            self._retire(idle[-1], now, f"worker count lowered to {wanted}")

    def _note_max_children(self, reached: bool) -> None:
        """Count and warn once each time the pool wants a worker beyond pm_max_children
        (php-fpm's "max children reached" on the status page): dynamic when it is short of
        spare workers, ondemand when a connection waits and no worker is idle."""
        if reached and not self._at_max_children:
            self.scoreboard.count_max_children_reached()
            logger.warning(
                "pool reached --pm-max-children (%d) and has no idle worker to spare; "
                "consider raising it",
                self.target,
            )
        self._at_max_children = reached

    def _progress_reload(self, now: float) -> None:
        reload = self._reload
        if reload is None:
            return
        current = self._current()
        old = [w for w in self.workers.values() if w.generation < reload.generation]
        if self._respawn_stopped:
            logger.error(
                "reload failed: the new workers keep dying; the previous generation "
                "(%d worker(s)) goes on serving",
                len(old),
            )
            for worker in old:
                worker.generation = self.generation
            self._reload = None
            return
        ready = [w for w in current if w.ready]
        if len(ready) < reload.target:
            return
        for worker in old:
            self._retire(worker, now, f"reload: generation {reload.generation} is serving")
        logger.info(
            "reload done in %.1f s: %d new worker(s) serving, old ones draining",
            now - reload.started_at,
            len(ready),
        )
        self._reload = None

    # ------------------------------------------------------------------------ signals
    def _begin_stop(self, why: str) -> None:
        if self._stopping:
            self._sigkill_all(f"{why} again: killing %d worker(s) now")
            return
        self._stopping = True
        self._reload = None
        self._stop_deadline = time.monotonic() + self.config.graceful_timeout_s + KILL_MARGIN_S
        logger.info(
            "%s: graceful stop; workers finish their requests (up to %g s)",
            why,
            self.config.graceful_timeout_s,
        )
        for worker in self.workers.values():
            worker.retiring = True
            self._signal(worker, signal.SIGTERM)

    def handle_sigterm(self) -> None:
        """Graceful stop (a second TERM/INT/QUIT kills the workers at once)."""
        self._begin_stop("SIGTERM")

    def handle_sigint(self) -> None:
        """Graceful stop, as SIGTERM (Ctrl-C)."""
        self._begin_stop("SIGINT")

    def handle_sigquit(self) -> None:
        """Graceful stop, as php-fpm's SIGQUIT."""
        self._begin_stop("SIGQUIT")

    def handle_sighup(self) -> None:
        """Graceful reload: a new generation on the same sockets, then the old one drains."""
        self._begin_reload("SIGHUP")

    def handle_sigusr2(self) -> None:
        """Graceful reload, as SIGHUP (php-fpm's name for it)."""
        self._begin_reload("SIGUSR2")

    def _begin_reload(self, why: str) -> None:
        if self._stopping:
            return
        if self._respawn_stopped:
            logger.info("%s: respawning starts again after the crash loop", why)
            self._respawn_stopped = False
            self._crashes.clear()
            self._spawn_not_before = 0.0
        serving = [w for w in self.workers.values() if not w.retiring]
        if self.config.pm == "static":
            target = self.target
        elif self.config.pm == "dynamic":
            target = min(max(len(serving), self.config.pm_start_servers), self.target)
        else:
            target = min(len(serving), self.target)
        self.generation += 1
        self._reload = _Reload(self.generation, target)
        logger.info(
            "%s: reloading: starting %d worker(s) of generation %d with fresh code; the %d "
            "current one(s) drain once they serve",
            why,
            target,
            self.generation,
            len(serving),
        )
        self._progress_reload(time.monotonic())

    def handle_sigttin(self) -> None:
        """One worker more (static), or one more allowed (dynamic, ondemand)."""
        if self.target + 1 > self.scoreboard.slots // SLOTS_PER_WORKER:
            logger.warning("SIGTTIN: already at the most workers this supervisor can hold")
            return
        self.target += 1
        logger.info("SIGTTIN: %s now %d", self._target_name(), self.target)

    def handle_sigttou(self) -> None:
        """One worker less (never below one)."""
        if self.target <= 1:
            logger.info("SIGTTOU: already at 1 worker")
            return
        self.target -= 1
        logger.info("SIGTTOU: %s now %d", self._target_name(), self.target)
        if self.config.pm != "static":
            current = self._current()
            if len(current) > self.target:
                idle = self._idle(current) or current
                self._retire(idle[-1], time.monotonic(), "SIGTTOU")

    def _target_name(self) -> str:
        return "workers" if self.config.pm == "static" else "pm_max_children"

    def handle_sigusr1(self) -> None:
        """Reopen log files here and in every worker (logrotate's postrotate)."""
        count = reopen_log_files()
        logger.info("SIGUSR1: reopened %d log file(s); telling the workers", count)
        for worker in self.workers.values():
            self._signal(worker, signal.SIGUSR1)

    def handle_sigchld(self) -> None:
        """A worker exited: the rounds right after this reap it."""


# ------------------------------------------------------------------------------ worker side
def _worker_main(
    config: Config,
    load_app: Callable[[], Application],
    sockets: list[socket.socket],
    board: Scoreboard,
    slot: int,
) -> int:
    """Load the app and serve until told to stop; return the worker's exit status."""
    board.heartbeat(slot, time.monotonic())
    try:
        app = load_app()
    except Exception:
        logger.exception("worker %d: cannot load the application", os.getpid())
        return EXIT_APP_LOAD_FAILED
    board.heartbeat(slot, time.monotonic())
    return _compat.run_with_loop(
        _serve_worker(config, app, sockets, slot, board), loop_factory(config.loop)
    )


async def _serve_worker(
    config: Config,
    app: Application,
    sockets: list[socket.socket],
    slot: int,
    board: Scoreboard,
) -> int:
    """runner.serve's life cycle, plus what a supervised worker owes its parent.

    Differences from :func:`fcgi_async.runner.serve`: the heartbeat, the scoreboard reports,
    the ``max_requests`` quota, SIGUSR1, and a drain that stops listening first (so the
    backlog goes to the siblings) and lets just-accepted connections send their request.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handle_signals(loop, stop)  # the loop's close removes them
    server = Server(config, app, sockets, wrap=install_features)
    try:
        await server.start()
    except Exception:
        logger.exception("worker %d: startup failed", os.getpid())
        return EXIT_STARTUP_FAILED
    quota = 0
    if config.max_requests:
        quota = config.max_requests + random.randint(0, config.max_requests_jitter)

    def on_change(state: ServerState) -> None:
        board.report(slot, state.active_requests, state.total_requests, time.monotonic())
        if quota and state.total_requests >= quota and not stop.is_set():
            logger.info(
                "worker %d served %d requests (--max-requests): recycling", os.getpid(), quota
            )
            stop.set()

    def on_recycle(reason: str) -> None:
        # Application code is stuck past --request-timeout: drain like after max_requests.
        if not stop.is_set():
            logger.warning("worker %d: %s: recycling", os.getpid(), reason)
            stop.set()

    state = server.state
    state.on_change = on_change
    state.on_recycle = on_recycle
    state.scoreboard_slot = (board, slot)  # the status page adds up every worker's slot
    board.report(slot, state.active_requests, state.total_requests, time.monotonic())
    board.set_state(slot, WorkerState.IDLE if not state.active_requests else WorkerState.BUSY)
    beat = loop.create_task(_heartbeat(board, slot, os.getppid(), stop))
    try:
        await stop.wait()
        board.set_state(slot, WorkerState.DRAINING)
        logger.info(
            "worker %d: draining after %d request(s), %d running",
            os.getpid(),
            state.total_requests,
            state.active_requests,
        )
        await server.stop_listening()
        await _first_request_grace(state)
    finally:
        await server.shutdown()
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
    return EXIT_OK


async def _heartbeat(board: Scoreboard, slot: int, parent: int, stop: asyncio.Event) -> None:
    """Bump the heartbeat every HEARTBEAT_INTERVAL_S; drain if the supervisor vanished."""
    while True:
        board.heartbeat(slot, time.monotonic())
        if os.getppid() != parent and not stop.is_set():
            # Killed with SIGKILL, nobody will stop or replace us: do not serve on as an orphan.
            logger.warning("worker %d: supervisor %d is gone; stopping", os.getpid(), parent)
            stop.set()
        await asyncio.sleep(HEARTBEAT_INTERVAL_S)


async def _first_request_grace(state: ServerState) -> None:
    """Give connections accepted just before the listeners closed time to send their request.

    Their request is on the way (or still in the kernel's buffer); the graceful shutdown would
    close them as idle, and the web server would see a reset. First, let accepts that are under
    way reach ``connection_made`` (asyncio finishes them in tasks); then wait, up to
    FIRST_REQUEST_GRACE_S, until no open connection has been quiet for less than that. Longer
    quiet ones are keep-alive connections between requests, whose closing web servers handle.
    """
    loop = state.loop
    deadline = loop.time() + FIRST_REQUEST_GRACE_S
    await asyncio.sleep(ACCEPT_SETTLE_S)
    while (now := loop.time()) < deadline:
        fresh = any(
            not p.closed
            and not p.requests
            and p.idle_since is not None
            and now - p.idle_since < FIRST_REQUEST_GRACE_S
            for p in state.connections
        )
        if not fresh:
            return
        await asyncio.sleep(GRACE_POLL_S)


__all__ = [
    "EXIT_APP_LOAD_FAILED",
    "EXIT_OK",
    "EXIT_STARTUP_FAILED",
    "EXIT_UNEXPECTED",
    "Supervisor",
    "Worker",
    "bind_listeners",
    "reopen_log_files",
]
