"""The async client and its pool against our own server (and a few faulty fakes)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fcgi_async import _compat
from fcgi_async.client import (
    CantMultiplex,
    ConnectError,
    ConnectionLost,
    FastCGIClient,
    Overloaded,
    PoolClosed,
    ProtocolError,
    Timeout,
    Timeouts,
    UnknownRole,
    build_params,
    get_values,
)
from fcgi_async.client.connection import MAX_BUFFERED_RESPONSE_BYTES, READ_CHUNK
from fcgi_async.protocol import RecordType, Role
from fcgi_async.types import Request

from .conftest import read_body, recording_proxy, serve
from .fakes import fake_server

pytestmark = pytest.mark.timeout(30)

OK = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n"


async def hello(request: Request) -> None:
    body = await read_body(request)
    uri = request.params.get(b"REQUEST_URI", b"")
    await request.end(OK + uri + b" " + str(len(body)).encode())


async def test_request_and_get_values() -> None:
    async with serve(hello) as (_, address, _app), FastCGIClient(address) as client:
        response = await client.request(build_params("POST", "/a?b"), b"xyz")
        assert (response.status_code, response.reason, response.body) == (200, "OK", b"/a?b 3")
        assert response.get_header("content-type") == "text/plain"
        assert client.multiplexing is True
        values = await client.get_values()
        assert values["FCGI_MPXS_CONNS"] == "1"
        assert int(values["FCGI_MAX_CONNS"]) >= 1
        assert await get_values(address, ["FCGI_MPXS_CONNS", "NOPE"]) == {"FCGI_MPXS_CONNS": "1"}


async def test_multiplexed_requests_interleave_on_one_connection() -> None:
    n = 5
    started = 0
    all_started = asyncio.Event()

    async def app(request: Request) -> None:
        nonlocal started
        await read_body(request)
        await request.send_stdout(OK + b"part1-")
        started += 1
        if started == n:
            all_started.set()
        await all_started.wait()
        await request.end(b"part2-" + request.params[b"REQUEST_URI"])

    async with serve(app) as (server, address, _), recording_proxy(address) as proxy:
        async with FastCGIClient(proxy.address) as client:
            responses = await asyncio.gather(
                *(client.request(build_params("POST", f"/{i}"), b"body") for i in range(n))
            )
            assert [r.body for r in responses] == [b"part1-part2-/%d" % i for i in range(n)]
            assert len(client.connections) == 1
            assert client.connections[0].served == n
            # GET_VALUES is asked once per pool: later requests go straight to connection 1.
            started, all_started = 0, asyncio.Event()
            again = await asyncio.gather(
                *(client.request(build_params("GET", f"/{i}")) for i in range(n))
            )
            assert [r.body for r in again] == [b"part1-part2-/%d" % i for i in range(n)]
            assert client.connections[0].served == 2 * n
        # Connection 0 asked GET_VALUES; connection 1 carried every request.
        assert len(proxy.upstream) == 2
        assert [r.type for r in proxy.records_up(0)] == [RecordType.GET_VALUES]
        up = proxy.records_up(1)
        begins = [r.request_id for r in up if r.type == RecordType.BEGIN_REQUEST]
        assert sorted(begins[:n]) == list(range(1, n + 1))
        assert len(begins) == 2 * n
        down = [r.request_id for r in proxy.records_down(1) if r.type == RecordType.STDOUT]
        # Every request sent part1 before any sent part2: the ids interleave on the wire.
        first_ids = down[:n]
        assert sorted(first_ids) == list(range(1, n + 1))
        assert sorted(set(down[n:])) == list(range(1, n + 1))
        assert server.state.total_requests == 2 * n


async def test_keep_alive_reuses_one_connection() -> None:
    async with serve(hello) as (server, address, _), recording_proxy(address) as proxy:
        async with FastCGIClient(proxy.address, multiplex=False) as client:
            for i in range(5):
                response = await client.request(build_params("GET", f"/{i}"))
                assert response.body == b"/%d 0" % i
            (conn,) = client.connections
            assert conn.served == 5
        assert len(proxy.upstream) == 1
        assert server.state.total_requests == 5
        async with FastCGIClient(proxy.address, multiplex=False, keepalive_expiry=0) as client:
            for _ in range(3):
                await client.request({})
            assert client.connections == []
        assert len(proxy.upstream) == 4


async def test_connection_limit_without_multiplexing() -> None:
    peak = 0
    running = 0

    async def app(request: Request) -> None:
        nonlocal peak, running
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        await request.end(OK + b"ok")

    async with (
        serve(app, multiplex=False) as (_server, address, _),
        FastCGIClient(address, max_connections=2) as client,
    ):
        responses = await asyncio.gather(*(client.request({}) for _ in range(8)))
        assert all(r.body == b"ok" for r in responses)
        assert client.multiplexing is False
        assert peak == 2
        assert len(client.connections) == 2


async def test_streaming_both_ways() -> None:
    async def echo(request: Request) -> None:
        await request.send_stdout(OK)
        while chunk := await request.receive():
            await request.send_stdout(chunk.upper())
        await request.end(b"|end")

    async with serve(echo) as (_, address, _app), FastCGIClient(address) as client:
        echoed = asyncio.Queue[bytes]()

        async def body() -> AsyncIterator[bytes]:
            for i in range(5):
                yield b"chunk%d;" % i
                # The next chunk leaves only once the echo of this one came back.
                assert await echoed.get() == b"CHUNK%d;" % i

        async with client.stream(build_params("POST", "/"), body()) as response:
            assert response.status_code == 200
            rest = b""
            async for chunk in response.aiter_bytes():
                if chunk.startswith(b"CHUNK"):
                    await echoed.put(chunk)
                else:
                    rest += chunk
            assert rest == b"|end"
            assert response.app_status == 0


async def test_large_bodies_both_ways() -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB

    async def echo(request: Request) -> None:
        body = await read_body(request)
        await request.send_stdout(OK)
        for start in range(0, len(body), 300_000):
            await request.send_stdout(body[start : start + 300_000])
        await request.end()

    async with serve(echo) as (_, address, _app), FastCGIClient(address) as client:
        results = await asyncio.gather(*(client.request({}, payload) for _ in range(3)))
        assert all(r.body == payload for r in results)


async def test_response_parsing_stderr_cookies_location() -> None:
    async def app(request: Request) -> None:
        await request.send_stderr(b"warning: something\n")
        await request.end(
            b"Location: /next\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n", app_status=3
        )

    async with serve(app) as (_, address, _app), FastCGIClient(address) as client:
        response = await client.request({})
        assert response.status_code == 302
        assert response.reason == "Found"
        assert response.get_headers("set-cookie") == ["a=1", "b=2"]
        assert response.stderr == b"warning: something\n"
        assert response.app_status == 3


async def test_malformed_responses_are_protocol_errors() -> None:
    bodies = iter([b"not a header line\r\n\r\n", b"", b"Status: abc\r\n\r\n", OK + b"fine"])

    async def app(request: Request) -> None:
        await request.send_stderr(b"boom")
        await request.end(next(bodies))

    async with serve(app) as (_, address, _app), FastCGIClient(address) as client:
        with pytest.raises(ProtocolError, match="malformed CGI header"):
            await client.request({})
        with pytest.raises(ProtocolError, match="stderr: boom"):
            await client.request({})
        with pytest.raises(ProtocolError, match="Status"):
            await client.request({})
        assert (await client.request({})).body == b"fine"


async def test_cancel_sends_abort_when_multiplexing() -> None:
    gone = asyncio.Event()
    entered = asyncio.Event()

    async def app(request: Request) -> None:
        if request.params.get(b"REQUEST_URI") == b"/slow":
            await request.send_stdout(OK + b"partial")
            entered.set()
            await request.wait_disconnected()
            gone.set()
            return
        await request.end(OK + b"fast")

    async with serve(app) as (_, address, _app), recording_proxy(address) as proxy:
        async with FastCGIClient(proxy.address) as client:
            task = asyncio.create_task(client.request(build_params("GET", "/slow")))
            await entered.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with _compat.timeout(5):
                await gone.wait()
            # The same connection still serves requests.
            assert (await client.request(build_params("GET", "/x"))).body == b"fast"
            (conn,) = client.connections
            assert conn.served == 2
        types = [r.type for r in proxy.records_up(1)]
        assert RecordType.ABORT_REQUEST in types


async def test_cancel_closes_the_connection_when_not_multiplexing() -> None:
    """Without multiplexing there is no ABORT_REQUEST: the connection is closed, which the
    server (like nginx's client abort) sees as a disconnect; the pool then uses a new one."""
    gone = asyncio.Event()
    entered = asyncio.Event()

    async def app(request: Request) -> None:
        if request.params.get(b"REQUEST_URI") == b"/slow":
            await request.send_stdout(OK + b"partial")
            entered.set()
            await request.wait_disconnected()
            gone.set()
            return
        await request.end(OK + b"fast")

    async with serve(app) as (_, address, _app), recording_proxy(address) as proxy:
        async with FastCGIClient(proxy.address, multiplex=False) as client:
            task = asyncio.create_task(client.request(build_params("GET", "/slow")))
            async with _compat.timeout(5):
                await entered.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with _compat.timeout(5):
                await gone.wait()
            assert (await client.request(build_params("GET", "/x"))).body == b"fast"
            assert [c.served for c in client.connections] == [1]
        assert len(proxy.upstream) == 2
        assert RecordType.ABORT_REQUEST not in [r.type for r in proxy.records_up(0)]


async def test_closing_a_stream_early_closes_a_plain_connection() -> None:
    gone = asyncio.Event()

    async def app(request: Request) -> None:
        await request.send_stdout(OK + b"x" * 1000)
        await request.wait_disconnected()
        gone.set()

    async with serve(app) as (_, address, _app), FastCGIClient(address, multiplex=False) as client:
        async with client.stream({}) as response:
            assert response.status_code == 200
        async with _compat.timeout(5):
            await gone.wait()
        assert client.connections == [] or all(c.is_closed() for c in client.connections)


async def test_timeouts() -> None:
    seen_disconnect = asyncio.Event()

    async def app(request: Request) -> None:
        await request.wait_disconnected()
        seen_disconnect.set()

    async with serve(app) as (_, address, _app), FastCGIClient(address) as client:
        with pytest.raises(Timeout) as info:
            await client.request({}, timeout=0.2)
        assert info.value.phase == "total"
        async with _compat.timeout(5):
            await seen_disconnect.wait()
        seen_disconnect.clear()
        with pytest.raises(Timeout) as info:
            await client.request({}, timeouts=Timeouts(read=0.1))
        assert info.value.phase == "read"
        async with _compat.timeout(5):
            await seen_disconnect.wait()


async def test_pool_timeout() -> None:
    release = asyncio.Event()

    async def app(request: Request) -> None:
        await release.wait()
        await request.end(OK + b"done")

    async with (
        serve(app) as (_, address, _app),
        FastCGIClient(address, multiplex=False, max_connections=1) as client,
    ):
        first = asyncio.create_task(client.request({}))
        await asyncio.sleep(0)
        with pytest.raises(Timeout) as info:
            await client.request({}, timeouts=Timeouts(pool=0.1))
        assert info.value.phase == "pool"
        release.set()
        assert (await first).body == b"done"
        assert (await client.request({})).body == b"done"


async def test_server_breaking_mid_response_then_pool_is_healthy() -> None:
    async def app(request: Request) -> None:
        if request.params.get(b"REQUEST_URI") == b"/break":
            await request.send_stdout(OK + b"half")
            request.fail()  # poisons the connection and closes it
            return
        await request.end(OK + b"whole")

    async with serve(app) as (_, address, _app), FastCGIClient(address) as client:
        with pytest.raises(ProtocolError, match="FastCGI"):
            await client.request(build_params("GET", "/break"))
        async with client.stream(build_params("GET", "/break")) as response:
            with pytest.raises(ProtocolError):
                await response.aread()
        assert (await client.request(build_params("GET", "/ok"))).body == b"whole"


async def test_server_closing_mid_response_is_connection_lost() -> None:
    async with fake_server(close_mid_response=True) as fake, FastCGIClient(fake.address) as client:
        with pytest.raises(ConnectionLost, match="closed the connection"):
            await client.request({})
    # The same pool goes on with a new connection: the broken one poisons nothing.
    body = b"0123456789" * 10
    async with (
        fake_server(close_first_mid_response=True, response=b"Status: 200\r\n\r\n" + body) as fake,
        FastCGIClient(fake.address, multiplex=False) as client,
    ):
        # The head and 5 bytes of body arrive, then the connection closes.
        async with client.stream({}, b"body") as response:
            assert response.status_code == 200
            with pytest.raises(ConnectionLost, match="closed the connection"):
                await response.aread()
        for _ in range(3):
            assert (await client.request({}, b"body")).body == body
        assert (fake.requests, fake.connections) == (4, 2)


async def test_stale_keep_alive_connection_is_retried() -> None:
    async with (
        fake_server(close_after_response=True) as fake,
        FastCGIClient(fake.address, multiplex=False) as client,
    ):
        for _ in range(4):
            assert (await client.request({}, b"payload")).body == b"fake"
        assert fake.requests == 4
        assert fake.connections == 4
    async with (
        fake_server(drop_second_request=True) as fake,
        FastCGIClient(fake.address, multiplex=False) as client,
    ):
        for _ in range(3):
            assert (await client.request({}, b"payload")).body == b"fake"
        assert (fake.requests, fake.connections) == (3, 3)
        # A streamed body cannot be replayed: the failure reaches the caller.

        async def streamed() -> AsyncIterator[bytes]:
            yield b"payload"

        with pytest.raises(ConnectionLost):
            await client.request({}, streamed())


async def test_server_that_never_answers_get_values() -> None:
    async with (
        fake_server(answer_get_values=False) as fake,
        FastCGIClient(fake.address, get_values_timeout=0.2) as client,
    ):
        responses = await asyncio.gather(*(client.request({}) for _ in range(3)))
        assert all(r.body == b"fake" for r in responses)
        assert client.multiplexing is False


async def test_cant_multiplex_falls_back_and_retries() -> None:
    release = asyncio.Event()
    count = 0

    async def app(request: Request) -> None:
        nonlocal count
        count += 1
        if count == 3:
            release.set()
        await release.wait()
        await request.end(OK + request.params[b"REQUEST_URI"])

    # The server refuses multiplexing; the client was told to multiplex anyway.
    async with (
        serve(app, multiplex=False) as (_, address, _app),
        FastCGIClient(address, multiplex=True) as client,
    ):
        responses = await asyncio.gather(
            *(client.request(build_params("GET", f"/{i}"), b"data") for i in range(3))
        )
        assert [r.body for r in responses] == [b"/0", b"/1", b"/2"]
        assert client.multiplexing is False
        assert len(client.connections) == 3

    async def streamed() -> AsyncIterator[bytes]:
        yield b"once"

    release.clear()
    count = 0
    async with (
        serve(app, multiplex=False) as (_, address, app_seen),
        FastCGIClient(address, multiplex=True) as client,
    ):
        first = asyncio.create_task(client.request({}))
        async with _compat.timeout(5):
            await app_seen.arrived.wait()  # the first request runs on the server
        # A streamed body cannot be sent twice: the refusal reaches the caller.
        with pytest.raises(CantMultiplex):
            await client.request({}, streamed())
        release.set()
        await first


async def test_rejections_are_typed() -> None:
    release = asyncio.Event()

    async def app(request: Request) -> None:
        await release.wait()
        await request.end(OK)

    # The client is told to multiplex, so it never asks GET_VALUES: asked, it would learn
    # FCGI_MAX_REQS / FCGI_MAX_CONNS = 1 request per connection and open a second connection,
    # where the request runs (and waits for `release`) instead of being refused.
    async with (
        serve(app, roles=("responder",), max_requests_per_connection=1) as (_, address, seen),
        FastCGIClient(address, multiplex=True) as client,
    ):
        with pytest.raises(UnknownRole):
            await client.request({}, role=Role.AUTHORIZER)
        first = asyncio.create_task(client.request({}))
        async with _compat.timeout(5):
            await seen.arrived.wait()
        # Bounded: a refusal is immediate; a request that runs would wait for `release`.
        with pytest.raises(Overloaded):
            async with _compat.timeout(5):
                await client.request({})
        assert len(client.connections) == 1
        release.set()
        assert (await first).status_code == 200
        assert len(seen.requests) == 1  # neither refused request reached the app


async def test_connect_errors() -> None:
    async with serve(hello) as (_server, address, _):
        pass  # the port is closed again now
    async with FastCGIClient(address) as client:
        with pytest.raises(ConnectError, match="cannot connect"):
            await client.request({})
        with pytest.raises(ConnectError):
            await client.request({})
    async with FastCGIClient("unix:/nonexistent/dir/sock", multiplex=False) as client:
        with pytest.raises(ConnectError, match="unix:/nonexistent/dir/sock"):
            await client.request({})
    client = FastCGIClient(address)
    await client.aclose()
    with pytest.raises(PoolClosed):
        await client.request({})


async def test_body_iterable_errors_reach_the_caller() -> None:
    async def app(request: Request) -> None:
        await read_body(request)
        await request.end(OK + b"never")

    async def broken() -> AsyncIterator[bytes]:
        yield b"start"
        raise ValueError("generator failed")

    async with serve(app) as (_, address, _app), FastCGIClient(address) as client:
        with pytest.raises(ValueError, match="generator failed"):
            await client.request({}, broken())
        assert (await client.request({})).body == b"never"


async def test_get_values_limits_are_respected() -> None:
    running = 0
    peak = 0

    async def app(request: Request) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        await request.end(OK + b"ok")

    # Advertises FCGI_MAX_CONNS=2, FCGI_MAX_REQS=4: two requests per connection.
    async with (
        serve(app, max_connections=2, max_requests_per_connection=2) as (_, address, _app),
        FastCGIClient(address) as client,
    ):
        responses = await asyncio.gather(*(client.request({}) for _ in range(10)))
        assert all(r.body == b"ok" for r in responses)
        assert client.multiplexing is True
        assert client._max_requests == 4
        # At most FCGI_MAX_REQS at once, and more than one connection's worth: the client
        # multiplexed over both connections the server allows.
        assert 2 < peak <= 4
        assert len(client.connections) <= 2


async def test_slow_reader_bounds_buffered_response() -> None:
    sent = 0
    piece = b"x" * 65536
    total = 8 * 1024 * 1024

    async def app(request: Request) -> None:
        nonlocal sent
        await request.send_stdout(OK)
        while sent < total:
            await request.send_stdout(piece)
            sent += len(piece)
        await request.end()

    async with serve(app) as (_, address, _app), FastCGIClient(address) as client:
        async with client.stream({}) as response:
            # Wait until the server is held back by flow control (bounded loop).
            last = -1
            for _ in range(200):
                await asyncio.sleep(0.01)
                if sent == last:
                    break
                last = sent
            assert sent < total
            assert response._exchange.buffered <= MAX_BUFFERED_RESPONSE_BYTES + READ_CHUNK
            received = sum([len(c) async for c in response.aiter_bytes()])
        assert received == total


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize("kind", ["unix", "ipv6"])
async def test_unix_and_ipv6_addresses(kind: str, tmp_path: Path) -> None:
    if kind == "ipv6" and not _has_ipv6():
        pytest.skip("no IPv6 loopback here")
    bind = f"unix:{tmp_path}/s.sock" if kind == "unix" else "[::1]:0"
    async with serve(hello, bind=bind) as (_, address, _app):
        assert address.startswith("unix:" if kind == "unix" else "[::1]:")
        async with FastCGIClient(address) as client:
            results = await asyncio.gather(*(client.request({}, b"ab") for _ in range(3)))
            assert [r.body for r in results] == [b" 2"] * 3
            assert client.multiplexing is True


async def test_pointing_at_an_http_server_is_a_protocol_error() -> None:
    async def http_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        writer.close()

    srv = await asyncio.start_server(http_server, "127.0.0.1", 0)
    address = f"127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    try:
        async with FastCGIClient(address) as client:
            with pytest.raises(ProtocolError, match="version"):
                await client.request({})
            assert client.multiplexing is False
    finally:
        srv.close()
        await srv.wait_closed()
