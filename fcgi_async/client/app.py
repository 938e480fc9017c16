"""Mount a PHP application (php-fpm) inside a Python web app: an ASGI app and a WSGI app.

:class:`FastCGIApp` (ASGI 3) and :class:`FastCGIWSGIApp` (WSGI) forward every request to a
FastCGI server with the params nginx would send, and stream the answer back, so a Starlette,
FastAPI or Flask application can serve ``/legacy/`` from an existing PHP code base::

    legacy = FastCGIApp("unix:/run/php/php8.2-fpm.sock", document_root="/srv/legacy")
    app = Starlette(routes=[Mount("/legacy", app=legacy)])

Paths, as nginx's ``try_files $uri /index.php`` with ``fastcgi_split_path_info`` does them:

* The mount point is the server's ``root_path`` (ASGI; Starlette's ``Mount`` sets it) or
  ``SCRIPT_NAME`` (WSGI; werkzeug's ``DispatcherMiddleware`` sets it). The path below it is
  normalized (``..`` never climbs above the mount) and mapped under ``document_root``.
* With ``script_filename`` every request runs that file (a front controller). Otherwise a path
  ending in ``.php``, or matching ``split_path`` (default ``^(.+?\\.php)(/.*)$``, whose second
  group is PATH_INFO), runs that script, or is a 404 when the script is not a file inside
  ``document_root`` (symlinks are resolved first, so none leads out of it). A path ending in
  ``/`` runs ``<path><index>`` when that file exists; any other path runs the front controller
  ``/<index>`` (404 without it, or with ``index=None``). Non-PHP files are never served: mount
  ``StaticFiles`` for assets.
* SCRIPT_NAME is the mount point plus the script (``/legacy/index.php``), REQUEST_URI the
  request target as received (``/legacy/users?page=2``), so PHP builds its links under the mount.
  HTTPS is ``on`` for an https request; REMOTE_ADDR/REMOTE_PORT are the client's;
  SERVER_NAME/SERVER_PORT come from the ``Host`` header (else the server's address). The
  ``Proxy`` header is never passed (httpoxy).

Bodies: a request body with ``Content-Length`` is streamed to php-fpm as it arrives. php-fpm
ignores a body without CONTENT_LENGTH, so a body of unknown length (chunked) is read first, in
memory up to :data:`SPOOL_MEMORY_BYTES` and then in a temporary file, and sent with its length,
as nginx does; either kind beyond ``max_body_bytes`` is answered 413 without contacting php-fpm,
and a body that pauses for longer than ``body_timeout`` is answered 408 (a trickling client must
not hold a php-fpm worker for ever).
The response body is streamed back chunk by chunk, never buffered whole. A client that leaves
mid-response aborts the request (ASGI: on ``http.disconnect``; WSGI: when the server closes the
body iterable), so PHP does not run on for nobody.

Answers: the CGI ``Status:`` header gives the status; ``Location:`` without ``Status:`` is a
302 (a client redirect; no local redirects, as nginx); repeated headers such as ``Set-Cookie``
stay separate; hop-by-hop headers are dropped. What the script writes on STDERR is logged as
WARNING lines on the ``fcgi_async.client`` logger with the request (at most
:data:`MAX_STDERR_LOG_LINES` a request).

Failures: php-fpm refusing or dropping the connection, breaking the protocol, or answering
OVERLOADED before the response head gives a 502 Bad Gateway, a timeout a 504 Gateway Timeout,
each with a short text body and ONE log line (ERROR) naming the address, the request and the
reason; more failures of the same kind within :data:`FAILURE_LOG_INTERVAL_S` are counted into the
next line instead of flooding the log. A failure after the head was sent cannot change the
status any more: it is logged the same way and raised, so the server cuts the connection and the
client sees a truncated response.
Every wait is bounded by :data:`DEFAULT_APP_TIMEOUTS` unless ``timeouts=`` says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
)
from concurrent.futures import Future
from dataclasses import dataclass
from http import HTTPStatus
from typing import IO, Any, Final, TypeVar
from urllib.parse import quote_from_bytes

from .. import _compat
from .address import Address
from .errors import FastCGIError, Timeout
from .params import DEFAULT_SPLIT_PATH_INFO, build_params, normalize_decoded_path
from .pool import Body, FastCGIClient
from .response import StreamingResponse
from .timeouts import Timeouts

logger = logging.getLogger("fcgi_async.client")

#: The proxy apps' time limits, nginx's FastCGI defaults where it has them: connect 5 s (a
#: local php-fpm accepts at once), 10 s for a free pooled connection, 60 s of silence while
#: reading the response (``fastcgi_read_timeout``) or writing the body (``fastcgi_send_timeout``).
#: No total deadline: a long download stays alive while bytes keep flowing.
DEFAULT_APP_TIMEOUTS: Final = Timeouts(connect=5.0, pool=10.0, read=60.0, write=60.0, total=None)
#: Largest request body accepted (413 beyond). PHP's own ``post_max_size`` defaults to 8 MiB;
#: this bounds what the proxy holds or forwards before PHP gets to say no.
DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024 * 1024
#: Seconds an ASGI request body may pause between two chunks (nginx's ``client_body_timeout``):
#: a streamed body holds a php-fpm worker while it trickles in, so a stalled client must not
#: hold it for ever. Beyond it: 408. A WSGI server bounds ``wsgi.input`` with its own timeout.
DEFAULT_BODY_TIMEOUT_S: Final = 60.0
#: Ceiling of ``body_timeout`` (a week, like every time setting of the server).
MAX_BODY_TIMEOUT_S: Final = 7 * 24 * 3600.0
#: Ceiling of ``max_body_bytes``: a chunked body is spooled to the local disk whole first.
MAX_BODY_BYTES_CEILING: Final = 64 * 1024**3
#: A body of unknown length is kept in memory up to this many bytes, then in a temporary file.
SPOOL_MEMORY_BYTES: Final = 1024 * 1024
#: Bytes read from a WSGI input or a spooled body at a time.
BODY_CHUNK_BYTES: Final = 64 * 1024
#: STDERR lines logged per request; more are counted in one last line, never a flood.
MAX_STDERR_LOG_LINES: Final = 10
#: Seconds during which further gateway failures of the same kind (status and error type) are
#: counted rather than logged: php-fpm down under load must not write a line per request. The
#: next line logged for that kind says how many were left out.
FAILURE_LOG_INTERVAL_S: Final = 10.0
#: Characters of one logged STDERR line or request target; the rest is cut.
MAX_LOG_CHARS: Final = 500
#: The proxy apps keep no idle connection by default, like nginx (``fastcgi_keep_conn off``):
#: php-fpm pins a worker to every open connection, so idle ones would starve other clients.
DEFAULT_APP_KEEPALIVE_EXPIRY_S: Final = 0.0

#: A path below the mount ending in this names a script (as nginx's ``location ~ \.php$``).
PHP_SUFFIX: Final = b".php"

#: Response headers that describe one HTTP hop; the server in front frames its own response.
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}

T = TypeVar("T")


class _ClientGone(Exception):
    """The HTTP client disconnected (or sent less than announced) while its body was read."""


class _BodyTimeout(Exception):
    """The client paused its request body for longer than ``body_timeout``."""


class _TooLarge(Exception):
    """A request body exceeds ``max_body_bytes``."""


@dataclass(slots=True)
class _Incoming:
    """One HTTP request, as either interface describes it (paths decoded, as bytes)."""

    method: str
    mount: bytes
    path: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    scheme: str
    server_name: str
    server_port: int
    server_addr: str
    remote_addr: str
    remote_port: int

    def show(self) -> str:
        """``METHOD target`` for log lines (cut at :data:`MAX_LOG_CHARS`)."""
        return f"{self.method} {self.target[:MAX_LOG_CHARS].decode('latin-1')}"


@dataclass(slots=True)
class _Reply:
    """What to answer: a status and headers, then the FastCGI response's body or ``body``."""

    status: int
    headers: list[tuple[str, str]]
    response: StreamingResponse | None = None
    body: bytes = b""
    #: The spooled request body, which the exchange may still be reading: released (its
    #: temporary file deleted) only once the response is over.
    spool: _SpooledBody | None = None

    def release(self) -> None:
        """Delete the spooled body's temporary file, if any (idempotent)."""
        if self.spool is not None:
            self.spool.close()


