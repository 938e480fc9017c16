"""Request timeouts and the slow log (php-fpm's request_terminate_timeout and slowlog).

Theory of operation. Nothing is armed per request: when ``--request-timeout`` or
``--slowlog-timeout`` is set, :class:`RequestWatch` stamps each request's start (one
``loop.time()``) and keeps it in a table until the request's task ends; the server's one-second
ticker calls :meth:`RequestWatch.check`, which walks that table. With both settings off the
watch does not exist and a request pays one ``is None`` test. Timeouts therefore fire up to one
tick late (a 1 s timeout ends a request after 1 to 2 s).

* Slow log: a request running longer than ``slowlog_timeout_s`` gets one entry (a header line
  with time, pid, request id, peer, method, URI and SCRIPT_FILENAME, then the Python stack of
  the code serving it): the thread's stack when the request's code runs in a thread (the WSGI
  adapter sets :attr:`fcgi_async.types.Request.thread_ident`), else the task's stack, followed
  down the ``cr_await`` chain to the innermost coroutine. Entries go to the ``slowlog`` file
  (appended with one ``write`` each, so several workers can share it and log rotation needs no
  reopen), or to the error log when no file is set.
* Request timeout: a request running longer than ``request_timeout_s`` is ended
  (:meth:`fcgi_async.server.connection.RequestHandle.time_out`: a 504 if nothing was sent,
  else a visibly broken connection) and its application told (disconnect, task cancelled).
  Code running in a thread cannot be interrupted: its writes fail from then on, and if it is
  still running :func:`grace_s` later it is reported with its stack and the process asks to be
  recycled (:meth:`fcgi_async.server.server.ServerState.request_recycle`).

Never SIGALRM (STYLE.md "Avoid 5"): signals reach only the main thread and break under threads.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import time
import traceback
from types import FrameType
from typing import TYPE_CHECKING, Final

from ..cgi import describe_request, printable

if TYPE_CHECKING:
    from .connection import RequestHandle
    from .state import ServerState

logger = logging.getLogger("fcgi_async.server")
#: Where slow-log entries go when no ``slowlog`` file is configured.
slowlog_logger = logging.getLogger("fcgi_async.slowlog")

#: The longest a request's code may keep running after its timeout ended the request before
#: it is reported as stuck and the process recycled. A WSGI thread whose writes now fail stops
#: at its next write; one still running after this long is stuck in code that never writes
#: (a loop, a blocking call without a timeout). Shorter timeouts get a grace as long as
#: themselves (see :func:`grace_s`).
MAX_TIMEOUT_GRACE_S: Final = 10.0

#: Steps followed down a coroutine's ``cr_await`` chain at most (a guard against cycles).
MAX_AWAIT_DEPTH: Final = 256

# Per-request flags, kept only for requests that have one.
_SLOW_LOGGED: Final = 1
_TIMED_OUT: Final = 2
_REPORTED: Final = 4


def grace_s(request_timeout_s: float) -> float:
    """How long code may outlive its request timeout before it is reported as stuck.

    As long as the timeout itself, at most :data:`MAX_TIMEOUT_GRACE_S`.
    """
    return min(request_timeout_s, MAX_TIMEOUT_GRACE_S)


class RequestWatch:
    """The running requests of one server, checked against the timeouts once per tick.

    Args:
        state: the server's shared state (its config holds the timeouts and the slow log path).

    Raises:
        OSError: the slow log file cannot be opened for appending (checked at start, so a
            wrong path fails the start-up instead of the first slow request).
    """

    def __init__(self, state: ServerState) -> None:
        config = state.config
        self.state = state
        self.request_timeout_s = float(config.request_timeout_s)
        self.slowlog_timeout_s = float(config.slowlog_timeout_s)
        self.slowlog_path = config.slowlog
        self.grace_s = grace_s(self.request_timeout_s)
        #: Running requests by task; an entry leaves when its task ends.
        self.running: dict[asyncio.Task[None], RequestHandle] = {}
        self._flags: dict[asyncio.Task[None], int] = {}
        if self.slowlog_path is not None:
            os.close(_open_append(self.slowlog_path))

    def add(self, handle: RequestHandle, task: asyncio.Task[None]) -> None:
        """Watch a request whose task just started; stamps ``handle.started_at``."""
        handle.started_at = self.state.loop.time()
        self.running[task] = handle
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        del self.running[task]
        if self._flags:
            self._flags.pop(task, None)

    def check(self, now: float) -> None:
        """Write slow-log entries, end requests past their timeout, report stuck code.

        Called by the server's ticker with the loop time.
        """
        if not self.running:
            return
        slow = self.slowlog_timeout_s
        limit = self.request_timeout_s
        flags_of = self._flags
        for task, handle in list(self.running.items()):
            if task.done():
                continue  # ended since the last tick; its done callback forgets it
            age = now - handle.started_at
            flags = flags_of.get(task, 0)
            if slow and age >= slow and not flags & _SLOW_LOGGED:
                flags_of[task] = flags = flags | _SLOW_LOGGED
                self._slow(handle, task, age)
            if not limit or age < limit:
                continue
            if not flags & _TIMED_OUT:
                flags_of[task] = flags | _TIMED_OUT
                outcome = handle.time_out()
                logger.warning(
                    "request %d from %s (%s) ran %.1f s, over --request-timeout %g: %s",
                    handle.request_id,
                    handle.peer,
                    _describe(handle),
                    age,
                    limit,
                    outcome,
                )
            elif not flags & _REPORTED and age >= limit + self.grace_s and not task.done():
                flags_of[task] = flags | _REPORTED
                self._stuck(handle, task, age)

    def _slow(self, handle: RequestHandle, task: asyncio.Task[None], age: float) -> None:
        """Write one slow-log entry and count the slow request."""
        state = self.state
        state.slow_requests += 1
        if state.on_change is not None:
            state.on_change(state)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
        params = handle.params
        header = (
            f"[{stamp}] pid {os.getpid()} request {handle.request_id} from {handle.peer}"
            f" running {age:.1f} s: {_describe(handle)}"
        )
        script = params.get(b"SCRIPT_FILENAME")
        if script:
            header += f" script_filename={printable(script)}"
        lines = stack_lines(handle, task)
        if self.slowlog_path is None:
            slowlog_logger.warning("%s\n%s", header, "".join(lines).rstrip("\n"))
            return
        entry = "".join([header, "\n", *lines, "\n"]).encode("utf-8", "backslashreplace")
        try:
            fd = _open_append(self.slowlog_path)
            try:
                os.write(fd, entry)  # one write: entries of several workers do not interleave
            finally:
                os.close(fd)
        except OSError as exc:
            logger.error("cannot write the slow log %s: %s", self.slowlog_path, exc)

    def _stuck(self, handle: RequestHandle, task: asyncio.Task[None], age: float) -> None:
        """Report code still running past timeout + grace, and ask for a recycle."""
        where = "its thread" if handle.thread_ident is not None else "its task"
        logger.error(
            "request %d from %s (%s) still running %.1f s after it started, past "
            "--request-timeout %g and %g s of grace: %s ignores it\n%s",
            handle.request_id,
            handle.peer,
            _describe(handle),
            age,
            self.request_timeout_s,
            self.grace_s,
            where,
            "".join(stack_lines(handle, task)).rstrip("\n"),
        )
        self.state.request_recycle(
            f"request {handle.request_id} ({_describe(handle)}) is stuck past --request-timeout"
        )


def stack_lines(handle: RequestHandle, task: asyncio.Task[None]) -> list[str]:
    """The formatted stack (most recent call last) of the code serving a request.

    The thread's stack while ``handle.thread_ident`` names a live thread, else the task's.
    """
    ident = handle.thread_ident
    if ident is not None:
        frame = sys._current_frames().get(ident)
        if frame is not None:
            return [f"Thread {ident} (most recent call last):\n", *traceback.format_stack(frame)]
    frames = coroutine_frames(task.get_coro())
    if not frames:
        return ["(the task has no frames left)\n"]
    summary = traceback.StackSummary.extract((f, f.f_lineno) for f in frames)
    return ["Task (most recent call last):\n", *summary.format()]


def coroutine_frames(coro: object) -> list[FrameType]:
    """The frames of a suspended coroutine and of everything it awaits, outermost first.

    A task's own ``get_stack()`` shows only its outermost coroutine; the code that is slow is
    at the end of the ``cr_await`` chain (through generators, async generators and awaited
    tasks too).
    """
    frames: list[FrameType] = []
    obj: object = coro
    for _ in range(MAX_AWAIT_DEPTH):
        if isinstance(obj, asyncio.Task):
            obj = obj.get_coro()
        frame = (
            getattr(obj, "cr_frame", None)
            or getattr(obj, "gi_frame", None)
            or getattr(obj, "ag_frame", None)
        )
        if not isinstance(frame, FrameType):
            break
        frames.append(frame)
        obj = (
            getattr(obj, "cr_await", None)
            or getattr(obj, "gi_yieldfrom", None)
            or getattr(obj, "ag_await", None)
        )
        if obj is not None and type(obj).__name__ == "FutureIter":
            # ``await future`` on C futures leaves an iterator that refers to its future only:
            # the way into a task awaited by the request's task.
            obj = next((r for r in gc.get_referents(obj) if isinstance(r, asyncio.Future)), None)
    return frames


def _open_append(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _describe(handle: RequestHandle) -> str:
    """``METHOD URI`` of a request, escaped like every log line's request data."""
    return describe_request(handle.params)
