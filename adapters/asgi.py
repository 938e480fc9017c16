"""ASGI 3 adapter (HTTP spec 2.4, lifespan): serve an ASGI application over FastCGI.

Usage::

    from fcgi_async.adapters.asgi import ASGIAdapter
    application = ASGIAdapter(starlette_app)       # an fcgi_async.types.Application

Theory of operation
-------------------
Each FastCGI request becomes one ``http`` scope built from the CGI params
(docs/architecture.md, The CGI view):

* ``path`` is the decoded SCRIPT_NAME + PATH_INFO and ``root_path`` the decoded SCRIPT_NAME, as
  :func:`fcgi_async.cgi.split_path` computes them. Both are decoded as UTF-8; a path that is not
  valid UTF-8 is decoded as latin-1 instead (both of them, so ``root_path`` stays a prefix of
  ``path`` and every character can be encoded back to bytes). ``raw_path`` is the still
  %-encoded path of REQUEST_URI, or the %-encoded ``path`` when the web server sent no
  REQUEST_URI.
* ``headers`` come from the ``HTTP_*`` params (``HTTP_FOO_BAR`` becomes ``b"foo-bar"``) plus
  CONTENT_TYPE / CONTENT_LENGTH when non-empty. HTTP_PROXY is never passed on (httpoxy), and the
  redundant HTTP_CONTENT_TYPE / HTTP_CONTENT_LENGTH are dropped in favour of the CGI variables.
  Params are never copied into ``os.environ``.
* ``scheme`` follows HTTPS / REQUEST_SCHEME; ``client`` is (REMOTE_ADDR, REMOTE_PORT), with
  port 0 when REMOTE_PORT is missing (nginx on a unix socket), and ``server`` is (SERVER_ADDR or
  SERVER_NAME, SERVER_PORT or None). Either is ``None`` when its address is missing.
* ``http_version`` is "1.0", "1.1" or "2" from SERVER_PROTOCOL ("1.1" when unknown).
* ``state`` is a shallow copy of the lifespan state (ASGI 2.4 "lifespan state").

Extensions in ``scope["extensions"]``:

* ``"http.response.pathsend"``: ``{"type": "http.response.pathsend", "path": "/abs/file"}``
  finishes the response with the file's content, read in large blocks in a worker thread.
* ``"fcgi.params"``: the CGI params as the web server sent them (minus HTTP_PROXY), a mapping
  of bytes to bytes to be treated as read-only, for applications that want CGI variables the
  scope does not carry (DOCUMENT_ROOT, SSL_*, ...).
* ``"fcgi.data"`` (FILTER role only): ``{"receive": <coroutine function>}``. The DATA stream
  (the file to filter) is read with ``await scope["extensions"]["fcgi.data"]["receive"]()``,
  which returns the next chunk as bytes and ``b""`` at the end of the stream. Reading DATA
  first discards whatever the application has not read of the request body (STDIN comes
  before DATA on the wire).

Trailers and early hints are not advertised: FastCGI cannot carry them.

``receive()`` yields ``http.request`` messages as the body streams in (the last one has
``more_body=False``; a CONTENT_LENGTH, when given, ends the body once reached). After the body,
it waits until the client disconnects or the response is complete and returns
``http.disconnect``; an abort while the body is incomplete gives ``http.disconnect`` at once.

``send()`` buffers ``http.response.start`` and emits the CGI header block (``Status: 200 OK``)
together with the first body chunk: a response sent as start + one final body leaves in a
single :meth:`~fcgi_async.types.Request.end` call, i.e. one write to the socket. Later chunks go
through :meth:`~fcgi_async.types.Request.send_stdout`, which waits on flow control. ``send()``
after the client went away raises :class:`~fcgi_async.types.ClientDisconnected` (an
``OSError``, as spec 2.4 requires). A status or header holding CR, LF or NUL is rejected with
``ValueError`` before anything is written.

Failures: an exception (or a return without a complete response) before any byte was written
gives the client a plain 500 and logs the traceback, which never reaches the client; after the
header block was written, :meth:`~fcgi_async.types.Request.fail` makes the web server report a
broken response instead of a clean short one. When the client is already gone, only a debug
line is logged.

Lifespan: ``startup()`` runs the ``lifespan`` scope in a task that lives until ``shutdown()``.
With ``lifespan="auto"`` an application that raises before reading the startup event, or
returns without answering (Django, many small apps), is served without lifespan; one that
reports ``lifespan.startup.failed``, or raises after reading ``lifespan.startup``, makes
``startup()`` raise :class:`LifespanFailure`. With ``lifespan="on"`` lack of support is a
failure too; ``"off"`` never runs the lifespan scope.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from http import HTTPStatus
from typing import Any, Final, Literal, NoReturn
from urllib.parse import quote_from_bytes

import anyio

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
from fcgi_async.protocol.speedups import load_speedups, speedups_wanted
from fcgi_async.types import ClientDisconnected, Request

__all__ = [
    "ASGIAdapter",
    "ASGIApp",
    "LifespanFailure",
    "Message",
    "Receive",
    "Scope",
    "Send",
]

#: An ASGI connection scope (``http`` or ``lifespan``).
Scope = MutableMapping[str, Any]
#: An ASGI event, received or sent.
Message = MutableMapping[str, Any]
#: The ``receive`` callable handed to the application.
Receive = Callable[[], Awaitable[Message]]
#: The ``send`` callable handed to the application.
Send = Callable[[Message], Awaitable[None]]
#: An ASGI 3 application (Starlette, FastAPI, Django's ASGIHandler, ...).
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: pathsend reads the file in blocks this large: big enough that a thread hop per block is
#: cheap next to the copy, small enough to respect flow control (the core splits records).
PATHSEND_BLOCK_SIZE: Final = 256 * 1024
#: Header-name translations learnt from the wire are cached up to this many entries. Names
#: are chosen by clients, so the cache must be bounded; real traffic uses a few dozen.
MAX_CACHED_HEADER_NAMES: Final = 1024

_ASGI_VERSION: Final = "3.0"
_HTTP_SPEC_VERSION: Final = "2.4"
_LIFESPAN_SPEC_VERSION: Final = "2.0"

_HTTP_VERSIONS: Final = {
    b"HTTP/1.1": "1.1",
    b"HTTP/1.0": "1.0",
    b"HTTP/2": "2",
    b"HTTP/2.0": "2",
}

#: Every known status's CGI status line, built once.
_STATUS_LINES: Final = {
    s.value: b"Status: %d %s\r\n" % (s.value, s.phrase.encode("ascii")) for s in HTTPStatus
}

_CONTENT_HEADERS: Final = frozenset({b"content-type", b"content-length"})

#: The usual methods' names, decoded once.
_METHODS: Final = {
    m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
}
_FILTER: Final = Role.FILTER

#: Param name -> ASGI header name, or None for params that are not headers. Pre-filled with
#: the CGI variables nginx, Apache and lighttpd send, so the common case never computes.
_INITIAL_HEADER_NAMES: Final[Mapping[bytes, bytes | None]] = {
    b"CONTENT_TYPE": b"content-type",
    b"CONTENT_LENGTH": b"content-length",
    # CGI's CONTENT_* are authoritative (RFC 3875 §4.1.18); the HTTP_ copies would duplicate.
    b"HTTP_CONTENT_TYPE": None,
    b"HTTP_CONTENT_LENGTH": None,
    **{name: None for name in STRIPPED_PARAMS},
}
_HEADER_NAMES: dict[bytes, bytes | None] = dict(_INITIAL_HEADER_NAMES)


def _translate_headers(params: Mapping[bytes, bytes]) -> None:
    """Learn the header names of params not yet in the cache, while it has room.

    ``HTTP_X_Y`` becomes ``b"x-y"``; other params are not headers (``None``).
    """
    names = _HEADER_NAMES
    for key in params:
        if key not in names and len(names) < MAX_CACHED_HEADER_NAMES:
            names[key] = _header_name(key)


def _header_name(key: bytes) -> bytes | None:
    """The ASGI header name of a param, or ``None`` for params that are not headers."""
    return (key[5:].lower().replace(b"_", b"-") or None) if key.startswith(b"HTTP_") else None


def _translate_all(params: Mapping[bytes, bytes]) -> dict[bytes, bytes | None]:
    """Header names for every param, from the cache or computed (when the cache is full)."""
    names = _HEADER_NAMES
    return {key: names[key] if key in names else _header_name(key) for key in params}


ScopeParts = tuple[list[tuple[bytes, bytes]], tuple[str, int] | None, tuple[str, int | None] | None]
"""``(headers, client, server)`` of an ``http`` scope."""


def _scope_parts_py(
    params: Mapping[bytes, bytes],
    names: Mapping[bytes, bytes | None],
    content_headers: frozenset[bytes],
) -> ScopeParts | None:
    """The headers, client and server of a request's scope; ``None`` if a name is not in names."""
    try:
        headers = [
            (name, value)
            for key, value in params.items()
            if (name := names[key]) is not None and (value or name not in content_headers)
        ]
    except KeyError:
        return None
    get = params.get
    remote_addr = get(b"REMOTE_ADDR")
    if remote_addr:
        port = get(b"REMOTE_PORT")
        client = (remote_addr.decode("latin-1"), int(port) if port and port.isdigit() else 0)
    else:
        client = None
    host = get(b"SERVER_ADDR") or get(b"SERVER_NAME")
    if host:
        port = get(b"SERVER_PORT")
        server = (host.decode("latin-1"), int(port) if port and port.isdigit() else None)
    else:
        server = None
    return headers, client, server


