"""httpx transports that send ordinary HTTP requests to a FastCGI server.

``httpx`` is an optional dependency (the ``fcgi-async[client]`` extra); this module is imported
lazily by :mod:`fcgi_async.client` and fails with a message naming the extra when it is missing.

The sync transport runs a private asyncio event loop in one daemon thread and drives the same
async client from the calling thread through ``asyncio.run_coroutine_threadsafe``; its pool
lives in that thread, so the transport may be shared by several threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "fcgi_async.client.FastCGITransport needs httpx: pip install 'fcgi-async[client]'"
    ) from exc

from .address import Address
from .balancer import FastCGIBalancer
from .errors import (
    ConnectError,
    ConnectionLost,
    FastCGIError,
    PoolClosed,
    ProtocolError,
    RequestRejected,
    ResponseTooLarge,
    Timeout,
)
from .params import DEFAULT_SPLIT_PATH_INFO, build_params
from .pool import Body, FastCGIClient
from .response import StreamingResponse
from .timeouts import Timeouts

T = TypeVar("T")


def map_error(exc: FastCGIError, request: httpx.Request) -> httpx.TransportError:
    """Return the httpx exception that stands for a client error (raise it ``from exc``)."""
    msg = str(exc)
    if isinstance(exc, Timeout):
        cls: type[httpx.TransportError] = {
            "connect": httpx.ConnectTimeout,
            "pool": httpx.PoolTimeout,
            "write": httpx.WriteTimeout,
        }.get(exc.phase, httpx.ReadTimeout)
        return cls(msg, request=request)
    if isinstance(exc, ConnectError):
        return httpx.ConnectError(msg, request=request)
    if isinstance(exc, ConnectionLost):
        return httpx.ReadError(msg, request=request)
    # A response past a size limit is the server's fault, like h11's "header too large".
    if isinstance(exc, ProtocolError | RequestRejected | ResponseTooLarge):
        return httpx.RemoteProtocolError(msg, request=request)
    if isinstance(exc, PoolClosed):
        return httpx.TransportError(msg, request=request)
    return httpx.TransportError(msg, request=request)


class _Builder:
    """Turns httpx requests into CGI params: the configuration both transports share."""

    def __init__(
        self,
        *,
        script_filename: str | None,
        document_root: str | None,
        split_path_info: str | None,
        params: Mapping[str, str | bytes | None] | None,
        remote_addr: str,
        remote_port: int,
        server_addr: str,
        request_buffering: bool,
    ) -> None:
        self.request_buffering = request_buffering
        self.script_filename = script_filename
        self.document_root = document_root
        self.split_path_info = split_path_info
        self.extra = dict(params or {})
        self.remote_addr = remote_addr
        self.remote_port = remote_port
        self.server_addr = server_addr

    def buffers(self, request: httpx.Request) -> bool:
        """True when a streamed body of unknown length is read whole before sending."""
        return self.request_buffering and "content-length" not in request.headers

    def params(self, request: httpx.Request, length: int | None = None) -> dict[str, bytes]:
        """The CGI params for ``request``; ``length`` is the size of a buffered body."""
        url = request.url
        extra = self.extra
        if length is not None:
            # The body was de-chunked here, as nginx does with fastcgi_request_buffering on.
            extra = {**extra, "CONTENT_LENGTH": str(length), "HTTP_TRANSFER_ENCODING": None}
        per_request = request.extensions.get("fastcgi_params")
        if per_request:
            extra = {**extra, **per_request}
        try:
            return build_params(
                request.method,
                url.raw_path,
                headers=request.headers.raw,
                scheme=url.scheme,
                server_name=url.host,
                server_port=url.port,
                server_addr=self.server_addr,
                remote_addr=self.remote_addr,
                remote_port=self.remote_port,
                script_filename=self.script_filename,
                document_root=self.document_root,
                split_path_info=self.split_path_info,
                extra=extra,
            )
        except ValueError as exc:
            raise httpx.LocalProtocolError(str(exc), request=request) from None

    @staticmethod
    def timeouts(request: httpx.Request, default: Timeouts) -> Timeouts:
        given = request.extensions.get("timeout")
        if not isinstance(given, dict):
            return default
        return Timeouts(
            connect=given.get("connect", default.connect),
            pool=given.get("pool", default.pool),
            read=given.get("read", default.read),
            write=given.get("write", default.write),
            total=default.total,
        )


def _response(
    response: StreamingResponse, stream: httpx.AsyncByteStream | httpx.SyncByteStream
) -> httpx.Response:
    return httpx.Response(
        response.status_code,
        headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers],
        stream=stream,
        extensions={
            "http_version": b"HTTP/1.1",
            "reason_phrase": response.reason.encode("latin-1"),
            "fastcgi_response": response,
        },
    )


class _AsyncResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: StreamingResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except FastCGIError as exc:
            raise map_error(exc, self._request) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class FastCGITransport(httpx.AsyncBaseTransport):
    """An httpx async transport that speaks FastCGI to one server, like a web server would.

    Args:
        address: the FastCGI server (``unix:PATH``, ``HOST:PORT``, ``[V6]:PORT``), or a list
            of them (a :class:`FastCGIBalancer` is made over them); or pass ``client``.
        client: an existing :class:`FastCGIClient` or :class:`FastCGIBalancer` to send
            through (not closed by the transport).
        script_filename: run this script for every request (a front controller).
        document_root: DOCUMENT_ROOT, and the directory SCRIPT_FILENAME is looked up in.
        split_path_info: regex splitting the path into SCRIPT_NAME and PATH_INFO.
        params: params added to (or, with ``None``, removed from) every request. A request's
            ``extensions={"fastcgi_params": {...}}`` adds more for that request.
        remote_addr, remote_port: the client address the application sees.
        server_addr: SERVER_ADDR.
        request_buffering: read a streamed request body without ``Content-Length`` whole and
            send it with CONTENT_LENGTH, as nginx does by default (php-fpm ignores a body
            without CONTENT_LENGTH). ``False`` streams it with an empty CONTENT_LENGTH (nginx's
            ``fastcgi_request_buffering off``), which suits servers that read STDIN to its end.
        **client_options: passed to :class:`FastCGIClient` (or :class:`FastCGIBalancer`, e.g.
            ``strategy``, ``retry_after``) when ``client`` is not given.

    The response's ``extensions["fastcgi_response"]`` is the underlying
    :class:`StreamingResponse` (its ``stderr`` is complete once the body was read). Errors are
    raised as httpx exceptions (``ConnectError``, ``ReadTimeout``, ``RemoteProtocolError``...)
    chained to the client's own.
    """

    def __init__(
        self,
        address: str | Address | Sequence[str | Address] | None = None,
        *,
        client: FastCGIClient | FastCGIBalancer | None = None,
        script_filename: str | None = None,
        document_root: str | None = None,
        split_path_info: str | None = DEFAULT_SPLIT_PATH_INFO,
        params: Mapping[str, str | bytes | None] | None = None,
        remote_addr: str = "127.0.0.1",
        remote_port: int = 0,
        server_addr: str = "127.0.0.1",
        request_buffering: bool = True,
        **client_options: Any,
    ) -> None:
        if client is None:
            if address is None:
                raise TypeError("FastCGITransport needs an address or a client")
            if isinstance(address, str | Address):
                client = FastCGIClient(address, **client_options)
            else:
                client = FastCGIBalancer(address, **client_options)
            self._owns_client = True
        else:
            self._owns_client = False
        self.client: FastCGIClient | FastCGIBalancer = client
        self._builder = _Builder(
            script_filename=script_filename,
            document_root=document_root,
            split_path_info=split_path_info,
            params=params,
            remote_addr=remote_addr,
            remote_port=remote_port,
            server_addr=server_addr,
            request_buffering=request_buffering,
        )

    async def open(
        self, request: httpx.Request, body: Body, length: int | None = None
    ) -> StreamingResponse:
        """Send ``request`` with ``body``; return the FastCGI response (head read).

        ``length`` is the size of a body that was buffered to learn it (CONTENT_LENGTH).

        Raises:
            httpx.TransportError: mapped from the client's errors.
        """
        params = self._builder.params(request, length)
        timeouts = self._builder.timeouts(request, self.client.timeouts)
        try:
            return await self.client.send(params, body, timeouts=timeouts)
        except FastCGIError as exc:
            raise map_error(exc, request) from exc

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send an httpx request over FastCGI and return its streaming response."""
        stream = request.stream
        body: Body
        length: int | None = None
        if isinstance(stream, httpx.ByteStream):
            body = b"".join(stream)
        elif isinstance(stream, httpx.AsyncByteStream):
            if self._builder.buffers(request):
                body = b"".join([chunk async for chunk in stream])
                length = len(body)
            else:
                body = stream
        else:
            raise RuntimeError("FastCGITransport needs an async request stream")
        response = await self.open(request, body, length)
        return _response(response, _AsyncResponseStream(response, request))

    async def aclose(self) -> None:
        """Close the client (unless it was passed in)."""
        if self._owns_client:
            await self.client.aclose()


