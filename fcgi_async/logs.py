"""The access log, the log files, and what SIGUSR1 reopens.

Access log theory of operation: with ``access_log`` set,
:func:`fcgi_async.features.install_features` (the Server's ``wrap``) makes the server build
each request's handle as a :class:`LoggedRequestHandle` and puts :class:`AccessLogApp` in
front of the application. The handle reads the CGI header block of the *first* STDOUT chunk
once (the ``Status:`` line, or ``Location:`` for CGI's implicit 302; else 200) and counts the
bytes after it; the line is written when the request's task ends, so a 500 the server sends
for an application that failed is logged as 500. Without ``access_log`` none of this exists:
plain handles, no wrapper, no cost per request.

If the first chunk does not hold the whole header block (an application that sends its
headers in pieces), the status is read from what it holds and every STDOUT byte counts as body.

The format codes and their compiler live in :mod:`fcgi_async.accessformat` (the
configuration checks a format without importing the server).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TYPE_CHECKING, TextIO

from .accessformat import compile_access_format
from .protocol import RequestReceived
from .server.connection import FastCGIProtocol, RequestHandle
from .types import Application, Request

if TYPE_CHECKING:
    from .server.state import ServerState

#: Logger of the access log lines (the message is the whole line).
ACCESS_LOGGER = "fcgi_async.access"


class LoggedRequestHandle(RequestHandle):
    """A :class:`RequestHandle` that notes what the access log needs (only built when on)."""

    __slots__ = ("_head_len", "_sent", "_t0", "log_started", "log_status", "pool_name")

    def __init__(self, proto: FastCGIProtocol, event: RequestReceived) -> None:
        super().__init__(proto, event)
        #: Wall-clock time the request arrived.
        self.log_started = time.time()
        self._t0 = time.perf_counter()
        #: The status read from the first STDOUT chunk; None until one was sent.
        self.log_status: int | None = None
        self._head_len = 0
        self._sent = 0
        self.pool_name: str = proto.state.config.pool_name

    def _sniff(self, data: bytes) -> None:
        """Read the status from the first chunk's CGI header block; note the block's size."""
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            self._head_len = end + 4
        else:
            end = data.find(b"\n\n")
            self._head_len = end + 2 if end >= 0 else 0
        head = data[: end if end >= 0 else len(data)]
        status = 200
        for line in head.split(b"\n"):
            name = line[:9].lower()
            if name.startswith(b"status:"):
                try:
                    status = int(line[7:].split(None, 1)[0])
                except (ValueError, IndexError):
                    status = 200
                break
            if name.startswith(b"location:"):
                status = 302  # CGI/1.1: a Location without Status is a redirect
        self.log_status = status

    async def send_stdout(self, data: bytes) -> None:
        """As :meth:`RequestHandle.send_stdout`, noting status and size."""
        if data and self.log_status is None:
            self._sniff(data)
        await super().send_stdout(data)
        self._sent += len(data)

    async def end(self, stdout: bytes = b"", app_status: int = 0) -> None:
        """As :meth:`RequestHandle.end`, noting status and size."""
        if stdout and self.log_status is None:
            self._sniff(stdout)
        await super().end(stdout, app_status)
        self._sent += len(stdout)

    def time_out(self) -> str:
        """As :meth:`RequestHandle.time_out`; a 504 it sends is the status to log."""
        if self.log_status is None and not (
            self.done or self.disconnected or self._proto.closed or self.response_started
        ):
            self.log_status = 504
        return super().time_out()

    @property
    def body_bytes(self) -> int:
        """Response body bytes sent (STDOUT bytes after the header block)."""
        return max(self._sent - self._head_len, 0)

    def final_status(self) -> int:
        """The status to log: the app's, else 499 (aborted first) or 500 (server's answer)."""
        if self.log_status is not None:
            return self.log_status
        return 499 if self.disconnected else 500

    def duration_s(self) -> float:
        """Seconds since the request arrived."""
        return time.perf_counter() - self._t0


class AccessLogApp:
    """In front of the application: writes one access log line when each request's task ends.

    Args:
        app: the application (or the status endpoints in front of it).
        state: the server's state, whose handles are :class:`LoggedRequestHandle`.
    """

    def __init__(self, app: Application, state: ServerState) -> None:
        self.app = app
        self.pieces = compile_access_format(state.config.access_log_format)
        self.logger = logging.getLogger(ACCESS_LOGGER)

    def format(self, handle: LoggedRequestHandle) -> str:
        """The access log line of a finished request."""
        return "".join(p if isinstance(p, str) else p(handle) for p in self.pieces)

    def _write(self, handle: LoggedRequestHandle) -> None:
        try:
            self.logger.info("%s", self.format(handle))
        except Exception:
            logging.getLogger("fcgi_async.server").exception("cannot write the access log")

    async def __call__(self, request: Request) -> None:
        """Serve the request; its line is written once its task is done (500s included)."""
        task = asyncio.current_task()
        if isinstance(request, LoggedRequestHandle) and task is not None:
            task.add_done_callback(lambda _task: self._write(request))
        await self.app(request)

    async def startup(self) -> None:
        """The application's startup."""
        await self.app.startup()

    async def shutdown(self) -> None:
        """The application's shutdown."""
        await self.app.shutdown()


