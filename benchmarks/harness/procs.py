"""Processes the harness starts: each in its own process group, always stopped, never waited on
without a deadline.

Every server is started with ``start_new_session=True`` so that a stop reaches the whole tree
(php-fpm's children, a supervisor's workers) and so that the terminal's Ctrl-C reaches only the
harness, which then stops them in order from its ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

#: How long a stopped server gets between SIGTERM and SIGKILL.
STOP_GRACE_S = 5.0
#: How long a server may take to accept connections after it was started.
READY_TIMEOUT_S = 20.0


class StartError(RuntimeError):
    """A process did not come up; the message says why (with the tail of its log)."""


class Proc:
    """A started process (and its process group) with its log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self._log_file = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after :data:`STOP_GRACE_S`; idempotent."""
        if self.popen.returncode is None:
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(STOP_GRACE_S)
        # Stragglers of the group (workers whose parent already exited) go too.
        _signal_group(self.pid, signal.SIGKILL)
        if not self._log_file.closed:
            self._log_file.close()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class ProcessSet:
    """All processes of a run; :meth:`stop_all` stops them newest first."""

    def __init__(self) -> None:
        self._procs: list[Proc] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Proc:
        try:
            proc = Proc(name, argv, log, cwd=cwd, env=env)
        except OSError as exc:
            raise StartError(f"{name}: cannot start {argv[0]}: {exc}") from exc
        self._procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        while self._procs:
            self._procs.pop().stop()


def wait_connectable(
    address: str | tuple[str, int], proc: Proc, timeout_s: float = READY_TIMEOUT_S
) -> None:
    """Poll-connect until ``address`` (a unix path or (host, port)) accepts, with a deadline.

    Raises:
        StartError: the process exited, or the deadline passed.
    """
    deadline = time.monotonic() + timeout_s
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    while True:
        if not proc.alive():
            raise StartError(
                f"{proc.name} exited with status {proc.popen.returncode}:\n{proc.log_tail()}"
            )
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            try:
                sock.connect(address)
                return
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise StartError(
                f"{proc.name} did not accept connections on {address} within {timeout_s:.0f} s:\n"
                f"{proc.log_tail()}"
            )
        time.sleep(0.05)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    found: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return found
    for task in tasks:
        with contextlib.suppress(OSError):
            found.extend(int(c) for c in (task / "children").read_text().split())
    return sorted(found)


def rss_kib(pid: int) -> int | None:
    """Resident set size of ``pid`` in KiB (VmRSS), or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def raise_nofile_limit() -> None:
    """Let this process and its children open as many files as the hard limit allows."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not Linux
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