def _simple(status: int, text: str | None = None) -> _Reply:
    phrase = HTTPStatus(status).phrase
    body = f"{status} {phrase}{': ' + text if text else ''}\n".encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    return _Reply(status, headers, body=body)


def _split_host(host: bytes, scheme: str) -> tuple[str, int]:
    """``(name, port)`` of a Host header value (``name``, ``name:port``, ``[v6]:port``)."""
    text = host.decode("latin-1").strip()
    name, port = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end != -1:
            name, port = text[: end + 1], text[end + 2 :]
    elif text.count(":") == 1:
        name, _, port = text.partition(":")
    number = int(port) if port.isdigit() and 0 < int(port) < 65536 else None
    return name, number or _DEFAULT_PORTS.get(scheme, 80)


def _server(
    host: bytes | None, scheme: str, server: tuple[str, int | None] | None
) -> tuple[str, int, str]:
    """``(SERVER_NAME, SERVER_PORT, SERVER_ADDR)``: the Host header first (what the browser
    used, which PHP builds its absolute URLs from), else the listening address."""
    addr = server[0] if server is not None and server[1] is not None else "127.0.0.1"
    if host:
        name, port = _split_host(host, scheme)
        return name, port, addr
    if server is not None and server[1] is not None:
        return server[0], server[1], addr
    return "localhost", _DEFAULT_PORTS.get(scheme, 80), addr


