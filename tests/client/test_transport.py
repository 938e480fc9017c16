"""The httpx transports against our own server: params as a web server sends them, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from fcgi_async.client import FastCGIClient, FastCGISyncTransport, FastCGITransport
from fcgi_async.types import Request

from .conftest import read_body, serve

pytestmark = pytest.mark.timeout(30)

OK = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n"


async def dump(request: Request) -> None:
    body = await read_body(request)
    lines = b"\n".join(k + b"=" + v for k, v in sorted(request.params.items()))
    await request.end(OK + lines + b"\nBODY=" + body)


def _params(response: httpx.Response) -> dict[str, str]:
    head, _, body = response.text.partition("\nBODY=")
    out = dict(line.split("=", 1) for line in head.splitlines())
    out["BODY"] = body
    return out


async def test_async_transport_builds_web_server_params() -> None:
    async with serve(dump) as (_, address, _app):
        transport = FastCGITransport(
            address,
            document_root="/srv/www",
            remote_addr="192.0.2.1",
            params={"APP_ENV": "test", "SERVER_SOFTWARE": None, "SERVER_NAME": "override.test"},
        )
        async with httpx.AsyncClient(transport=transport, base_url="https://site.test") as http:
            response = await http.post(
                "/app/index.php/users/%C3%A9?page=2",
                content=b"payload",
                headers=[
                    ("X-Forwarded-For", "1.2.3.4"),
                    ("Accept", "a"),
                    ("Accept", "b"),
                    ("Cookie", "a=1"),
                    ("Proxy", "http://evil"),
                    ("X_Under", "dropped"),
                    ("Content-Type", "text/plain"),
                ],
                extensions={
                    "fastcgi_params": {"PER_REQUEST": "yes", "SCRIPT_FILENAME": "/srv/other.php"}
                },
            )
    assert response.status_code == 200
    assert response.reason_phrase == "OK"
    p = _params(response)
    assert p["REQUEST_METHOD"] == "POST"
    assert p["SCRIPT_NAME"] == "/app/index.php"
    assert p["PATH_INFO"] == "/users/é"
    # A per-request param replaces the one the transport built; a transport param too.
    assert p["SCRIPT_FILENAME"] == "/srv/other.php"
    assert p["DOCUMENT_ROOT"] == "/srv/www"
    assert p["DOCUMENT_URI"] == "/app/index.php/users/é"
    assert p["REQUEST_URI"] == "/app/index.php/users/%C3%A9?page=2"
    assert p["QUERY_STRING"] == "page=2"
    assert p["HTTPS"] == "on"
    assert p["REQUEST_SCHEME"] == "https"
    assert p["SERVER_PORT"] == "443"
    assert p["SERVER_NAME"] == "override.test"
    assert p["REMOTE_ADDR"] == "192.0.2.1"
    assert p["CONTENT_TYPE"] == "text/plain"
    assert p["CONTENT_LENGTH"] == "7"
    assert p["HTTP_ACCEPT"] == "a, b"
    assert p["HTTP_COOKIE"] == "a=1"
    assert p["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"
    assert p["HTTP_HOST"] == "site.test"
    assert p["REDIRECT_STATUS"] == "200"
    assert p["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert p["APP_ENV"] == "test"
    assert p["PER_REQUEST"] == "yes"
    assert "SERVER_SOFTWARE" not in p
    assert "HTTP_PROXY" not in p
    assert "HTTP_X_UNDER" not in p
    assert p["BODY"] == "payload"


async def test_async_transport_streams_and_shares_a_client() -> None:
    async def stream(request: Request) -> None:
        await request.send_stderr(b"note")
        await request.send_stdout(OK)
        for i in range(3):
            await request.send_stdout(b"chunk%d" % i)
        await request.end()

    async with serve(stream) as (_, address, _app), FastCGIClient(address) as client:
        transport = FastCGITransport(client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://h") as http:
            async with http.stream("GET", "/") as response:
                chunks = [c async for c in response.aiter_raw()]
            assert b"".join(chunks) == b"chunk0chunk1chunk2"
            assert response.extensions["fastcgi_response"].stderr == b"note"
        # The transport did not close a client it was given.
        response2 = await FastCGITransport(client=client).handle_async_request(
            httpx.Request("GET", "http://h/")
        )
        await response2.aread()
        assert response2.content.startswith(b"chunk0")


async def test_async_transport_maps_errors() -> None:
    async def slow(request: Request) -> None:
        await request.wait_disconnected()

    async with serve(slow) as (_, address, _app):
        transport = FastCGITransport(address)
        async with httpx.AsyncClient(transport=transport, base_url="http://h") as http:
            with pytest.raises(httpx.ReadTimeout) as info:
                await http.get("/", timeout=httpx.Timeout(5.0, read=0.1))
            assert info.value.__cause__ is not None
    async with httpx.AsyncClient(transport=FastCGITransport(address)) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("http://h/")
    async with httpx.AsyncClient(transport=FastCGITransport(address)) as http:
        with pytest.raises(httpx.LocalProtocolError, match="NUL"):
            await http.get("http://h/a%00b")


async def test_sync_transport_in_a_thread() -> None:
    async def upper(request: Request) -> None:
        body = await read_body(request)
        await request.end(OK + body.upper())

    async with serve(upper) as (_, address, _app):

        def run() -> tuple[bytes, bytes]:
            transport = FastCGISyncTransport(address, multiplex=False)
            with httpx.Client(transport=transport, base_url="http://h") as http:
                first = http.post("/", content=b"hello").content

                def gen() -> object:
                    yield b"stream"
                    yield b"ed"

                with http.stream("POST", "/", content=gen()) as response:  # type: ignore[arg-type]
                    second = b"".join(response.iter_raw())
            return first, second

        assert await asyncio.to_thread(run) == (b"HELLO", b"STREAMED")


def test_sync_transport_maps_errors() -> None:
    transport = FastCGISyncTransport("unix:/nonexistent/sock")
    with httpx.Client(transport=transport) as http, pytest.raises(httpx.ConnectError):
        http.get("http://h/")
    with pytest.raises(TypeError):
        FastCGISyncTransport("unix:/x", client=object())


async def test_unbuffered_streamed_body() -> None:
    async def gen() -> AsyncIterator[bytes]:
        yield b"part1,"
        yield b"part2"

    async with serve(dump) as (_, address, _app):
        for buffering, length, encoding in ((False, "", "chunked"), (True, "11", None)):
            transport = FastCGITransport(address, request_buffering=buffering)
            async with httpx.AsyncClient(transport=transport, base_url="http://h") as http:
                p = _params(await http.post("/", content=gen()))
            assert p["BODY"] == "part1,part2"
            assert p["CONTENT_LENGTH"] == length
            assert p.get("HTTP_TRANSFER_ENCODING") == encoding