class _SyncResponseStream(httpx.SyncByteStream):
    def __init__(
        self,
        transport: FastCGISyncTransport,
        response: StreamingResponse,
        request: httpx.Request,
    ) -> None:
        self._transport = transport
        self._response = response
        self._request = request

    async def _chunks(self) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except FastCGIError as exc:
            raise map_error(exc, self._request) from exc

    def __iter__(self) -> Iterator[bytes]:
        agen = self._chunks()
        try:
            while True:
                try:
                    chunk = self._transport._call(agen.__anext__())
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            self._transport._call(agen.aclose())

    def close(self) -> None:
        self._transport._call(self._response.aclose())


class FastCGISyncTransport(httpx.BaseTransport):
    """The blocking twin of :class:`FastCGITransport`, for ``httpx.Client``.

    It owns a private event loop running in a daemon thread (named ``fcgi-async-client``) that
    holds the connection pool; every call blocks the calling thread until the loop answers.
    Arguments as for :class:`FastCGITransport` (``client`` is not accepted: a client belongs
    to one loop). Call :meth:`close` (``httpx.Client`` does) to stop the thread.
    """

    def __init__(self, address: str | Address | Sequence[str | Address], **options: Any) -> None:
        if "client" in options:
            raise TypeError("FastCGISyncTransport creates its own client; pass an address")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fcgi-async-client", daemon=True
        )
        self._thread.start()
        self._closed = False
        self._async = FastCGITransport(address, **options)

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send an httpx request over FastCGI, blocking until the response head arrived."""
        stream = request.stream
        body: Body
        length: int | None = None
        if isinstance(stream, httpx.ByteStream):
            body = b"".join(stream)
        elif isinstance(stream, httpx.SyncByteStream):
            if self._async._builder.buffers(request):
                body = b"".join(stream)
                length = len(body)
            else:
                body = _iterate_in_thread(iter(stream))
        else:
            raise RuntimeError("FastCGISyncTransport needs a sync request stream")
        response: StreamingResponse = self._call(self._async.open(request, body, length))
        return _response(response, _SyncResponseStream(self, response, request))

    def close(self) -> None:
        """Close the pool and stop the loop thread."""
        if self._closed:
            return
        self._closed = True
        self._call(self._async.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        self._loop.close()


async def _iterate_in_thread(it: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Pull a blocking iterator from a worker thread so the loop thread never blocks."""
    done = object()
    while True:
        chunk = await asyncio.to_thread(next, it, done)
        if chunk is done:
            return
        assert isinstance(chunk, bytes)
        yield chunk