HttpScope = Callable[
    [Mapping[bytes, bytes], bytes | None, dict[str, Any], dict[bytes, bytes | None]],
    dict[str, Any] | None,
]
"""``http_scope(params, root_path, state, names)``: a request's scope, or ``None`` to decline."""


def _http_scope_ref(
    params: Mapping[bytes, bytes],
    root_path: bytes | None,
    state: dict[str, Any],
    names: dict[bytes, bytes | None],
) -> dict[str, Any]:
    """The scope builder without the accelerator: the reference, with the C builder's
    arguments (it keeps its own header-name cache)."""
    return _http_scope_py(params, root_path, state)


def _response_head_ref(status: Any, headers: Any, status_lines: dict[int, bytes]) -> bytes:
    """The header-block builder without the accelerator: the reference, with the C
    builder's arguments."""
    return _response_head_py({"type": "http.response.start", "status": status, "headers": headers})


ResponseHead = Callable[[object, object, dict[int, bytes]], bytes | None]


#: The C accelerator of this module (built by pip when a compiler is present).
SPEEDUPS_MODULE = "fcgi_async.adapters._speedups"


def select_response_head(use_speedups: bool) -> ResponseHead:
    """Return the C header-block builder when asked for and built, else the reference.

    The C builder declines (None) the header blocks it does not build itself; the caller then
    runs the reference.
    """
    speedups = load_speedups(SPEEDUPS_MODULE, use_speedups)
    if speedups is None:
        return _response_head_ref
    head: ResponseHead = speedups.response_head
    return head


