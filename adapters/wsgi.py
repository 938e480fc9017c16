"""The WSGI adapter (PEP 3333): runs a WSGI application behind the server's request seam.

Theory of operation. Each request makes exactly one hop into a worker thread of the adapter's
pool (:class:`_WorkerPool`: at most ``threads`` threads, so the pool is the thread limit). That
hop builds the environ, calls the application and, when the application returns a list or tuple
(or a body that fills its ``Content-Length``), also iterates it and hands back the whole CGI
response: the loop then sends it with a single ``await request.end(...)``. Only bodies that
truly stream (generators, file wrappers, ``write()``) hop back to the event loop, once per chunk
(:func:`_from_thread`); each of those blocks the application thread on the connection's flow
control, so nothing is ever buffered beyond one chunk. ``wsgi.input`` pulls the request body the
same way, as much as a read needs per trip.

Why a pool of our own rather than anyio or :mod:`concurrent.futures`: the thread hop is most of
the adapter's cost, and this pool (a ``SimpleQueue``, one future, one ``call_soon_threadsafe``)
costs about half of ``loop.run_in_executor`` and a fraction of ``anyio.to_thread.run_sync``;
going back to the loop, :class:`_Hop` (a task and a lock) costs about half of
``asyncio.run_coroutine_threadsafe(...).result()``. The measurements, and what was tried and
dropped, are in ``benchmarks/results/wsgi-thread-hop.md`` (figures go stale in docstrings).

Failure rules (docs/architecture.md): an application that fails before any response byte left gets a
500 of our own (nginx turns a missing header block into a 502); one that fails after the
response started gets :meth:`Request.fail`, so the client sees a broken response rather than a
clean short one. A gone client is not an application error: it is logged at debug level.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from contextvars import copy_context
from queue import SimpleQueue
from threading import get_ident
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeAlias, TypeVar, cast

from fcgi_async.cgi import (
    COPY_HEAD_BELOW,
    INTERNAL_ERROR_RESPONSE,
    STRIPPED_PARAMS,
    describe_request,
    has_forbidden_chars,
    is_https,
    parse_length,
    split_path,
)
from fcgi_async.protocol import Role
from fcgi_async.types import ClientDisconnected, Request

if TYPE_CHECKING:
    # typeshed's spelling of wsgiref.types (3.11+) that also covers 3.10
    from _typeshed.wsgi import WSGIApplication

__all__ = ["FileWrapper", "Readable", "WSGIAdapter"]

#: Read size for :class:`FileWrapper` over a real file, and the unit in which streamed files
#: go to the loop: large enough that the per-chunk thread hop is noise next to the copy.
FILE_BLOCK_SIZE: Final = 64 * 1024

#: A list/tuple body is joined with the header block into the single final write up to this
#: size; a bigger one goes out buffer by buffer (from the loop, no thread hops) so we never
#: hold a second copy of a big response.
MAX_JOINED_BODY: Final = 1024 * 1024


#: The most request body one trip from the worker thread to the loop gathers for ``wsgi.input``
#: (only reads that ask for at least this much get it all at once).
MAX_INPUT_PULL: Final = 1024 * 1024

#: ``wsgi.errors`` text without a newline is held at most this long before it is emitted, so a
#: chatty application without newlines cannot grow our memory.
MAX_ERRORS_LINE: Final = 8 * 1024


#: The ``exc_info`` argument of ``start_response`` (what ``sys.exc_info()`` returns).
ExcInfo: TypeAlias = (
    tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
)

_ROLE_NAMES: Final = {role: role.name for role in Role}
# Params that never reach the application: httpoxy, and the HTTP_ copies of the two headers
# CGI already carries as CONTENT_TYPE/CONTENT_LENGTH (RFC 3875 §4.1.18; wsgiref.validate
# rejects them).
_DROPPED: Final = (
    *(name.decode("latin-1") for name in sorted(STRIPPED_PARAMS)),
    "HTTP_CONTENT_LENGTH",
)
#: Decoded param names are cached up to this many (names come from request headers, so the
#: cache must be bounded); beyond it, new names are decoded on every request.
_MAX_CACHED_NAMES: Final = 512

_T = TypeVar("_T")
#: A job for a worker thread: ``run(arg)``, its future, that future's loop and the pool's
#: delivery callback (run on the loop).
_Job: TypeAlias = tuple[
    Callable[[Callable[[], Any]], Any],
    Callable[[], Any],
    "asyncio.Future[Any]",
    asyncio.AbstractEventLoop,
    Callable[["asyncio.Future[Any]", bool, Any], None],
]


class _WorkerState(threading.local):
    #: The event loop of the request this worker thread runs; None in other threads.
    loop: asyncio.AbstractEventLoop | None = None


_worker = _WorkerState()


def _from_thread(func: Callable[..., Coroutine[Any, Any, _T]], /, *args: Any) -> _T:
    """In a worker thread: run ``func(*args)`` on the request's event loop and wait for it.

    Blocks the application thread until the coroutine is done, so it waits on the
    connection's flow control like the coroutine does.

    Raises:
        RuntimeError: not called from a worker thread (but from a thread the application
            started), or the loop is closed.
        Exception: what the coroutine raised (:class:`ClientDisconnected`, most often).
    """
    loop = _worker.loop
    if loop is None:
        raise RuntimeError("WSGI I/O is only possible from the thread running the request")
    hop = _Hop(loop, func(*args))
    try:
        loop.call_soon_threadsafe(hop.start)
    except RuntimeError:  # the loop is closed
        hop.coro.close()
        raise
    hop.done.acquire()
    if hop.error is not None:
        raise hop.error
    return cast(_T, hop.result)


class _Hop:
    """One trip of a worker thread to the loop, lighter than ``run_coroutine_threadsafe``:
    the thread waits on a held lock that the loop releases, no ``concurrent.futures`` future
    (see the module docstring for the numbers)."""

    __slots__ = ("coro", "done", "error", "loop", "result")

    def __init__(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> None:
        self.loop = loop
        self.coro = coro
        #: Held until the coroutine is done.
        self.done = threading.Lock()
        self.done.acquire()
        self.result: Any = None
        self.error: BaseException | None = None

    def start(self) -> None:
        """On the loop: run the coroutine as a task."""
        self.loop.create_task(self.coro).add_done_callback(self._finish)

    def _finish(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():  # the loop is shutting down and cancelled every task
            self.error = ClientDisconnected("the server cancelled the request")
        elif (error := task.exception()) is not None:
            self.error = error
        else:
            self.result = task.result()
        self.done.release()


def _work(jobs: SimpleQueue[_Job | None]) -> None:
    """A worker thread: run jobs until the ``None`` that stops it."""
    state = _worker
    get = jobs.get
    while (job := get()) is not None:
        run, arg, future, loop, deliver = job
        del job  # nothing of a finished job may outlive it (see _WorkerPool)
        state.loop = loop
        if future.cancelled():
            # The request ended while its job waited for a thread (--request-timeout, a
            # shutdown): its application code must not run for nobody.
            result, ok = None, False
        else:
            try:
                result, ok = run(arg), True
            except BaseException as exc:  # handed to the awaiting task, which re-raises it
                result, ok = exc, False
        try:
            loop.call_soon_threadsafe(deliver, future, ok, result)
        except RuntimeError:  # the loop is closed: nobody waits for the result any more
            continue
        finally:
            del run, arg, future, loop, deliver, result


def _stop_workers(jobs: SimpleQueue[_Job | None], count: int) -> None:
    for _ in range(count):
        jobs.put(None)


class _WorkerPool:
    """At most ``size`` worker threads running jobs from one queue: the thread limit.

    Concurrency is bounded by construction (a job waits in the queue until a thread is free;
    the loop never blocks). Threads start as the number of jobs in flight grows, up to
    ``size``, and stop when the pool is closed or garbage-collected (they never refer to the
    pool between jobs). They are daemon threads: application code stuck past the server's
    graceful timeout cannot keep the process from exiting.

    Why not :class:`concurrent.futures.ThreadPoolExecutor` with ``loop.run_in_executor`` (or
    ``anyio.to_thread``): see the module docstring; the per-job cost here is one
    ``SimpleQueue.put``, one future and one ``call_soon_threadsafe``.
    """

    __slots__ = ("__weakref__", "_busy", "_close", "_jobs", "_name", "_size", "_started")

    def __init__(self, size: int, name: str) -> None:
        self._jobs: SimpleQueue[_Job | None] = SimpleQueue()
        self._size = size
        self._name = name
        self._started = 0
        #: Jobs submitted and not yet delivered (only the loop thread touches it).
        self._busy = 0
        self._close = weakref.finalize(self, _stop_workers, self._jobs, size)
        _pools.add(self)

    def _forked(self) -> None:
        """In a child process: the threads did not survive the fork; start again without."""
        self._close.detach()
        self._jobs = SimpleQueue()
        self._started = self._busy = 0
        self._close = weakref.finalize(self, _stop_workers, self._jobs, self._size)

    def submit(
        self,
        loop: asyncio.AbstractEventLoop,
        run: Callable[[Callable[[], _T]], _T],
        arg: Callable[[], _T],
    ) -> asyncio.Future[_T]:
        """On the loop: have a worker thread call ``run(arg)``; its result, as a future."""
        future: asyncio.Future[_T] = loop.create_future()
        self._busy += 1
        if self._busy > self._started < self._size:
            self._started += 1
            threading.Thread(
                target=_work,
                args=(self._jobs,),
                name=f"{self._name}-{self._started}",
                daemon=True,
            ).start()
        self._jobs.put((run, arg, future, loop, self._deliver))
        return future

    def _deliver(self, future: asyncio.Future[Any], ok: bool, result: Any) -> None:
        """On the loop: a job finished."""
        self._busy -= 1
        if future.cancelled():  # the request's task was cancelled; the thread ran on
            return
        if ok:
            future.set_result(result)
        else:
            future.set_exception(result)

    def close(self) -> None:
        """Stop the threads once they are done with the jobs already queued."""
        self._close()


#: Every live pool: a pool used before a fork (an application served in the supervisor
#: before it forks its workers) would wait forever for threads the child does not have.
_pools: weakref.WeakSet[_WorkerPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        pool._forked()


# (Where there is no fork there is no register_at_fork either.)
getattr(os, "register_at_fork", lambda **_: None)(after_in_child=_after_fork_in_child)


class Readable(Protocol):
    """What :class:`FileWrapper` needs: ``read(size)``; ``close()`` and ``fileno()`` are used
    when present."""

    def read(self, size: int, /) -> bytes:
        """Return up to ``size`` bytes; ``b""`` at end of file."""
        ...


class FileWrapper:
    """``wsgi.file_wrapper``: iterate a file-like object in blocks (PEP 3333 "Optional
    Platform-Specific File Handling").

    Over a real file (one with a working ``fileno()``) blocks are at least
    :data:`FILE_BLOCK_SIZE`, whatever ``blksize`` the application suggested.

    Args:
        filelike: an object with ``read(size)``; its ``close()`` is called by :meth:`close`.
        blksize: the suggested block size.
    """

    __slots__ = ("blksize", "filelike")

    def __init__(self, filelike: Readable, blksize: int = FILE_BLOCK_SIZE) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        """Yield the file's content in blocks until ``read`` returns nothing."""
        size = self.blksize
        fileno = getattr(self.filelike, "fileno", None)
        if size < FILE_BLOCK_SIZE and fileno is not None:
            try:
                fileno()
            except (OSError, ValueError):  # io.UnsupportedOperation is both
                pass
            else:
                size = FILE_BLOCK_SIZE
        read = self.filelike.read
        while chunk := read(size):
            yield chunk

    def close(self) -> None:
        """Close the wrapped object if it can be closed (the server calls this once)."""
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


async def _pull(
    receive: Callable[[], Coroutine[Any, Any, bytes]], wanted: int
) -> tuple[list[bytes], bool]:
    """On the loop: receive body chunks until ``wanted`` bytes came; ``(chunks, ended)``."""
    chunks: list[bytes] = []
    got = 0
    while got < wanted:
        chunk = await receive()
        if not chunk:
            return chunks, True
        chunks.append(chunk)
        got += len(chunk)
    return chunks, False


class _Input:
    """``wsgi.input``: the request body, pulled from the loop as the application reads it.

    Each trip to the loop gathers as many chunks as the current read needs (at most
    :data:`MAX_INPUT_PULL` bytes), so ``read(n)`` over small STDIN records costs one thread
    hop rather than one per record, and nothing is held beyond what the application asked for
    plus one chunk. ``readline`` pulls one chunk at a time. Simulates end-of-file at
    CONTENT_LENGTH; without one, reads until the body ends (``wsgi.input_terminated``).
    Raises :class:`ClientDisconnected` if the client goes away.
    """

    __slots__ = ("_buf", "_eof", "_pos", "_queue", "_receive", "_remaining")

    def __init__(
        self, receive: Callable[[], Coroutine[Any, Any, bytes]], length: int | None
    ) -> None:
        self._receive = receive
        self._remaining = length
        self._eof = length == 0
        self._buf = b""
        self._pos = 0
        #: Chunks pulled and not read yet, last first.
        self._queue: list[bytes] = []

    def _fill(self, wanted: int) -> bool:
        """Make the next chunk current (the current one is consumed); False at end of body.

        ``wanted`` is how many more bytes the caller needs: a trip to the loop brings that
        much (bounded) at once.
        """
        queue = self._queue
        if not queue:
            if self._eof:
                return False
            remaining = self._remaining
            if wanted > MAX_INPUT_PULL:
                wanted = MAX_INPUT_PULL
            if remaining is not None and wanted > remaining:
                wanted = remaining
            chunks, ended = _from_thread(_pull, self._receive, wanted)
            if ended:
                self._eof = True
            if remaining is not None:
                for i, chunk in enumerate(chunks):
                    if len(chunk) >= remaining:
                        chunks[i] = chunk[:remaining]
                        del chunks[i + 1 :]
                        self._eof = True
                        remaining = 0
                        break
                    remaining -= len(chunk)
                self._remaining = remaining
            if not chunks:
                return False
            chunks.reverse()
            queue = self._queue = chunks
        self._buf = queue.pop()
        self._pos = 0
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        """Read ``size`` bytes (fewer only at end of body); all that is left if omitted."""
        if size is None or size < 0:
            parts = [self._buf[self._pos :]]
            while self._fill(MAX_INPUT_PULL):
                parts.append(self._buf)
            self._buf = b""
            self._pos = 0
            return b"".join(parts)
        buf, pos = self._buf, self._pos
        available = len(buf) - pos
        if available >= size:
            self._pos = pos + size
            return buf[pos : pos + size]
        parts = [buf[pos:]] if available else []
        wanted = size - available
        self._buf = b""
        self._pos = 0
        while wanted and self._fill(wanted):
            buf = self._buf
            if len(buf) <= wanted:
                parts.append(buf)
                wanted -= len(buf)
                self._buf = b""
            else:
                parts.append(buf[:wanted])
                self._pos = wanted
                wanted = 0
        return b"".join(parts)

    def readline(self, size: int | None = -1, /) -> bytes:
        """Read one line including its ``\\n``, at most ``size`` bytes if given."""
        limit = -1 if size is None else size
        if limit == 0:
            return b""
        parts: list[bytes] = []
        have = 0
        while True:
            buf, pos = self._buf, self._pos
            if pos >= len(buf):
                if not self._fill(1):
                    break
                buf, pos = self._buf, 0
            end = buf.find(b"\n", pos) + 1
            if end == 0:
                end = len(buf)
            if limit >= 0 and have + end - pos > limit:
                end = pos + limit - have
            parts.append(buf[pos:end])
            have += end - pos
            self._pos = end
            if buf[end - 1 : end] == b"\n" or have == limit:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readlines(self, hint: int | None = -1, /) -> list[bytes]:
        """Read lines until end of body, or until they total at least ``hint`` bytes."""
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        """Iterate over lines."""
        return self

    def __next__(self) -> bytes:
        """The next line; StopIteration at end of body."""
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class _Errors:
    """``wsgi.errors``: text goes to the web server as STDERR records and to the request log.

    Output is line-buffered (flushed at a newline, at :data:`MAX_ERRORS_LINE`, on ``flush()``
    and when the request ends) so one line is one log record and one STDERR write. The server
    logs what is sent on STDERR, with its request; lines that cannot be sent (the client is
    gone, a thread the application started) are logged here, to ``request.logger``.
    """

    __slots__ = ("_gone", "_pending", "_request")

    def __init__(self, request: Request) -> None:
        # Nothing else is looked up until there is something to write (most requests never
        # write to wsgi.errors).
        self._request = request
        self._pending = ""
        self._gone = False

    def log_unsent(self, text: str) -> None:
        """Log a line that did not reach the web server (``request`` names it in the record)."""
        self._request.logger.error("%s", text, extra={"request": _describe(self._request)})

    def log_unsent_bytes(self, data: bytes) -> None:
        """:meth:`log_unsent` for what :meth:`take_pending` returned (nothing if empty)."""
        if data:
            self.log_unsent(data.decode("utf-8", "backslashreplace").rstrip("\n"))

    async def send_last(self, data: bytes) -> None:
        """Send what :meth:`take_pending` returned; log it if the client is gone.

        Raises:
            ClientDisconnected: the client is gone (the line was logged).
        """
        try:
            await self._request.send_stderr(data)
        except ClientDisconnected:
            self.log_unsent_bytes(data)
            raise

    def write(self, s: str, /) -> None:
        """Write text; complete lines are emitted at once."""
        if not isinstance(s, str):
            raise TypeError(f"wsgi.errors.write() takes str, not {type(s).__name__}")
        pending = self._pending + s
        if "\n" not in s and len(pending) < MAX_ERRORS_LINE:
            self._pending = pending
            return
        text, newline, rest = pending.rpartition("\n")
        if not newline:
            text, rest = pending, ""
        self._pending = rest
        self._emit(text)

    def writelines(self, seq: Iterable[str], /) -> None:
        """Write each string of ``seq``."""
        for s in seq:
            self.write(s)

    def flush(self) -> None:
        """Emit any partial line."""
        if self._pending:
            text, self._pending = self._pending, ""
            self._emit(text)

    def _emit(self, text: str) -> None:
        if not self._gone:
            try:
                _from_thread(
                    self._request.send_stderr, (text + "\n").encode("utf-8", "backslashreplace")
                )
                return  # logged by the server with its request
            except ClientDisconnected:
                self._gone = True
            except RuntimeError:
                # Written from a thread that is not the request's (one the application
                # started) or after the loop stopped: a log record is all we can do.
                pass
        self.log_unsent(text)

    def take_pending(self) -> bytes:
        """The partial line left when the request ends, as STDERR bytes to send.

        The caller sends them (the server logs them) or, if it cannot, passes them to
        :meth:`log_unsent`. Once the client is gone the line is logged here and ``b""``
        returned.
        """
        text, self._pending = self._pending, ""
        if not text:
            return b""
        if self._gone:
            self.log_unsent(text)
            return b""
        return (text + "\n").encode("utf-8", "backslashreplace")


def _build_head(status: str, headers: list[tuple[str, str]]) -> tuple[bytes, int | None]:
    """Encode the CGI header block and find the Content-Length.

    Raises:
        ValueError: the status is malformed, or the status or a header holds CR, LF or NUL or
            is not latin-1. The message names the offending item only (headers can carry
            secrets such as cookies, so they are not all logged).
        TypeError: the status or a header name or value is not ``str``.
    """
    if type(status) is not str:
        raise TypeError(f"status must be str, not {type(status).__name__}")
    code = status[:3]
    if not (
        len(code) == 3
        and code.isascii()
        and code.isdigit()
        and code[0] != "0"
        and (len(status) == 3 or status[3] == " ")
    ):
        raise ValueError(f"malformed status {status[:100]!r}")
    lines = ["Status: ", status, "\r\n"]
    append = lines.append
    length: int | None = None
    for name, value in headers:
        if type(name) is not str or type(value) is not str:
            raise TypeError(f"header names and values must be str, not {(name, value)!r:.100}")
        append(name)
        append(": ")
        append(value)
        append("\r\n")
        if len(name) == 14 and name.lower() == "content-length":
            length = int(value) if value.isascii() and value.isdigit() else None
    append("\r\n")
    block = "".join(lines)
    # Every line ends in exactly one CRLF that we wrote; any other CR, LF or NUL came from the
    # application and would split the response. Three C-speed scans instead of a per-header
    # check on the hot path; the search for the culprit (named in the error, never its
    # value) runs only on failure.
    crlf = len(headers) + 2
    if block.count("\n") != crlf or block.count("\r") != crlf or "\0" in block:
        culprit = next(
            (n for n, v in (("Status", status), *headers) if has_forbidden_chars(n + v)), ""
        )
        raise ValueError(f"CR, LF or NUL in response status or header {culprit[:100]!r}")
    try:
        return block.encode("latin-1"), length
    except UnicodeEncodeError:
        raise ValueError("response status or header is not latin-1") from None


async def _send_both(request: Request, first: bytes, second: bytes) -> None:
    """Send two buffers in turn (one hop from the worker thread instead of two)."""
    await request.send_stdout(first)
    await request.send_stdout(second)


def _as_bytes(data: object) -> bytes:
    """``data`` as ``bytes``: bytes-like objects are copied, anything else is a TypeError.

    (``bytes(5)`` would silently make five NULs out of an application's mistake.)
    """
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"WSGI response body must be bytes, not {type(data).__name__}")