class _SpooledBody:
    """A request body of unknown length, read whole: in memory, or in a temporary file."""

    def __init__(self) -> None:
        self.length = 0
        self._memory = bytearray()
        self._file: IO[bytes] | None = None

    async def fill(self, chunks: AsyncIterator[bytes], limit: int) -> None:
        """Read ``chunks`` to their end.

        Raises:
            _TooLarge: more than ``limit`` bytes.
        """
        async for chunk in chunks:
            self.length += len(chunk)
            if self.length > limit:
                raise _TooLarge
            if self._file is not None:
                self._file.write(chunk)  # a local temp file: page-cache fast, not worth a thread
                continue
            self._memory += chunk
            if len(self._memory) > SPOOL_MEMORY_BYTES:
                # Closed by close(), which the caller calls in a finally.
                self._file = tempfile.TemporaryFile()  # noqa: SIM115
                self._file.write(self._memory)
                self._memory = bytearray()

    def body(self) -> Body:
        """The body to send: bytes, or the temporary file's chunks."""
        if self._file is None:
            return bytes(self._memory) if self._memory else None
        self._file.seek(0)
        return self._chunks(self._file)

    @staticmethod
    async def _chunks(file: IO[bytes]) -> AsyncIterator[bytes]:
        # Ends quietly when the file was released (the exchange is over or was aborted).
        while not file.closed and (chunk := file.read(BODY_CHUNK_BYTES)):
            yield chunk

    def close(self) -> None:
        """Delete the temporary file, if any."""
        if self._file is not None:
            self._file.close()