def select_http_scope(use_speedups: bool) -> HttpScope:
    """Return the C scope builder when asked for and built, else the reference.

    The C builder declines (None) the unusual requests; the caller then runs the reference.
    """
    speedups = load_speedups(SPEEDUPS_MODULE, use_speedups)
    if speedups is None:
        return _http_scope_ref
    scope: HttpScope = speedups.http_scope
    return scope


#: ``FCGI_ASYNC_NO_SPEEDUPS=1`` leaves every scope to the pure-Python reference.
_http_scope: HttpScope = select_http_scope(speedups_wanted())
_c_response_head: ResponseHead = select_response_head(speedups_wanted())


def _http_scope_py(
    params: Mapping[bytes, bytes], root_path_setting: bytes | None, state: dict[str, Any]
) -> dict[str, Any]:
    """The ``http`` scope of a request (see the module docstring), without ``fcgi.data``.

    The reference of the C accelerator's ``http_scope``, which builds the same dict for the
    common requests and declines (returns ``None``) the rest.
    """
    get = params.get
    script_name, path_info, raw_path, query_string = split_path(params, root_path_setting)
    full = script_name + path_info if script_name else path_info
    try:
        root_path = script_name.decode("utf-8")
        path = full.decode("utf-8")
    except UnicodeDecodeError:  # both as latin-1, so root_path stays a prefix of path
        root_path = script_name.decode("latin-1")
        path = full.decode("latin-1")
    if raw_path is None:
        raw_path = quote_from_bytes(full, "/:@!$&'()*+,;=~").encode("ascii")

    parts = _scope_parts_py(params, _HEADER_NAMES, _CONTENT_HEADERS)
    if parts is None:  # a param name not seen before
        _translate_headers(params)
        parts = _scope_parts_py(params, _HEADER_NAMES, _CONTENT_HEADERS)
        if parts is None:  # the name cache is full: translate every time
            parts = _scope_parts_py(params, _translate_all(params), _CONTENT_HEADERS)
            assert parts is not None
    headers, client, server = parts
    content_length = get(b"CONTENT_LENGTH")
    if content_length and parse_length(content_length) is None:
        # An unknown length (Caddy's -1, anything not digits) is no header: the body is read
        # to its end, and the application never sees a value the adapter did not accept.
        headers = [header for header in headers if header[0] != b"content-length"]
    raw_params = params
    for stripped in STRIPPED_PARAMS:
        if stripped in params:  # rare: copy only when there is something to hide
            raw_params = {k: v for k, v in params.items() if k not in STRIPPED_PARAMS}
            break
    extensions: dict[str, Any] = {"http.response.pathsend": {}, "fcgi.params": raw_params}
    https = get(b"HTTPS")
    scheme = get(b"REQUEST_SCHEME")
    if https or (scheme and scheme != b"http"):  # the rare case decides at length
        scheme_name = "https" if is_https(params) else "http"
    else:
        scheme_name = "http"
    method = get(b"REQUEST_METHOD") or b"GET"
    return {
        "type": "http",
        "asgi": {"version": _ASGI_VERSION, "spec_version": _HTTP_SPEC_VERSION},
        "http_version": _HTTP_VERSIONS.get(get(b"SERVER_PROTOCOL") or b"", "1.1"),
        "method": _METHODS.get(method) or method.decode("latin-1"),
        "scheme": scheme_name,
        "path": path,
        "raw_path": raw_path,
        "root_path": root_path,
        "query_string": query_string,
        "headers": headers,
        "client": client,
        "server": server,
        "extensions": extensions,
        "state": state.copy(),
    }


