"""FastCGIApp against FastCGI servers that fail: every fault is a 502/504 or a cut response,
with one log line, and never a hang.

The servers are fakes on 127.0.0.1 port 0 (refusing, closing early or late, answering
OVERLOADED or garbage, or never answering); the app is called directly with ASGI messages, or
through its WSGI twin.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from fcgi_async import _compat
from fcgi_async.client import ConnectionLost, FastCGIApp, FastCGIWSGIApp, Timeouts
from fcgi_async.protocol import (
    NEED_DATA,
    RequestReceived,
    ServerConnection,
    StdinEnded,
    StdinReceived,
)
from tests.client.fakes import fake_server
from tests.protocol.helpers import raw_record

#: Every test is over well within this; a hang fails the test instead of the suite.
BOUND_S = 30.0
FAST = Timeouts(connect=5.0, pool=5.0, read=0.5, write=5.0)
SCRIPT = "/srv/legacy/index.php"  # script_filename: no file lookups, any path runs it

FCGI_END_REQUEST = 3
OVERLOADED = 2


def app_for(address: str, **options: Any) -> FastCGIApp:
    """A proxy app that skips GET_VALUES (the fakes answer one request per connection)."""
    return FastCGIApp(address, script_filename=SCRIPT, multiplex=False, **options)


async def call(
    app: FastCGIApp,
    path: str = "/legacy/page",
    *,
    body: list[bytes] | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    disconnect: bool = False,
) -> list[dict[str, Any]]:
    """Run one ASGI request; return what the app sent. ``disconnect`` ends the body with
    ``http.disconnect`` instead of its last part."""
    parts = list(body or [b""])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if parts:
            chunk = parts.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(parts) or disconnect}
        if not disconnect:
            await asyncio.Event().wait()  # as a server does: nothing until the client leaves
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST" if body else "GET",
        "scheme": "http",
        "path": path,
        "query_string": b"",
        "root_path": "/legacy",
        "headers": headers or [(b"host", b"example.test")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    async with _compat.timeout(BOUND_S):
        await app(scope, receive, send)
    return sent


def error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "fcgi_async.client" and r.levelno >= logging.ERROR
    ]


@contextlib.asynccontextmanager
async def raw_server(
    answer: Callable[[int], bytes | None],
) -> AsyncIterator[str]:
    """A server that reads the first record of each connection and writes ``answer(request
    id)`` (``None``: never answers). Yields its address."""
    writers: list[asyncio.StreamWriter] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            head = await reader.readexactly(8)
            reply = answer(int.from_bytes(head[2:4], "big"))
            if reply is not None:
                writer.write(reply)
                await writer.drain()
            await reader.read()  # until the client closes
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(on_client, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    finally:
        srv.close()
        for writer in writers:
            writer.close()
        with contextlib.suppress(TimeoutError):
            async with _compat.timeout(2):
                await srv.wait_closed()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def check_gateway_error(
    app: FastCGIApp, status: int, caplog: pytest.LogCaptureFixture, reason: str
) -> None:
    try:
        sent = await call(app)
    finally:
        await app.aclose()
    assert sent[0]["status"] == status
    assert sent[1]["body"].startswith(f"{status} ".encode())
    lines = error_lines(caplog)
    assert len(lines) == 1, lines
    assert str(app.client.address) in lines[0]
    assert f"-> {status}" in lines[0]
    assert reason in lines[0]


async def test_refused_connection_is_502(caplog: pytest.LogCaptureFixture) -> None:
    await check_gateway_error(app_for(f"127.0.0.1:{free_port()}"), 502, caplog, "cannot connect")


async def test_close_before_the_head_is_502(caplog: pytest.LogCaptureFixture) -> None:
    async with fake_server(close_mid_response=True) as server:
        await check_gateway_error(app_for(server.address), 502, caplog, "GET /legacy/page")


async def test_overloaded_is_502(caplog: pytest.LogCaptureFixture) -> None:
    def overloaded(rid: int) -> bytes:
        return raw_record(FCGI_END_REQUEST, rid, bytes((0, 0, 0, 0, OVERLOADED, 0, 0, 0)))

    async with raw_server(overloaded) as address:
        await check_gateway_error(app_for(address), 502, caplog, "overloaded")


async def test_garbage_is_502(caplog: pytest.LogCaptureFixture) -> None:
    async with raw_server(lambda rid: b"HTTP/1.1 200 OK\r\n\r\nnot FastCGI at all") as address:
        await check_gateway_error(app_for(address), 502, caplog, "GET /legacy/page")


async def test_malformed_cgi_head_is_502(caplog: pytest.LogCaptureFixture) -> None:
    async with fake_server(response=b"no colon here\r\n\r\nbody") as server:
        await check_gateway_error(app_for(server.address), 502, caplog, "malformed")


async def test_silent_server_is_504(caplog: pytest.LogCaptureFixture) -> None:
    async with raw_server(lambda rid: None) as address:
        await check_gateway_error(app_for(address, timeouts=FAST), 504, caplog, "timeout")


async def test_close_after_the_head_cuts_the_response(caplog: pytest.LogCaptureFixture) -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    # The fake sends the first 20 bytes, then closes: the head and two body bytes.
    body = b"Status: 200 OK\n\nab" + b"c" * 40
    async with fake_server(close_mid_response=True, response=body) as s:
        app = app_for(s.address)
        try:
            async with _compat.timeout(BOUND_S):
                with pytest.raises(ConnectionLost):
                    await app(
                        {"type": "http", "method": "GET", "path": "/p", "headers": []},
                        _empty_body,
                        send,
                    )
        finally:
            await app.aclose()
    assert sent[0]["status"] == 200
    assert sent[1]["body"] == b"abcc"  # the 20 bytes sent: a 16-byte head, 4 of the body
    assert all(m.get("more_body") for m in sent[1:])  # never completed: the server cuts it
    lines = error_lines(caplog)
    assert len(lines) == 1
    assert "200 cut short" in lines[0]


async def _empty_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def wsgi_environ(**extra: Any) -> dict[str, Any]:
    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "/legacy",
        "PATH_INFO": "/x",
        "wsgi.input": io.BytesIO(),
        "wsgi.url_scheme": "http",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
    }
    environ.update(extra)
    return environ


def run_wsgi(app: FastCGIWSGIApp, environ: dict[str, Any]) -> tuple[list[str], bytes]:
    """Serve one request as a WSGI server would (in its own thread); body errors propagate."""
    statuses: list[str] = []
    result = app(environ, lambda status, headers: statuses.append(status))
    chunks: list[bytes] = []
    try:
        for chunk in result:
            chunks.append(chunk)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return statuses, b"".join(chunks)


async def test_wsgi_close_after_the_head_raises_from_the_body(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = b"Status: 200 OK\n\nab" + b"c" * 40
    async with fake_server(close_mid_response=True, response=body) as server:
        app = FastCGIWSGIApp(server.address, script_filename=SCRIPT, multiplex=False)
        try:
            async with _compat.timeout(BOUND_S):
                with pytest.raises(ConnectionLost):
                    await asyncio.to_thread(run_wsgi, app, wsgi_environ())
        finally:
            await asyncio.to_thread(app.close)
    lines = error_lines(caplog)
    assert len(lines) == 1
    assert "200 cut short" in lines[0]


async def test_wsgi_short_body_is_400() -> None:
    async with fake_server() as server:
        app = FastCGIWSGIApp(server.address, script_filename=SCRIPT, multiplex=False)
        environ = wsgi_environ(
            REQUEST_METHOD="POST", CONTENT_LENGTH="100", **{"wsgi.input": io.BytesIO(b"short")}
        )
        try:
            async with _compat.timeout(BOUND_S):
                statuses, _ = await asyncio.to_thread(run_wsgi, app, environ)
        finally:
            await asyncio.to_thread(app.close)
    assert statuses == ["400 Bad Request"]


async def test_client_gone_mid_body_aborts_quietly(caplog: pytest.LogCaptureFixture) -> None:
    async with fake_server() as server:
        app = app_for(server.address)
        try:
            sent = await call(
                app,
                body=[b"a" * 10, b"b" * 10],
                headers=[(b"content-length", b"1000")],
                disconnect=True,
            )
        finally:
            await app.aclose()
    assert sent == []
    assert error_lines(caplog) == []


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_stalled_body_is_408(declared: bool, caplog: pytest.LogCaptureFixture) -> None:
    # The client sends a first piece of its body, then nothing: the proxy gives up after
    # body_timeout (and the php-fpm request, already started for a declared length, is aborted).
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b"a" * 10, "more_body": True}
        await asyncio.Event().wait()  # a client that stalls
        raise AssertionError("unreachable")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"content-length", b"1000")] if declared else [(b"transfer-encoding", b"chunked")]
    async with fake_server() as server:
        app = app_for(server.address, body_timeout=0.3)
        scope = {"type": "http", "method": "POST", "path": "/p", "headers": headers}
        try:
            async with _compat.timeout(BOUND_S):
                await app(scope, receive, send)
        finally:
            await app.aclose()
    assert sent[0]["status"] == 408
    lines = [r.getMessage() for r in caplog.records if r.name == "fcgi_async.client"]
    assert len(lines) == 1
    assert "body_timeout=0.3 s" in lines[0]
    assert server.requests == (1 if declared else 0)  # chunked: php-fpm never contacted


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), 8 * 24 * 3600.0])
def test_body_timeout_is_bounded(value: float) -> None:
    with pytest.raises(ValueError, match="body_timeout"):
        FastCGIApp("127.0.0.1:9000", script_filename=SCRIPT, body_timeout=value)


@contextlib.asynccontextmanager
async def head_first_server(resume: asyncio.Event) -> AsyncIterator[tuple[str, list[int]]]:
    """A responder that sends its head as soon as the params arrived, then reads nothing more
    until ``resume`` is set, and ends its answer once the request body ended. Yields its
    address and the body sizes it received."""
    sizes: list[int] = []
    writers: list[asyncio.StreamWriter] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        codec = ServerConnection(multiplex=False)
        size = 0
        try:
            while data := await reader.read(65536):
                codec.receive_data(data)
                while (event := codec.next_event()) is not NEED_DATA:
                    if isinstance(event, RequestReceived):
                        writer.writelines(codec.send_stdout(event.request_id, b"Status: 200\n\n"))
                        await writer.drain()
                        await resume.wait()
                    elif isinstance(event, StdinReceived):
                        size += len(event.data)
                    elif isinstance(event, StdinEnded):
                        sizes.append(size)
                        writer.writelines(codec.end_request(event.request_id, b"got it"))
                        await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(on_client, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{srv.sockets[0].getsockname()[1]}", sizes
    finally:
        srv.close()
        for writer in writers:
            writer.close()
        with contextlib.suppress(TimeoutError):
            async with _compat.timeout(2):
                await srv.wait_closed()


async def test_head_before_a_spooled_body_was_sent(caplog: pytest.LogCaptureFixture) -> None:
    # The head reaches the client while the proxy is still sending a chunked body from its
    # temporary file (the server reads nothing more until then; 16 MB outlasts the socket
    # buffers): the file must stay open until the exchange is over, not only until the head.
    parts = [b"z" * 100_000] * 160
    resume = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if parts:
            return {"type": "http.request", "body": parts.pop(), "more_body": bool(parts)}
        await asyncio.Event().wait()  # no disconnect
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        resume.set()

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/p",
        "headers": [(b"transfer-encoding", b"chunked")],
    }
    async with head_first_server(resume) as (address, sizes):
        app = app_for(address)
        try:
            async with _compat.timeout(BOUND_S):
                await app(scope, receive, send)
        finally:
            await app.aclose()
    assert sizes == [16_000_000]
    assert sent[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"got it"
    assert error_lines(caplog) == []


async def test_a_down_php_fpm_does_not_flood_the_log(caplog: pytest.LogCaptureFixture) -> None:
    app = app_for(f"127.0.0.1:{free_port()}")
    now = 1000.0
    app._gateway.clock = lambda: now
    try:
        statuses = [(await call(app))[0]["status"] for _ in range(5)]
        assert statuses == [502] * 5
        assert len(error_lines(caplog)) == 1  # the first; four counted
        now += 10.0  # FAILURE_LOG_INTERVAL_S later
        assert (await call(app))[0]["status"] == 502
    finally:
        await app.aclose()
    lines = error_lines(caplog)
    assert len(lines) == 2
    assert lines[1].endswith("(4 more like it not logged)")