# ------------------------------------------------------------------------- log files
_LINE_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
#: Marks the handlers configure_logging installed (a second call replaces them).
_MARK = "_fcgi_async_handler"


def _handler(target: str, default_stream: TextIO) -> logging.Handler:
    if target == "-":
        return logging.StreamHandler(default_stream)
    return logging.FileHandler(target, encoding="utf-8")


def configure_logging(
    level: str, error_log: str | None = None, access_log: str | None = None
) -> None:
    """The CLI's logging: the server's log to ``error_log`` (stderr by default), access
    lines alone to ``access_log`` ("-": stdout).

    Like :func:`logging.basicConfig`, the default stderr handler is only added to a root
    logger without handlers; a given ``error_log`` always is. Handlers from an earlier call
    are replaced. The access logger logs at INFO whatever ``level`` is and does not propagate,
    so its lines never reach the error log (or the application's own root handlers).

    Raises:
        OSError: a log file cannot be opened.
    """
    root = logging.getLogger()
    access = logging.getLogger(ACCESS_LOGGER)
    for logger in (root, access):
        for old in [h for h in logger.handlers if getattr(h, _MARK, False)]:
            logger.removeHandler(old)
            old.close()
    if error_log is not None or not root.handlers:
        handler = _handler(error_log or "-", sys.stderr)
        handler.setFormatter(logging.Formatter(_LINE_FORMAT))
        setattr(handler, _MARK, True)
        root.addHandler(handler)
        root.setLevel(level.upper())
    if access_log is not None:
        access_handler = _handler(access_log, sys.stdout)
        access_handler.setFormatter(logging.Formatter("%(message)s"))
        setattr(access_handler, _MARK, True)
        access.addHandler(access_handler)
        access.setLevel(logging.INFO)
        access.propagate = False


def log_file_handlers() -> list[logging.FileHandler]:
    """Every file handler of the root logger and of the access logger (what SIGUSR1 reopens)."""
    handlers: list[logging.FileHandler] = []
    for logger in (logging.getLogger(), logging.getLogger(ACCESS_LOGGER)):
        handlers.extend(h for h in logger.handlers if isinstance(h, logging.FileHandler))
    return handlers


def reopen_log_files() -> int:
    """Reopen the error and access log files (SIGUSR1, after logrotate moved them).

    Returns:
        How many handlers were reopened.
    """
    count = 0
    for handler in log_file_handlers():
        handler.acquire()
        try:
            old = handler.setStream(handler._open())
        finally:
            handler.release()
        if old is not None:
            old.close()
        count += 1
    return count


__all__ = [
    "ACCESS_LOGGER",
    "AccessLogApp",
    "LoggedRequestHandle",
    "compile_access_format",
    "configure_logging",
    "log_file_handlers",
    "reopen_log_files",
]