class _Gateway:
    """What both apps share: path resolution, params, the client, error answers and logs."""

    def __init__(
        self,
        address: str | Address | None,
        *,
        document_root: str | None,
        script_filename: str | None,
        index: str | None,
        split_path: str | None,
        params: Mapping[str, str | bytes | None] | None,
        timeouts: Timeouts | None,
        max_body_bytes: int,
        body_timeout: float,
        client: FastCGIClient | None,
        client_options: dict[str, Any],
    ) -> None:
        if document_root is None and script_filename is None:
            raise TypeError("FastCGIApp needs document_root, script_filename or both")
        if index is not None and ("/" in index or index in ("", ".", "..")):
            raise ValueError(f"index must be a file name, not {index!r}")
        if not 0 <= max_body_bytes <= MAX_BODY_BYTES_CEILING:
            raise ValueError(f"max_body_bytes must be 0 to {MAX_BODY_BYTES_CEILING}")
        if not 0 < body_timeout <= MAX_BODY_TIMEOUT_S:  # also refuses NaN
            raise ValueError(f"body_timeout must be > 0 and <= {MAX_BODY_TIMEOUT_S:g} s")
        if client is None:
            if address is None:
                raise TypeError("FastCGIApp needs an address or a client")
            client_options.setdefault("keepalive_expiry", DEFAULT_APP_KEEPALIVE_EXPIRY_S)
            client = FastCGIClient(address, **client_options)
            self.owns_client = True
        else:
            if client_options:
                raise TypeError(f"client options {sorted(client_options)} need no client=")
            self.owns_client = False
        self.client = client
        self.timeouts = timeouts or DEFAULT_APP_TIMEOUTS
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        #: Per kind of failure: when it was last logged, and how many were not logged since.
        self._failures: dict[tuple[str, type[FastCGIError]], tuple[float | None, int]] = {}
        #: The clock of the failure log's interval (a test may move it).
        self.clock: Callable[[], float] = time.monotonic
        self.extra = dict(params or {})
        root = document_root
        if root is None:
            assert script_filename is not None
            root = os.path.dirname(script_filename) or "/"
        self.root = root.rstrip("/") or "/"
        self._root_b = os.fsencode(self.root).rstrip(b"/")
        self._real_root = os.path.realpath(self._root_b)
        self._fixed: tuple[bytes, bytes] | None = None
        if script_filename is not None:
            # Every request runs this file; its SCRIPT_NAME is its path below the root.
            filename = os.fsencode(script_filename)
            if filename.startswith(self._root_b + b"/"):
                name = filename[len(self._root_b) :]
            else:
                name = b"/" + os.path.basename(filename)
            self._fixed = (name, filename)
        self._index = os.fsencode(index) if index is not None else None
        self._split = re.compile(split_path.encode(), re.DOTALL) if split_path else None
        if self._split is not None and self._split.groups != 2:
            raise ValueError("split_path needs two groups: the script and PATH_INFO")

    # ------------------------------------------------------------------ paths
    def _is_script(self, script: bytes) -> bool:
        """True when ``document_root + script`` is a regular file inside the root (after
        following symlinks: a link out of the root is refused)."""
        real = os.path.realpath(self._root_b + script)
        prefix = self._real_root.rstrip(b"/") + b"/"
        return real.startswith(prefix) and os.path.isfile(real)

    def resolve(self, path: bytes) -> tuple[bytes, bytes, bytes] | None:
        """``(script name, script filename, path info)`` for a normalized path below the
        mount, or ``None`` for a 404."""
        if self._fixed is not None:
            return self._fixed[0], self._fixed[1], b""
        m = self._split.match(path) if self._split is not None else None
        if m is not None:
            script, info = m.group(1), m.group(2) or b""
        elif path.endswith(PHP_SUFFIX):
            script, info = path, b""
        else:
            script = b""
        if script:
            if not self._is_script(script):
                return None
            return script, self._root_b + script, info
        if self._index is None:
            return None
        if path.endswith(b"/"):
            candidate = path + self._index
            if self._is_script(candidate):
                return candidate, self._root_b + candidate, b""
        candidate = b"/" + self._index
        if self._is_script(candidate):
            return candidate, self._root_b + candidate, b""
        return None

    # ----------------------------------------------------------------- request
    async def handle(self, inc: _Incoming, chunks: AsyncIterator[bytes]) -> _Reply:
        """Answer a request up to its head: a local error, or php-fpm's streaming response.

        Raises:
            _ClientGone: the client went away while its body was read.
        """
        try:
            path = normalize_decoded_path(inc.path or b"/")
        except ValueError:
            return _simple(400, "the path holds a NUL byte")
        resolved = self.resolve(path)
        if resolved is None:
            return _simple(404)
        length: int | None = None
        declared = [v for k, v in inc.headers if k.lower() == b"content-length"]
        spool: _SpooledBody | None = None
        body: Body = None
        if declared:
            value = declared[0].strip()
            if not value.isdigit() or any(v.strip() != value for v in declared):
                return _simple(400, "malformed Content-Length")
            if int(value) > self.max_body_bytes:
                return self._too_large(inc)
            if int(value) > 0:
                body = chunks
        else:
            spool = _SpooledBody()
            try:
                await spool.fill(chunks, self.max_body_bytes)
            except _TooLarge:
                spool.close()
                return self._too_large(inc)
            except BaseException:
                spool.close()
                raise
            if spool.length or any(k.lower() == b"transfer-encoding" for k, _ in inc.headers):
                length = spool.length
            body = spool.body()
        try:
            reply = await self._forward(inc, resolved, body, length)
        except BaseException:
            if spool is not None:
                spool.close()
            raise
        if spool is not None:
            if reply.response is None:
                spool.close()
            else:
                reply.spool = spool  # the exchange may still be sending it
        return reply

    def body_timed_out(self, inc: _Incoming) -> _Reply:
        """The 408 answer to a body that stalled (logged once)."""
        logger.warning(
            "%s: %s -> 408: the request body paused for more than body_timeout=%g s",
            self.client.address,
            inc.show(),
            self.body_timeout,
        )
        return _simple(408)

    def _too_large(self, inc: _Incoming) -> _Reply:
        logger.warning(
            "%s: %s -> 413: the body exceeds max_body_bytes=%d",
            self.client.address,
            inc.show(),
            self.max_body_bytes,
        )
        return _simple(413)

    async def _forward(
        self,
        inc: _Incoming,
        resolved: tuple[bytes, bytes, bytes],
        body: Body,
        length: int | None,
    ) -> _Reply:
        script, filename, info = resolved
        extra: dict[str, str | bytes | None] = {
            "SCRIPT_NAME": inc.mount.rstrip(b"/") + script,
            "SCRIPT_FILENAME": filename,
            "PATH_INFO": info or None,
        }
        if length is not None:
            # De-chunked here, as nginx does with fastcgi_request_buffering on.
            extra["CONTENT_LENGTH"] = str(length)
            extra["HTTP_TRANSFER_ENCODING"] = None
        extra.update(self.extra)
        params = build_params(
            inc.method,
            inc.target,
            headers=inc.headers,
            scheme=inc.scheme,
            server_name=inc.server_name,
            server_port=inc.server_port,
            server_addr=inc.server_addr,
            remote_addr=inc.remote_addr,
            remote_port=inc.remote_port,
            document_root=self.root,
            split_path_info=None,
            extra=extra,
        )
        try:
            response = await self.client.send(params, body, timeouts=self.timeouts)
        except FastCGIError as exc:
            status = 504 if isinstance(exc, Timeout) else 502
            self._log_failure(inc, status, exc)
            return _simple(status)
        headers = [(k, v) for k, v in response.headers if k.lower() not in _HOP_BY_HOP]
        return _Reply(response.status_code, headers, response)

    async def stream(self, inc: _Incoming, reply: _Reply) -> AsyncGenerator[bytes, None]:
        """Yield the response body; log STDERR at the end; close the response and release the
        reply always.

        Raises:
            FastCGIError: the exchange failed mid-body (logged once here).
        """
        response = reply.response
        assert response is not None
        try:
            async for chunk in response.aiter_bytes():
                yield chunk
        except FastCGIError as exc:
            self._log_failure(inc, response.status_code, exc, cut=True)
            raise
        finally:
            await response.aclose()
            reply.release()
            self._log_stderr(inc, response.stderr)

    # -------------------------------------------------------------------- logs
    def _log_failure(
        self, inc: _Incoming, status: int, exc: FastCGIError, *, cut: bool = False
    ) -> None:
        outcome = f"{status} cut short" if cut else f"{status}"
        kind = (outcome, type(exc))
        now = self.clock()
        last, left_out = self._failures.get(kind, (None, 0))
        if last is not None and now - last < FAILURE_LOG_INTERVAL_S:
            self._failures[kind] = (last, left_out + 1)
            return
        self._failures[kind] = (now, 0)
        more = f" ({left_out} more like it not logged)" if left_out else ""
        logger.error("%s: %s -> %s: %s%s", self.client.address, inc.show(), outcome, exc, more)

    def _log_stderr(self, inc: _Incoming, stderr: bytes) -> None:
        if not stderr:
            return
        # php-fpm joins the messages of one request on a line ("PHP message: a; PHP message:
        # b"): one log line per message reads better and keeps the bound meaningful.
        text = stderr.decode("utf-8", "replace").replace("; PHP message: ", "\nPHP message: ")
        lines = [line for line in text.splitlines() if line.strip()]
        for line in lines[:MAX_STDERR_LOG_LINES]:
            logger.warning(
                "%s: %s: stderr: %s", self.client.address, inc.show(), line[:MAX_LOG_CHARS]
            )
        if len(lines) > MAX_STDERR_LOG_LINES:
            logger.warning(
                "%s: %s: %d more stderr lines not logged",
                self.client.address,
                inc.show(),
                len(lines) - MAX_STDERR_LOG_LINES,
            )

    async def aclose(self) -> None:
        """Close the client, unless it was passed in."""
        if self.owns_client:
            await self.client.aclose()


