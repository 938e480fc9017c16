"""``--pid-file``: our pid in a file for init scripts, logrotate and monitoring.

Written by the process that owns the listening sockets (the supervisor when there is one, the
server itself otherwise) once they are bound, and removed at a clean exit. A file naming a
live process means another instance runs (or a pid was reused): we refuse to start. A file
naming a dead process is stale (a crash, a reboot) and is replaced.
"""

from __future__ import annotations

import contextlib
import os


class PidFileError(Exception):
    """The pid file names a running process, or cannot be read or written."""


def _read_pid(path: str) -> int | None:
    """The pid in ``path``; None when there is no file or no pid in it (stale)."""
    try:
        with open(path) as f:
            text = f.read(64).strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PidFileError(f"cannot read pid file {path}: {exc.strerror or exc}") from exc
    return int(text) if text.isdigit() and int(text) > 0 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


class PidFile:
    """One pid file: :meth:`check` early, :meth:`write` after binding, :meth:`remove` at exit.

    Args:
        path: the file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._written_pid: int | None = None

    def check(self) -> None:
        """Refuse when the file names a live process other than this one.

        Raises:
            PidFileError: another process named by the file is running, or the file is
                unreadable.
        """
        pid = _read_pid(self.path)
        if pid is not None and pid != os.getpid() and _alive(pid):
            raise PidFileError(
                f"pid file {self.path} names process {pid}, which is running: "
                "is fcgi-async already running? (remove the file if it is not ours)"
            )

    def write(self) -> None:
        """Write this process's pid (atomically: a reader never sees a half-written file).

        Raises:
            PidFileError: the file names a live process, or cannot be written.
        """
        self.check()
        pid = os.getpid()
        tmp = f"{self.path}.{pid}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(f"{pid}\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise PidFileError(f"cannot write pid file {self.path}: {exc.strerror or exc}") from exc
        self._written_pid = pid

    def remove(self) -> None:
        """Remove the file if we wrote it and it still holds our pid (no error otherwise).

        A forked worker that inherited this object removes nothing: the pid is not its own.
        """
        if self._written_pid is None or self._written_pid != os.getpid():
            return
        with contextlib.suppress(OSError, PidFileError):
            if _read_pid(self.path) == self._written_pid:
                os.unlink(self.path)
        self._written_pid = None