class _Call:
    """One request's WSGI state. Everything but the constructor runs in the worker thread."""

    __slots__ = (
        "_adapter",
        "_head",
        "_head_only",
        "_remaining",
        "errors",
        "request",
        "sent",
    )

    def __init__(self, adapter: WSGIAdapter, request: Request) -> None:
        self._adapter = adapter
        self.request = request
        self.errors = _Errors(request)
        self._head: bytes | None = None
        self._remaining: int | None = None
        #: The header block was committed (handed to the loop, or returned for ``end``).
        self.sent = False
        #: HEAD: the header block is sent and the body discarded (RFC 3875 §4.3.2: a script
        #: must not send one; HAProxy answers 502 to a HEAD response with a body).
        self._head_only = request.params.get(b"REQUEST_METHOD") == b"HEAD"

    # -- PEP 3333 callables -----------------------------------------------------------------
    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], object]:
        """PEP 3333 ``start_response``; returns :meth:`write`.

        Raises:
            BaseException: ``exc_info``'s exception, when headers were already sent.
            RuntimeError: called again without ``exc_info``.
            ValueError: the status or a header is malformed or holds CR, LF or NUL.
        """
        if exc_info is not None:
            try:
                if self.sent and exc_info[1] is not None:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # break the frame <-> traceback cycle
        elif self._head is not None:
            raise RuntimeError("start_response() called again without exc_info")
        try:
            self._head, self._remaining = _build_head(status, headers)
        except ValueError as exc:
            self._adapter._logger.error("refusing WSGI response: %s", exc)
            raise
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333 ``write()``: send ``data`` now, blocking on flow control.

        Raises:
            ClientDisconnected: the client is gone.
        """
        if self._head is None:
            raise RuntimeError("write() called before start_response()")
        if data:
            self._send(data if type(data) is bytes else _as_bytes(data))

    # -- the worker thread ------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        if self._head_only:
            # Nothing is written before the end (start_response may still change the
            # headers), but a client gone meanwhile stops the application as it would a GET.
            if self._head is None:
                raise RuntimeError("the application yielded a body before start_response()")
            if self.request.disconnected:
                raise ClientDisconnected("the client disconnected")
            return
        remaining = self._remaining
        if remaining is not None:
            if len(data) > remaining:
                data = data[:remaining]
            self._remaining = remaining - len(data)
        if not self.sent:
            head = self._head
            if head is None:
                raise RuntimeError("the application yielded a body before start_response()")
            self.sent = True
            if len(data) >= COPY_HEAD_BELOW:  # the head goes first rather than copy the data
                _from_thread(_send_both, self.request, head, data)
                return
            data = head + data
        elif not data:
            return
        _from_thread(self.request.send_stdout, data)

    def _finish(self, body: bytes) -> bytes:
        """The final write: the (truncated) body, preceded by the header block if unsent."""
        remaining = self._remaining
        if self._head_only:
            body = b""
        elif remaining is not None and len(body) > remaining:
            body = body[:remaining]
        if self.sent:
            return body
        head = self._head
        if head is None:
            raise RuntimeError("the application returned without calling start_response()")
        self.sent = True
        if len(body) >= COPY_HEAD_BELOW:  # the head goes first rather than copy the body
            _from_thread(self.request.send_stdout, head)
            return body
        return head + body if body else head

    def _finish_parts(self, parts: list[bytes]) -> list[bytes]:
        """:meth:`_finish` for a body too big to join: the loop sends the parts in turn."""
        if self._head_only:
            return [self._finish(b"")]
        remaining = self._remaining
        if remaining is not None:
            kept: list[bytes] = []
            for part in parts:
                if len(part) >= remaining:
                    kept.append(part[:remaining])
                    break
                kept.append(part)
                remaining -= len(part)
            parts = kept
        if not self.sent:
            head = self._head
            if head is None:
                raise RuntimeError("the application returned without calling start_response()")
            self.sent = True
            parts.insert(0, head)
        return parts

    def run(self) -> bytes | list[bytes] | None:
        """Call the application and produce what is left to send.

        Returns:
            The response's last bytes (for ``end``); a list of buffers already in memory for
            the loop to send in turn, the last with ``end``; or ``None`` if the client left.
            The result's ``close()`` is always called.
        """
        request = self.request
        # Which thread serves the request: the server's slow log shows its stack, and a
        # request timeout knows not to cancel what a thread runs (Request.thread_ident).
        request.thread_ident = get_ident()
        try:
            return self._call_app()
        finally:
            request.thread_ident = None

    def _call_app(self) -> bytes | list[bytes] | None:
        adapter = self._adapter
        result = adapter.app(adapter._environ(self.request, self.errors), self.start_response)
        try:
            if type(result) is list or type(result) is tuple:
                return self._sequence(result)
            return self._stream(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def _sequence(self, result: Sequence[bytes]) -> bytes | list[bytes]:
        # No application code runs while iterating a list, so nothing gains from streaming it
        # from here: it all goes back to the loop in this one hop.
        count = len(result)
        if count == 1:
            body = result[0]
            if type(body) is not bytes:
                body = _as_bytes(body)
            if len(body) >= COPY_HEAD_BELOW:  # sent after the head, by the loop: no copy
                return self._finish_parts([body])
            return self._finish(body)
        if count == 0:
            return self._finish(b"")
        if sum(map(len, result)) <= MAX_JOINED_BODY:
            return self._finish(b"".join(result))
        return self._finish_parts([c if type(c) is bytes else _as_bytes(c) for c in result if c])

    def _stream(self, result: Iterable[bytes]) -> bytes | None:
        try:
            for chunk in result:
                if not chunk:
                    continue
                if type(chunk) is not bytes:
                    chunk = _as_bytes(chunk)
                if self._head_only:
                    # The first chunk shows start_response was called (an application may call
                    # it lazily); the rest of the body is not produced for nobody (and an
                    # endless one would never end). close() is called as always.
                    return self._finish(b"")
                remaining = self._remaining
                if remaining is not None and len(chunk) >= remaining:
                    # The body is complete (PEP 3333: stop iterating once Content-Length is
                    # reached), so this chunk rides with END_REQUEST in one write.
                    return self._finish(chunk)
                self._send(chunk)
        except ClientDisconnected:
            if not self.request.disconnected:
                raise
            return None
        return self._finish(b"")


class WSGIAdapter:
    """Serve a WSGI (PEP 3333) application as a FastCGI :class:`~fcgi_async.types.Application`.

    The environ holds the CGI params (latin-1 ``str``; never ``os.environ``) minus
    HTTP_PROXY (httpoxy) and the HTTP_ copies of Content-Type/Content-Length, with SCRIPT_NAME,
    PATH_INFO and QUERY_STRING per :func:`fcgi_async.cgi.split_path`, the PEP 3333 ``wsgi.*``
    keys, ``FCGI_ROLE`` (``RESPONDER``/``AUTHORIZER``/``FILTER``, as flup names it) and, for
    FILTER requests, ``fcgi.data``: the DATA stream as a second input stream.

    Each request holds one of ``threads`` worker threads until its response is complete,
    including while it waits for a slow client (WSGI has no other way to wait); requests
    beyond that wait for a thread without blocking the event loop.

    Args:
        app: the WSGI application callable.
        threads: how many requests may run application code at once (worker threads).
        root_path: the application's mount point (``--root-path``); when set it is always
            SCRIPT_NAME and the rest of the decoded path is PATH_INFO. ``None`` trusts the web
            server's split (see :mod:`fcgi_async.cgi`). Encoded as UTF-8 to match the path.
        logger: where application errors and refused responses are logged; defaults to
            ``logging.getLogger("fcgi_async.adapters.wsgi")``.
        multiprocess: the value of ``wsgi.multiprocess`` (True under a prefork supervisor).

    Raises:
        ValueError: ``threads`` is less than 1.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        threads: int = 10,
        root_path: str | None = None,
        logger: logging.Logger | None = None,
        multiprocess: bool = False,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        self.app = app
        self.threads = threads
        self._root_path = None if root_path is None else root_path.encode("utf-8")
        self._logger = logger or logging.getLogger("fcgi_async.adapters.wsgi")
        self._pool: _WorkerPool | None = None
        #: Decoded param names (see _MAX_CACHED_NAMES); the dropped ones map to None.
        self._names: dict[bytes, str | None] = {}
        self._static: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.multithread": True,
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
        }

    async def startup(self) -> None:
        """Create the worker thread pool; WSGI has no start-up of its own."""
        if self._pool is None:
            self._pool = _WorkerPool(self.threads, "fcgi-async-wsgi")

    async def shutdown(self) -> None:
        """Let the worker threads end once idle (WSGI has no shutdown hook of its own)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _name(self, key: bytes) -> str | None:
        """Decode a param name and cache it (None: a name the application never sees)."""
        name = key.decode("latin-1")
        decoded = None if name in _DROPPED else name
        names = self._names
        if len(names) < _MAX_CACHED_NAMES:  # several threads may pass: a few more is fine
            names[key] = decoded
        return decoded

    def _environ(self, request: Request, errors: _Errors) -> dict[str, Any]:
        """Build the PEP 3333 environ of ``request``: a fresh dict of latin-1 ``str``.

        Never reads or writes ``os.environ``.
        """
        params = request.params
        env: dict[str, Any] = {}
        names = self._names
        cached = names.get
        for key, value in params.items():
            name = cached(key)
            if name is None:
                if key in names:
                    continue  # dropped
                name = self._name(key)
                if name is None:
                    continue
            env[name] = value.decode("latin-1")
        pop = env.pop
        content_type = pop("HTTP_CONTENT_TYPE", None)
        if not env.get("CONTENT_TYPE"):
            if content_type:
                env["CONTENT_TYPE"] = content_type
            else:
                pop("CONTENT_TYPE", None)
        length = parse_length(env.get("CONTENT_LENGTH"))
        if length is None:
            # Unknown (absent, empty, Caddy's -1, not digits): wsgi.input reads to the end of
            # the body, and the application sees no CONTENT_LENGTH rather than one we refused.
            pop("CONTENT_LENGTH", None)
        script_name, path_info, _, query_string = split_path(params, self._root_path)
        env["SCRIPT_NAME"] = script_name.decode("latin-1")
        env["PATH_INFO"] = path_info.decode("latin-1")
        env["QUERY_STRING"] = query_string.decode("latin-1")
        https = is_https(params)
        if not env.get("REQUEST_METHOD"):
            env["REQUEST_METHOD"] = "GET"
        if not env.get("SERVER_NAME"):
            host = env.get("HTTP_HOST") or "localhost"
            env["SERVER_NAME"] = (
                host[: host.find("]") + 1] if host.startswith("[") else host.partition(":")[0]
            )
        if not env.get("SERVER_PORT"):
            env["SERVER_PORT"] = "443" if https else "80"
        if not env.get("SERVER_PROTOCOL"):
            env["SERVER_PROTOCOL"] = "HTTP/1.1"
        env["FCGI_ROLE"] = _ROLE_NAMES[request.role]
        env.update(self._static)
        env["wsgi.url_scheme"] = "https" if https else "http"
        env["wsgi.input"] = _Input(request.receive, length)
        env["wsgi.errors"] = errors
        if request.role == Role.FILTER:
            env["fcgi.data"] = _Input(
                request.receive_data, parse_length(params.get(b"FCGI_DATA_LENGTH"))
            )
        return env

    async def __call__(self, request: Request) -> None:
        """Serve one request: run the application in a worker thread and send its response."""
        pool = self._pool
        if pool is None:
            pool = self._pool = _WorkerPool(self.threads, "fcgi-async-wsgi")
        call = _Call(self, request)
        try:
            # In a copy of this task's context, as asyncio.to_thread does: context variables
            # an application sets do not leak into the next request on the same thread.
            last = await pool.submit(asyncio.get_running_loop(), copy_context().run, call.run)
        except Exception as exc:
            await self._failed(request, call.errors, exc)
            return
        # A partial last line of wsgi.errors is sent if anything is, else logged here.
        stderr = call.errors.take_pending()
        if last is None:
            call.errors.log_unsent_bytes(stderr)
            self._logger.debug("client went away during %s", _describe(request))
            return
        try:
            if stderr:
                await call.errors.send_last(stderr)
            if isinstance(last, list):
                *parts, final = last or [b""]
                for part in parts:
                    await request.send_stdout(part)
                await request.end(final)
            else:
                await request.end(last)
        except ClientDisconnected:
            self._logger.debug("client went away during %s", _describe(request))

    async def _failed(self, request: Request, errors: _Errors, exc: Exception) -> None:
        """The application raised: a quiet return, a 500, or a visibly broken response."""
        stderr = errors.take_pending()
        if request.disconnected or isinstance(exc, ClientDisconnected):
            errors.log_unsent_bytes(stderr)
            self._logger.debug("client went away during %s: %r", _describe(request), exc)
            return
        self._logger.error("Exception in WSGI application (%s)", _describe(request), exc_info=exc)
        if request.response_started:
            errors.log_unsent_bytes(stderr)
            request.fail()
            return
        try:
            if stderr:
                await errors.send_last(stderr)
            await request.end(INTERNAL_ERROR_RESPONSE)
        except ClientDisconnected:
            self._logger.debug("client went away during %s", _describe(request))


def _describe(request: Request) -> str:
    """``METHOD URI`` of a request, for log lines (escaped: request data cannot forge one)."""
    return describe_request(request.params)