# ======================================================================== ASGI
Scope = Mapping[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _incoming_from_scope(scope: Scope) -> _Incoming:
    root_path: str = scope.get("root_path", "")
    path: str = scope["path"]
    # Starlette's Mount (and the ASGI spec since 2023) keep the mount point in ``path``;
    # older servers and routers strip it. Both mean the same request.
    if root_path and (path == root_path or path.startswith(root_path.rstrip("/") + "/")):
        path = path[len(root_path.rstrip("/")) :]
    raw_path = scope.get("raw_path")
    if raw_path:
        # httpx's ASGITransport puts the query into raw_path; the spec does not.
        raw_path = raw_path.partition(b"?")[0]
    else:
        raw_path = quote_from_bytes((root_path.rstrip("/") + path).encode(), safe="/").encode()
    query: bytes = scope.get("query_string", b"")
    target = raw_path + b"?" + query if query else raw_path
    scheme: str = scope.get("scheme", "http")
    headers: list[tuple[bytes, bytes]] = list(scope.get("headers", ()))
    host = next((v for k, v in headers if k.lower() == b"host"), None)
    server_name, server_port, server_addr = _server(host, scheme, scope.get("server"))
    client = scope.get("client")
    return _Incoming(
        method=scope.get("method", "GET"),
        mount=root_path.encode(),
        path=path.encode(),
        target=target,
        headers=headers,
        scheme=scheme,
        server_name=server_name,
        server_port=server_port,
        server_addr=server_addr,
        remote_addr=client[0] if client else "",
        remote_port=client[1] if client and client[1] is not None else 0,
    )


class _BodyReader:
    """The request body from ASGI ``http.request`` messages; knows when it was read whole."""

    __slots__ = ("done", "receive", "timeout")

    def __init__(self, receive: Receive, timeout: float) -> None:
        self.receive = receive
        self.timeout = timeout
        self.done = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the body's chunks.

        Raises:
            _ClientGone: ``http.disconnect`` before the end of the body.
            _BodyTimeout: no message for ``timeout`` seconds.
        """
        while True:
            try:
                async with _compat.timeout(self.timeout):
                    message = await self.receive()
            except TimeoutError:
                raise _BodyTimeout from None
            if message["type"] == "http.disconnect":
                raise _ClientGone
            body: bytes = message.get("body", b"")
            if body:
                yield body
            if not message.get("more_body", False):
                self.done = True
                return


def _watch_disconnect(receive: Receive, on_disconnect: Callable[[], None]) -> asyncio.Task[None]:
    """Call ``on_disconnect`` when the server reports ``http.disconnect`` (the body was read
    whole, so nothing else awaits ``receive``)."""

    async def watch() -> None:
        # After the whole body, the next message can only be http.disconnect; anything else
        # (a server breaking the spec) ends the watch rather than spin on it.
        with contextlib.suppress(Exception):  # a server whose receive fails: stop watching
            if (await receive())["type"] == "http.disconnect":
                on_disconnect()

    return asyncio.get_running_loop().create_task(watch())


class FastCGIApp:
    """An ASGI 3 app that forwards every HTTP request to a FastCGI server (php-fpm).

    Args:
        address: the FastCGI server (``unix:PATH``, ``HOST:PORT``, ``[V6]:PORT``); or pass
            ``client``.
        document_root: the PHP application's directory: DOCUMENT_ROOT, and where scripts are
            looked up (required unless ``script_filename`` is given; then its directory).
        script_filename: run this file for every request (a front controller), with no file
            lookups.
        index: the directory index and front controller (``try_files $uri /index.php``);
            ``None``: only paths naming an existing script are served.
        split_path: regex with two groups splitting the path below the mount into the script
            and PATH_INFO (nginx's ``fastcgi_split_path_info``); ``None``: no PATH_INFO, only
            paths ending in ``.php`` name scripts.
        params: params added to (or, with ``None``, removed from) every request.
        timeouts: time limits of each request (default :data:`DEFAULT_APP_TIMEOUTS`).
        max_body_bytes: largest request body; larger ones get 413 (default
            :data:`DEFAULT_MAX_BODY_BYTES`, at most :data:`MAX_BODY_BYTES_CEILING`).
        body_timeout: seconds the request body may pause between chunks; then 408 (default
            :data:`DEFAULT_BODY_TIMEOUT_S`; ASGI only, a WSGI server bounds its input itself).
        client: an existing :class:`FastCGIClient` to send through (not closed by the app);
            it must belong to the event loop the app serves in.
        **client_options: passed to :class:`FastCGIClient` when ``client`` is not given
            (``keepalive_expiry`` defaults to :data:`DEFAULT_APP_KEEPALIVE_EXPIRY_S` here).

    Answers ``http`` scopes (see the module for paths, bodies and errors), handles
    ``lifespan`` (shutdown closes the client) and refuses ``websocket`` (closed with 1000,
    which a server turns into a 403 handshake answer). A router such as Starlette's does not
    pass lifespan events to mounted apps: call :meth:`aclose` from the outer app's lifespan.
    """

    def __init__(
        self,
        address: str | Address | None = None,
        *,
        document_root: str | None = None,
        script_filename: str | None = None,
        index: str | None = "index.php",
        split_path: str | None = DEFAULT_SPLIT_PATH_INFO,
        params: Mapping[str, str | bytes | None] | None = None,
        timeouts: Timeouts | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        body_timeout: float = DEFAULT_BODY_TIMEOUT_S,
        client: FastCGIClient | None = None,
        **client_options: Any,
    ) -> None:
        self._gateway = _Gateway(
            address,
            document_root=document_root,
            script_filename=script_filename,
            index=index,
            split_path=split_path,
            params=params,
            timeouts=timeouts,
            max_body_bytes=max_body_bytes,
            body_timeout=body_timeout,
            client=client,
            client_options=client_options,
        )

    @property
    def client(self) -> FastCGIClient:
        """The FastCGI client the app sends through."""
        return self._gateway.client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})
        else:
            raise RuntimeError(f"FastCGIApp cannot serve a {kind!r} scope")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        inc = _incoming_from_scope(scope)
        gateway = self._gateway
        reader = _BodyReader(receive, gateway.body_timeout)
        try:
            reply = await gateway.handle(inc, reader.chunks())
        except _ClientGone:
            logger.debug("%s: the client left while sending its body", inc.show())
            return
        except _BodyTimeout:
            reply = gateway.body_timed_out(inc)
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
        if reply.response is None:
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            await send({"type": "http.response.body", "body": reply.body})
            return
        chunks = gateway.stream(inc, reply)
        task = asyncio.current_task()
        assert task is not None
        left = False

        def on_disconnect() -> None:
            nonlocal left
            left = True
            task.cancel()

        # A client that goes away mid-response aborts the request, as nginx does, instead of
        # letting PHP run on for nobody. Watched only once the body was read whole: until
        # then the body reader owns receive().
        watcher = _watch_disconnect(receive, on_disconnect) if reader.done else None
        try:
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not left:
                raise
            _compat.uncancel(task)
            logger.debug("%s: the client left; request aborted", inc.show())
        finally:
            if watcher is not None:
                watcher.cancel()
            # Closing early (the server's send failed, the client left, or we were cancelled)
            # aborts the request.
            await chunks.aclose()
            await reply.response.aclose()
            reply.release()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        """Close the client's connections (unless the client was passed in)."""
        await self._gateway.aclose()


# ======================================================================== WSGI
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def _incoming_from_environ(environ: Mapping[str, Any]) -> _Incoming:
    mount: str = environ.get("SCRIPT_NAME", "")
    path: str = environ.get("PATH_INFO", "")
    query: str = environ.get("QUERY_STRING", "")
    target_s: str | None = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if target_s:
        target = target_s.encode("latin-1")
    else:
        target = quote_from_bytes((mount + path).encode("latin-1"), safe="/").encode()
        if query:
            target += b"?" + query.encode("latin-1")
    headers: list[tuple[bytes, bytes]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-")
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = key.replace("_", "-")
            if not value:
                continue
        else:
            continue
        headers.append((name.encode("latin-1"), str(value).encode("latin-1")))
    scheme: str = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST")
    port = environ.get("SERVER_PORT", "")
    server = (environ.get("SERVER_NAME", "localhost"), int(port) if port.isdigit() else None)
    server_name, server_port, _ = _server(host.encode("latin-1") if host else None, scheme, server)
    remote_port = environ.get("REMOTE_PORT", "")
    return _Incoming(
        method=environ.get("REQUEST_METHOD", "GET"),
        mount=mount.encode("latin-1"),
        path=path.encode("latin-1"),
        target=target,
        headers=headers,
        scheme=scheme,
        server_name=server_name,
        server_port=server_port,
        server_addr=environ.get("SERVER_ADDR") or "127.0.0.1",
        remote_addr=environ.get("REMOTE_ADDR", ""),
        remote_port=int(remote_port) if str(remote_port).isdigit() else 0,
    )


async def _input_chunks(stream: Any, length: int | None) -> AsyncIterator[bytes]:
    """Read ``wsgi.input`` in a worker thread (it blocks), ``length`` bytes or to its end.

    Raises:
        _ClientGone: the input ended before ``length`` bytes.
    """
    remaining = length
    while remaining is None or remaining > 0:
        size = BODY_CHUNK_BYTES if remaining is None else min(remaining, BODY_CHUNK_BYTES)
        chunk: bytes = await asyncio.to_thread(stream.read, size)
        if not chunk:
            if remaining is not None:
                raise _ClientGone
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


def _declared_length(environ: Mapping[str, Any]) -> int | None:
    value = str(environ.get("CONTENT_LENGTH", "")).strip()
    return int(value) if value.isdigit() else None


class FastCGIWSGIApp:
    """The WSGI twin of :class:`FastCGIApp`, e.g. for Flask with werkzeug's
    ``DispatcherMiddleware``. Arguments as for :class:`FastCGIApp` (``client`` is not accepted:
    a client belongs to one event loop).

    It owns a private event loop in a daemon thread (``fcgi-async-app``) holding the connection
    pool; each WSGI thread blocks while that loop talks to php-fpm, so the app may be shared by
    the server's threads. A failure after the head raises from the body iterable, so the WSGI
    server cuts the connection. Call :meth:`close` at exit to stop the thread.
    """

    def __init__(self, address: str | Address, **options: Any) -> None:
        if "client" in options:
            raise TypeError("FastCGIWSGIApp creates its own client; pass an address")
        self._gateway = FastCGIApp(address, **options)._gateway
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fcgi-async-app", daemon=True
        )
        self._thread.start()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def client(self) -> FastCGIClient:
        """The FastCGI client the app sends through (it lives in the app's loop thread)."""
        return self._gateway.client

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()  # never scheduled: close it rather than leave it un-awaited
            raise RuntimeError("the FastCGIWSGIApp is closed")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Serve one WSGI request."""
        inc = _incoming_from_environ(environ)
        length = _declared_length(environ)
        if length is None and not environ.get("wsgi.input_terminated"):
            length = 0  # PEP 3333: without CONTENT_LENGTH there is nothing to read
        chunks = _input_chunks(environ["wsgi.input"], length)
        try:
            reply = self._call(self._gateway.handle(inc, chunks))
        except _ClientGone:
            start_response("400 Bad Request", [("Content-Length", "0")])
            return [b""]
        if reply.response is not None:
            reason = reply.response.reason
        else:
            reason = HTTPStatus(reply.status).phrase
        start_response(f"{reply.status} {reason}".rstrip(), reply.headers)
        if reply.response is None:
            return [reply.body]
        return _WSGIBody(self, self._gateway.stream(inc, reply), reply)

    def close(self) -> None:
        """Close the pool and stop the loop thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        future = asyncio.run_coroutine_threadsafe(self._gateway.aclose(), self._loop)
        future.result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        self._loop.close()


class _WSGIBody:
    """The WSGI response iterable: each chunk is fetched through the app's loop."""

    def __init__(
        self,
        app: FastCGIWSGIApp,
        chunks: AsyncGenerator[bytes, None],
        reply: _Reply,
    ) -> None:
        self._app = app
        self._chunks = chunks
        self._reply = reply

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                chunk = self._app._call(self._next())
            except StopAsyncIteration:
                return
            yield chunk

    def close(self) -> None:
        """Called by the WSGI server when it is done: closing early aborts the request."""
        try:
            self._app._call(self._aclose())
        except RuntimeError:  # the app was closed, its loop is gone: free the spool here
            self._reply.release()

    async def _next(self) -> bytes:
        return await self._chunks.__anext__()

    async def _aclose(self) -> None:
        await self._chunks.aclose()
        assert self._reply.response is not None
        await self._reply.response.aclose()
        self._reply.release()


__all__ = [
    "DEFAULT_APP_TIMEOUTS",
    "DEFAULT_MAX_BODY_BYTES",
    "FastCGIApp",
    "FastCGIWSGIApp",
]
