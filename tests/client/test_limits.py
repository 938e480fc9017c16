"""The client's default time and size limits: hostile or broken servers cannot hang it or make
it buffer without bound, and the request is aborted when a limit trips."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from fcgi_async import _compat
from fcgi_async.client import (
    FastCGIClient,
    FastCGITransport,
    ResponseTooLarge,
    Timeout,
    Timeouts,
    build_params,
)
from fcgi_async.client.connection import MAX_BUFFERED_RESPONSE_BYTES, READ_CHUNK
from fcgi_async.client.response import DEFAULT_MAX_RESPONSE_BYTES, MAX_HEADER_BLOCK_BYTES
from fcgi_async.client.timeouts import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_READ_TIMEOUT_S,
    DEFAULT_TOTAL_TIMEOUT_S,
    DEFAULT_WRITE_TIMEOUT_S,
)
from fcgi_async.types import Request

from .conftest import serve
from .fakes import FLOOD_PIECE, flood_server

pytestmark = pytest.mark.timeout(60)

OK = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n"
FLOOD = build_params("GET", "/flood")
PLAIN = build_params("GET", "/plain")
#: The per-test cap: small, so the tests move little data.
CAP = 1024 * 1024
#: What may be buffered past a cap: the connection's per-request buffer, one socket read and
#: one record (the bound the limits promise).
SLACK = MAX_BUFFERED_RESPONSE_BYTES + READ_CHUNK + len(FLOOD_PIECE)
#: The bound on how long a tripped limit may take to surface on this noisy 2-core machine.
WAIT_S = 10.0


# ------------------------------------------------------------------------- defaults
def test_default_timeouts_are_bounded_and_named() -> None:
    """``Timeouts()`` bounds every phase that can hang on a silent server; None stays None."""
    t = Timeouts()
    assert (t.connect, t.read, t.write, t.total) == (
        DEFAULT_CONNECT_TIMEOUT_S,
        DEFAULT_READ_TIMEOUT_S,
        DEFAULT_WRITE_TIMEOUT_S,
        DEFAULT_TOTAL_TIMEOUT_S,
    )
    # A backend may think for a while, yet no default waits forever: read and write wait at
    # most a minute of silence, the whole exchange at most a few minutes.
    assert 0 < DEFAULT_READ_TIMEOUT_S <= DEFAULT_TOTAL_TIMEOUT_S
    assert 0 < DEFAULT_WRITE_TIMEOUT_S <= DEFAULT_TOTAL_TIMEOUT_S <= 3600
    assert t.pool is None  # bounded by the total deadline
    unlimited = Timeouts(read=None, write=None, total=None)
    assert (unlimited.read, unlimited.write, unlimited.total) == (None, None, None)
    client = FastCGIClient("127.0.0.1:9")
    assert client.timeouts == t
    assert client.max_response_bytes == DEFAULT_MAX_RESPONSE_BYTES
    assert client.max_header_bytes == MAX_HEADER_BLOCK_BYTES


def test_size_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_response_bytes"):
        FastCGIClient("127.0.0.1:9", max_response_bytes=0)
    with pytest.raises(ValueError, match="max_header_bytes"):
        FastCGIClient("127.0.0.1:9", max_header_bytes=-1)
    assert FastCGIClient("127.0.0.1:9", max_response_bytes=None).max_response_bytes is None


# ----------------------------------------------------------------- silent servers
@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[tuple[str, asyncio.Event, list[int]]]:
    """Accepts, reads everything, never answers. Yields (address, a close seen, bytes read)."""
    closed = asyncio.Event()
    received = [0]
    writers: list[asyncio.StreamWriter] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            while data := await reader.read(65536):
                received[0] += len(data)
        except OSError:
            pass
        closed.set()
        writer.close()

    srv = await asyncio.start_server(on_client, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{srv.sockets[0].getsockname()[1]}", closed, received
    finally:
        srv.close()
        for writer in writers:
            writer.close()
        with contextlib.suppress(TimeoutError):
            async with _compat.timeout(2):
                await srv.wait_closed()


async def test_server_that_never_answers_hits_the_read_timeout() -> None:
    """The default timeouts, with only the read timeout shortened: a Timeout("read") in about
    that time, and the connection is closed (no multiplexing: nothing else to abort)."""
    timeouts = dataclasses.replace(Timeouts(), read=0.3)
    async with (
        silent_server() as (address, closed, received),
        FastCGIClient(address, multiplex=False, timeouts=timeouts) as client,
    ):
        started = time.monotonic()
        with pytest.raises(Timeout) as info:
            await client.request(PLAIN)
        elapsed = time.monotonic() - started
        assert info.value.phase == "read"
        assert 0.3 <= elapsed < WAIT_S
        assert received[0] > 0  # the request did reach the server
        async with _compat.timeout(WAIT_S):
            await closed.wait()


async def test_server_that_never_answers_hits_the_total_timeout() -> None:
    """With the read timeout explicitly off, the total deadline still ends the wait."""
    timeouts = Timeouts(read=None, total=0.3)
    async with (
        silent_server() as (address, closed, _),
        FastCGIClient(address, multiplex=False, timeouts=timeouts) as client,
    ):
        with pytest.raises(Timeout) as info:
            await client.request(PLAIN)
        assert info.value.phase == "total"
        async with _compat.timeout(WAIT_S):
            await closed.wait()


# -------------------------------------------------------------------- endless body
@pytest.mark.parametrize("multiplex", [False, True])
async def test_endless_body_is_capped_and_aborted(multiplex: bool) -> None:
    """request() past max_response_bytes: ResponseTooLarge("body"), having buffered no more
    than the cap plus the connection's buffer; the server is told (ABORT_REQUEST when
    multiplexing, else the connection closes) and the pool keeps serving."""
    async with (
        flood_server(multiplex=multiplex, limit=64 * CAP) as server,
        FastCGIClient(server.address, max_response_bytes=CAP) as client,
    ):
        with pytest.raises(ResponseTooLarge) as info:
            await client.request(FLOOD)
        assert (info.value.part, info.value.limit) == ("body", CAP)
        stopped = server.aborted if multiplex else server.closed
        async with _compat.timeout(WAIT_S):
            await stopped.wait()
        assert not server.exhausted.is_set()
        assert client.multiplexing is multiplex
        response = await client.request(PLAIN)
        assert response.body == b"ok"
        if multiplex:  # the aborted request's connection served the next one
            assert server.connections <= 2  # the GET_VALUES probe, then one connection
        # What the server got out before it was stopped is bounded by the cap plus the
        # buffers in between (the client's and the sockets').
        assert server.sent < CAP + SLACK + 8 * 1024 * 1024


async def test_aread_is_capped_but_aiter_bytes_is_not() -> None:
    async with (
        flood_server(limit=16 * CAP) as server,
        FastCGIClient(server.address, multiplex=False, max_response_bytes=CAP) as client,
    ):
        async with client.stream(FLOOD) as response:
            with pytest.raises(ResponseTooLarge):
                await response.aread()
            assert response.is_closed
        async with _compat.timeout(WAIT_S):
            await server.closed.wait()
        async with client.stream(FLOOD) as response:
            received = sum([len(chunk) async for chunk in response.aiter_bytes()])
        assert received >= 16 * CAP - len(OK)
        assert server.exhausted.is_set()


async def test_per_request_limit_overrides_and_none_disables() -> None:
    async with (
        flood_server(limit=2 * CAP) as server,
        FastCGIClient(server.address, multiplex=False, max_response_bytes=CAP) as client,
    ):
        response = await client.request(FLOOD, max_response_bytes=None)
        assert len(response.body) >= 2 * CAP - len(OK)
        response = await client.request(FLOOD, max_response_bytes=3 * CAP)
        assert len(response.body) >= 2 * CAP - len(OK)
        with pytest.raises(ResponseTooLarge):
            await client.request(FLOOD, max_response_bytes=CAP // 2)
        with pytest.raises(ValueError, match="max_response_bytes"):
            await client.request(FLOOD, max_response_bytes=0)
        assert (await client.request(PLAIN)).body == b"ok"


# ------------------------------------------------------------------- endless STDERR
@pytest.mark.parametrize("multiplex", [False, True])
async def test_endless_stderr_is_capped_and_aborted(multiplex: bool) -> None:
    """A server flooding STDERR (no body at all): ResponseTooLarge("stderr") once STDERR
    passes max_response_bytes; only max_stderr_bytes of it were kept."""
    seen = [0]

    def on_stderr(data: bytes) -> None:
        seen[0] += len(data)

    async with (
        flood_server(stream="stderr", head=b"", multiplex=multiplex, limit=64 * CAP) as server,
        FastCGIClient(
            server.address,
            max_response_bytes=CAP,
            max_stderr_bytes=1000,
            on_stderr=on_stderr,
        ) as client,
    ):
        with pytest.raises(ResponseTooLarge) as info:
            await client.request(FLOOD)
        assert (info.value.part, info.value.limit) == ("stderr", CAP)
        assert seen[0] <= CAP  # the callback saw STDERR up to the cap, not past it
        stopped = server.aborted if multiplex else server.closed
        async with _compat.timeout(WAIT_S):
            await stopped.wait()
        assert not server.exhausted.is_set()
        assert (await client.request(PLAIN)).body == b"ok"


async def test_stderr_is_capped_while_streaming_too() -> None:
    async with (
        flood_server(stream="stderr", limit=64 * CAP) as server,
        FastCGIClient(server.address, multiplex=False, max_response_bytes=CAP) as client,
    ):
        async with client.stream(FLOOD) as response:
            with pytest.raises(ResponseTooLarge) as info:
                async for _ in response.aiter_bytes():
                    pass
            assert info.value.part == "stderr"
            assert len(response.stderr) <= 1024 * 1024  # max_stderr_bytes kept, no more
        async with _compat.timeout(WAIT_S):
            await server.closed.wait()


# -------------------------------------------------------------------- header block
async def test_endless_header_block_is_refused() -> None:
    """A head that never ends (no blank line) stops at max_header_bytes."""
    async with (
        flood_server(head=b"X-Endless: ", piece=b"y" * 4096, limit=64 * CAP) as server,
        FastCGIClient(server.address, multiplex=False, max_header_bytes=16 * 1024) as client,
    ):
        with pytest.raises(ResponseTooLarge) as info:
            await client.request(FLOOD)
        assert (info.value.part, info.value.limit) == ("head", 16 * 1024)
        async with _compat.timeout(WAIT_S):
            await server.closed.wait()
        assert (await client.request(PLAIN)).body == b"ok"


async def test_default_header_limit_applies_to_a_complete_head_too() -> None:
    """A head over the limit is refused even when its blank line arrived; a larger limit
    accepts it; the pool serves on."""
    big = b"X-Big: " + b"z" * MAX_HEADER_BLOCK_BYTES + b"\r\n\r\nbody"

    async def app(request: Request) -> None:
        if request.params.get(b"REQUEST_URI") == b"/big":
            await request.end(big)
        else:
            await request.end(OK + b"fine")

    async with serve(app) as (_, address, _app):
        async with FastCGIClient(address) as client:
            with pytest.raises(ResponseTooLarge) as info:
                await client.request(build_params("GET", "/big"))
            assert (info.value.part, info.value.limit) == ("head", MAX_HEADER_BLOCK_BYTES)
            assert (await client.request(PLAIN)).body == b"fine"
        async with FastCGIClient(address, max_header_bytes=2 * MAX_HEADER_BLOCK_BYTES) as client:
            response = await client.request(build_params("GET", "/big"))
            assert (response.get_header("x-big"), response.body) == (
                "z" * MAX_HEADER_BLOCK_BYTES,
                b"body",
            )


async def test_head_in_one_byte_records_is_found() -> None:
    """The blank line is found when it is split across records (the search resumes 3 bytes
    back, not from the start, so a byte-per-record head costs linear time)."""
    head = b"Status: 201 Created\r\nX-A: b\r\n\r\n"

    async def app(request: Request) -> None:
        for i in range(len(head)):
            await request.send_stdout(head[i : i + 1])
        await request.end(b"body")

    async with serve(app) as (_, address, _app), FastCGIClient(address) as client:
        response = await client.request(PLAIN)
        assert (response.status_code, response.get_header("x-a"), response.body) == (
            201,
            "b",
            b"body",
        )


# ------------------------------------------------------------------------- httpx
async def test_httpx_transport_maps_too_large_to_remote_protocol_error() -> None:
    async with flood_server(stream="stderr", limit=64 * CAP) as server:
        transport = FastCGITransport(server.address, multiplex=False, max_response_bytes=CAP)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            with pytest.raises(httpx.RemoteProtocolError) as info:
                await http.get("/flood")
            assert isinstance(info.value.__cause__, ResponseTooLarge)
            assert (await http.get("/plain")).text == "ok"