class LifespanFailure(Exception):
    """The application cannot start: its lifespan startup failed.

    Raised by :meth:`ASGIAdapter.startup` when the application sends
    ``lifespan.startup.failed`` (the message carries the application's message), raises after
    reading ``lifespan.startup``, or (with ``lifespan="on"``) does not support lifespan.
    """


class ASGIAdapter:
    """Serve an ASGI 3 application: an :class:`fcgi_async.types.Application`.

    Args:
        app: the ASGI 3 application (``async def app(scope, receive, send)``).
        lifespan: ``"auto"`` runs the lifespan protocol and tolerates applications that do not
            support it; ``"on"`` requires it; ``"off"`` never runs it.
        root_path: the mount point (``--root-path``); when set, it is ``root_path`` of every
            request whose path lies under it, overriding the web server's SCRIPT_NAME. ``None``
            trusts the web server's SCRIPT_NAME / PATH_INFO split (see :mod:`fcgi_async.cgi`).
        logger: where application errors and lifespan events are logged; defaults to this
            module's logger. Tracebacks are only ever logged, never sent to a client.
    """

    __slots__ = ("_app", "_lifespan", "_lifespan_mode", "_logger", "_root_path", "_state")

    def __init__(
        self,
        app: ASGIApp,
        *,
        lifespan: Literal["auto", "on", "off"] = "auto",
        root_path: str | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if lifespan not in ("auto", "on", "off"):
            raise ValueError(f"lifespan must be 'auto', 'on' or 'off', not {lifespan!r}")
        self._app = app
        self._lifespan_mode = lifespan
        self._root_path = root_path.encode("utf-8") if root_path is not None else None
        self._logger = logger if logger is not None else logging.getLogger(__name__)
        self._state: dict[str, Any] = {}
        self._lifespan: _Lifespan | None = None

    @property
    def app(self) -> ASGIApp:
        """The wrapped ASGI application."""
        return self._app

    @property
    def state(self) -> dict[str, Any]:
        """The lifespan state; each ``http`` scope gets a shallow copy as ``scope["state"]``."""
        return self._state

    async def startup(self) -> None:
        """Run the application's lifespan startup (unless ``lifespan="off"``).

        Raises:
            LifespanFailure: the application reported ``lifespan.startup.failed``, raised while
                starting up, or (``lifespan="on"``) does not support lifespan.
            RuntimeError: called twice without :meth:`shutdown` in between.
        """
        if self._lifespan_mode == "off":
            return
        if self._lifespan is not None:
            raise RuntimeError("ASGIAdapter.startup() called twice")
        self._state = {}
        lifespan = _Lifespan(self._app, self._state, self._logger)
        if await lifespan.startup(required=self._lifespan_mode == "on"):
            self._lifespan = lifespan

    async def shutdown(self) -> None:
        """Run the application's lifespan shutdown, if its startup ran.

        A ``lifespan.shutdown.failed`` or an exception is logged at error level, not raised:
        the server is stopping either way.
        """
        lifespan, self._lifespan = self._lifespan, None
        if lifespan is not None:
            await lifespan.shutdown()

    async def __call__(self, request: Request) -> None:
        """Serve one request: build the scope, run the application, finish the response.

        Never raises because of the application or a gone client (both are logged);
        cancellation propagates.
        """
        params = request.params
        scope = _http_scope(params, self._root_path, self._state, _HEADER_NAMES)
        if scope is None:  # anything unusual for the accelerator: the reference decides
            scope = _http_scope_py(params, self._root_path, self._state)
        if request.role == _FILTER:
            scope["extensions"]["fcgi.data"] = {"receive": request.receive_data}

        cycle = _Cycle(request)
        try:
            await self._app(scope, cycle.receive, cycle.send)
        except Exception as exc:
            await self._app_raised(request, cycle, exc)
        else:
            if cycle.state != _DONE:
                await self._app_returned_early(request, cycle)
        finally:
            cycle.complete()

    async def _app_raised(self, request: Request, cycle: _Cycle, exc: Exception) -> None:
        """Finish a request whose application raised (see the module docstring)."""
        log = self._logger
        where = describe_request(request.params)
        if request.disconnected:
            log.debug("ASGI application stopped after the client disconnected (%s): %r", where, exc)
            return
        if cycle.state == _DONE:
            log.error("Exception in ASGI application after its response (%s)", where, exc_info=exc)
        elif request.response_started:  # not our state: what left decides (500 or fail())
            log.error("Exception in ASGI application mid-response (%s)", where, exc_info=exc)
            request.fail()
        else:
            log.error("Exception in ASGI application (%s)", where, exc_info=exc)
            await self._send_500(request)

    async def _app_returned_early(self, request: Request, cycle: _Cycle) -> None:
        """Finish a request whose application returned without completing its response."""
        log = self._logger
        where = describe_request(request.params)
        if request.disconnected:
            log.debug("ASGI application returned after the client disconnected (%s)", where)
        elif request.response_started:
            log.error("ASGI application returned without completing its response (%s)", where)
            request.fail()
        else:
            what = "sending a response" if cycle.state == _START else "a response body"
            log.error("ASGI application returned without %s (%s)", what, where)
            await self._send_500(request)

    async def _send_500(self, request: Request) -> None:
        """Answer 500 Internal Server Error; a gone client is logged at debug level."""
        try:
            await request.end(INTERNAL_ERROR_RESPONSE)
        except ClientDisconnected as exc:
            self._logger.debug("client disconnected before the 500 response: %r", exc)


# Response states of a cycle. Plain ints: compared on every send().
_START: Final = 0  # nothing received from the application yet
_STARTED: Final = 1  # http.response.start buffered, nothing written
_STREAMING: Final = 2  # the header block was handed to the request, the body is incomplete
_DONE: Final = 3  # the response is complete


class _Cycle:
    """The receive/send pair of one request (ASGI's "connection" for an ``http`` scope)."""

    __slots__ = (
        "_body_done",
        "_done_future",
        "_head",
        "_head_only",
        "_remaining",
        "request",
        "state",
    )

    def __init__(self, request: Request) -> None:
        self.request = request
        self.state: int = _START
        self._head = b""
        self._body_done = False
        # HEAD: the header block and no body (RFC 3875 §4.3.2; HAProxy answers 502 otherwise).
        self._head_only = request.params.get(b"REQUEST_METHOD") == b"HEAD"
        # Bytes of body still expected per CONTENT_LENGTH; -1 unknown; None not parsed yet.
        self._remaining: int | None = None
        self._done_future: asyncio.Future[None] | None = None

    def complete(self) -> None:
        """Mark the response complete: wake receive() calls waiting to report disconnect."""
        fut = self._done_future
        if fut is not None and not fut.done():
            fut.set_result(None)
        self._done_future = None
        self._body_done = True

    async def receive(self) -> Message:
        """The next ``http.request`` message, then ``http.disconnect`` (see module docstring)."""
        if not self._body_done:
            remaining = self._remaining
            if remaining is None:
                remaining = parse_length(self.request.params.get(b"CONTENT_LENGTH"))
                if remaining is None:  # unknown (absent, -1, not digits): read to the end
                    remaining = -1
                if remaining == 0:
                    self._body_done = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            try:
                chunk = await self.request.receive()
            except ClientDisconnected:
                self._body_done = True
                return {"type": "http.disconnect"}
            if not chunk:
                self._body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if remaining >= 0:
                remaining -= len(chunk)
                if remaining <= 0:
                    # The body is complete per CONTENT_LENGTH (excess is cut, as WSGI does).
                    self._body_done = True
                    if remaining < 0:
                        chunk = chunk[:remaining]
                    self._remaining = 0
                    return {"type": "http.request", "body": chunk, "more_body": False}
            self._remaining = remaining
            return {"type": "http.request", "body": chunk, "more_body": True}
        await self._wait_done_or_disconnected()
        return {"type": "http.disconnect"}

    async def _wait_done_or_disconnected(self) -> None:
        """Return once the response is complete or the client is gone."""
        request = self.request
        if self.state == _DONE or request.disconnected:
            return
        fut = self._done_future
        if fut is None:
            fut = self._done_future = asyncio.get_running_loop().create_future()
        gone = asyncio.ensure_future(request.wait_disconnected())
        try:
            await asyncio.wait((fut, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()

    async def send(self, message: Message) -> None:
        """Handle one response message (see module docstring).

        Raises:
            ClientDisconnected: the client went away.
            ValueError: a status or header is malformed or holds CR, LF or NUL.
            RuntimeError: a message out of order or of an unknown type.
        """
        request = self.request
        if request.disconnected:
            raise ClientDisconnected("the client disconnected")
        kind = message["type"]
        state = self.state
        if kind == "http.response.body":
            body = message.get("body", b"")
            if type(body) is not bytes:
                # Checked before anything is written: a wrong type is an application error
                # that still gets a clean 500, not a response broken after its header block.
                body = _as_bytes(body)
            if self._head_only:
                body = b""
            more = message.get("more_body", False)
            # The state changes only once the bytes were handed on: a send that fails leaves
            # the response as unstarted as it was.
            if state == _STARTED:
                head = self._head
                if len(body) >= COPY_HEAD_BELOW:  # a large body is not copied behind the head
                    await request.send_stdout(head)
                    self._head = head = b""
                    self.state = _STREAMING
                if more:
                    await request.send_stdout(head + body if head else body)
                    self._head = b""
                    self.state = _STREAMING
                else:
                    self.complete()
                    await request.end(head + body if head else body)
                    self._head = b""
                    self.state = _DONE
            elif state == _STREAMING:
                if more:
                    # Even an empty (or, for HEAD, discarded) chunk goes through send_stdout:
                    # it raises once the client is gone and yields to the loop regularly, so
                    # an application that only sends can neither spin nor starve the others.
                    await request.send_stdout(body)
                else:
                    self.complete()
                    await request.end(body)
                    self.state = _DONE
            else:
                self._out_of_order(kind)
        elif kind == "http.response.start":
            if state != _START:
                self._out_of_order(kind)
            self._head = _response_head(message)
            self.state = _STARTED
        elif kind == "http.response.pathsend":
            if state != _STARTED:
                self._out_of_order(kind)
            await self._send_file(message["path"])
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} for an http scope")

    def _out_of_order(self, kind: str) -> NoReturn:
        where = ("before http.response.start", "", "", "after the response completed")
        raise RuntimeError(f"unexpected ASGI message {kind!r} {where[self.state]}".rstrip())

    async def _send_file(self, path: str) -> None:
        """Finish the response with a file's content (``http.response.pathsend``)."""
        request = self.request
        if self._head_only:  # the header block alone; the file is not read
            head, self._head = self._head, b""
            self.complete()
            await request.end(head)
            self.state = _DONE
            return
        async with await anyio.open_file(path, "rb") as f:
            block = await f.read(PATHSEND_BLOCK_SIZE)
            while True:
                # A short read of a regular file is its end: small files take one read.
                if len(block) < PATHSEND_BLOCK_SIZE:
                    break
                following = await f.read(PATHSEND_BLOCK_SIZE)
                if not following:
                    break
                if self.state == _STARTED:
                    await request.send_stdout(self._head + block)
                    self._head = b""
                    self.state = _STREAMING
                else:
                    await request.send_stdout(block)
                block = following
        head, self._head = self._head, b""
        self.complete()
        await request.end(head + block)
        self.state = _DONE


def _as_bytes(body: object) -> bytes:
    """A response body as ``bytes``: bytes-like objects are copied, anything else refused.

    Raises:
        TypeError: ``body`` is not bytes-like (a ``str`` most often).
    """
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    raise TypeError(f"ASGI response body must be bytes, not {type(body).__name__}")


def _response_head(message: Message) -> bytes:
    """The CGI header block for an ``http.response.start`` message (C when it can).

    Raises:
        ValueError: the status is not an integer in 200..999, or a header holds CR, LF or NUL.
        TypeError: a header name or value is not bytes-like.
    """
    head = _c_response_head(message["status"], message.get("headers", ()), _STATUS_LINES)
    return head if head is not None else _response_head_py(message)


def _response_head_py(message: Message) -> bytes:
    """The CGI header block for an ``http.response.start`` message: the reference.

    Raises:
        ValueError: the status is not an integer in 200..999, or a header holds CR, LF or NUL.
        TypeError: a header name or value is not bytes-like.
    """
    status = message["status"]
    # 1xx is not a final status: a CGI response with one would leave the client hanging.
    if type(status) is not int or not 200 <= status <= 999:
        raise ValueError(f"invalid ASGI response status {status!r}")
    parts = [_STATUS_LINES.get(status) or b"Status: %d Unknown\r\n" % status]
    for name, value in message.get("headers", ()):
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    head = b"".join(parts)
    # One scan of the whole block instead of six per header: exactly one CR and one LF per line.
    n = (len(parts) + 6) // 4  # the status line, one per header (4 parts each), the blank one
    if head.count(b"\n") != n or head.count(b"\r") != n or b"\0" in head:
        for name, value in message.get("headers", ()):
            if has_forbidden_chars(name) or has_forbidden_chars(value):
                raise ValueError(f"response header holds CR, LF or NUL: {name!r}: {value!r}")
        raise ValueError("response header block holds CR, LF or NUL")
    return head


class _Lifespan:
    """One run of an application's ``lifespan`` scope, from startup to shutdown."""

    __slots__ = (
        "_app",
        "_logger",
        "_queue",
        "_received",
        "_shutdown",
        "_startup",
        "_state",
        "_task",
    )

    def __init__(self, app: ASGIApp, state: dict[str, Any], logger: logging.Logger) -> None:
        self._app = app
        self._state = state
        self._logger = logger
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._received = 0
        loop = asyncio.get_running_loop()
        self._startup: asyncio.Future[Message] = loop.create_future()
        self._shutdown: asyncio.Future[Message] = loop.create_future()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": _ASGI_VERSION, "spec_version": _LIFESPAN_SPEC_VERSION},
            "state": self._state,
        }
        await self._app(scope, self._receive, self._send)

    async def _receive(self) -> Message:
        message = await self._queue.get()
        self._received += 1
        return message

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            fut = self._startup
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            fut = self._shutdown
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} for a lifespan scope")
        if fut.done():
            raise RuntimeError(f"unexpected ASGI message {kind!r}: already answered")
        fut.set_result(message)

    async def startup(self, *, required: bool) -> bool:
        """Run startup; True when the application supports lifespan and started.

        Raises:
            LifespanFailure: see :meth:`ASGIAdapter.startup`.
        """
        self._queue.put_nowait({"type": "lifespan.startup"})
        task = self._task = asyncio.get_running_loop().create_task(self._run())
        await self._wait(self._startup)
        if self._startup.done():
            answer = self._startup.result()
            if answer["type"] == "lifespan.startup.complete":
                self._logger.debug("ASGI lifespan startup complete")
                return True
            await self._reap()
            text = answer.get("message") or "(no message)"
            raise LifespanFailure(f"ASGI lifespan startup failed: {text}")
        exc = task.exception()
        if exc is not None and self._received:
            raise LifespanFailure(f"ASGI lifespan startup raised {exc!r}") from exc
        if required:
            reason = f"raised {exc!r}" if exc is not None else "returned without answering"
            raise LifespanFailure(
                f"lifespan='on' but the ASGI application does not support lifespan: {reason}"
            ) from exc
        self._logger.info("ASGI 'lifespan' protocol appears unsupported; serving without it")
        if exc is not None:
            self._logger.debug("the application's answer to the lifespan scope", exc_info=exc)
        return False

    async def shutdown(self) -> None:
        """Run shutdown; failures are logged, not raised."""
        task = self._task
        assert task is not None
        log = self._logger
        if task.done():
            exc = None if task.cancelled() else task.exception()
            log.error("ASGI lifespan task ended before shutdown", exc_info=exc)
            return
        self._queue.put_nowait({"type": "lifespan.shutdown"})
        await self._wait(self._shutdown)
        if self._shutdown.done():
            answer = self._shutdown.result()
            if answer["type"] == "lifespan.shutdown.failed":
                text = answer.get("message") or "(no message)"
                log.error("ASGI lifespan shutdown failed: %s", text)
            else:
                log.debug("ASGI lifespan shutdown complete")
            await self._reap()
            return
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            log.error("ASGI lifespan shutdown raised", exc_info=exc)
        else:
            log.debug("ASGI lifespan task returned without answering shutdown")

    async def _wait(self, answer: asyncio.Future[Message]) -> None:
        """Wait for the application's answer or the end of its task.

        If we are cancelled meanwhile (a start-up or shutdown timeout), the lifespan task is
        cancelled too rather than left running unowned.
        """
        task = self._task
        assert task is not None
        try:
            await asyncio.wait((task, answer), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise

    async def _reap(self) -> None:
        """Collect the lifespan task once it has answered; cancel it if it lingers."""
        task = self._task
        assert task is not None
        if not task.done():
            await asyncio.sleep(0)
        if not task.done():
            task.cancel()
        await asyncio.wait((task,))
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            self._logger.debug("ASGI lifespan task ended with %r", exc)
