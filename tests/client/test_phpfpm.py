"""The client, the httpx transports and ``fcgi-async call`` against a real php-fpm 8.2."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest

from fcgi_async.client import (
    FastCGIClient,
    FastCGISyncTransport,
    FastCGITransport,
    build_params,
    get_values,
)
from fcgi_async.client.cli import main
from fcgi_async.client.response import parse_head

from .conftest import PhpFpm, requires_php_fpm

pytestmark = [pytest.mark.phpfpm, requires_php_fpm, pytest.mark.timeout(60)]


def _transport(fpm: PhpFpm, script: str = "echo.php", **kw: Any) -> FastCGITransport:
    return FastCGITransport(
        fpm.address, script_filename=fpm.script(script), document_root=str(fpm.root), **kw
    )


async def test_get_values_php_fpm_does_not_multiplex(php_fpm: PhpFpm) -> None:
    values = await get_values(php_fpm.address)
    assert values["FCGI_MPXS_CONNS"] == "0"
    assert set(values) <= {"FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"}
    async with FastCGIClient(php_fpm.address) as client:
        params = build_params("GET", "/echo.php", document_root=str(php_fpm.root))
        response = await client.request(params)
        assert response.status_code == 200
        assert client.multiplexing is False


async def test_server_get_post_and_headers_as_php_sees_them(php_fpm: PhpFpm) -> None:
    async with httpx.AsyncClient(
        transport=_transport(php_fpm, remote_addr="203.0.113.7", remote_port=4242),
        base_url="http://example.test:8080",
    ) as http:
        response = await http.post(
            "/some/path?x=1&y=%C3%A9&arr[]=a&arr[]=b",
            data={"field": "välue", "other": "2"},
            headers={"X-Custom": "yes", "Cookie": "sid=abc"},
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert [c.split(";")[0] for c in response.headers.get_list("set-cookie")] == [
        "first=one",
        "second=two",
    ]
    data = response.json()
    server = data["server"]
    assert server["REQUEST_METHOD"] == "POST"
    assert server["SCRIPT_FILENAME"] == php_fpm.script("echo.php")
    assert server["SCRIPT_NAME"] == "/echo.php"
    assert server["DOCUMENT_ROOT"] == str(php_fpm.root)
    assert server["REQUEST_URI"] == "/some/path?x=1&y=%C3%A9&arr[]=a&arr[]=b"
    assert server["QUERY_STRING"] == "x=1&y=%C3%A9&arr[]=a&arr[]=b"
    assert server["DOCUMENT_URI"] == "/some/path"
    assert server["SERVER_NAME"] == "example.test"
    assert server["SERVER_PORT"] == "8080"
    assert server["REMOTE_ADDR"] == "203.0.113.7"
    assert server["REMOTE_PORT"] == "4242"
    assert server["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert server["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert server["REQUEST_SCHEME"] == "http"
    assert "HTTPS" not in server
    assert server["HTTP_X_CUSTOM"] == "yes"
    assert server["HTTP_HOST"] == "example.test:8080"
    assert server["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert data["get"] == {"x": "1", "y": "é", "arr": ["a", "b"]}
    assert data["post"] == {"field": "välue", "other": "2"}
    assert data["cookie"] == {"sid": "abc"}
    assert data["headers"]["X-Custom"] == "yes"


async def test_multipart_upload(php_fpm: PhpFpm) -> None:
    payload = bytes(range(256)) * 300
    async with httpx.AsyncClient(transport=_transport(php_fpm), base_url="https://h") as http:
        response = await http.post(
            "/upload",
            data={"title": "report"},
            files={"doc": ("report.bin", payload, "application/octet-stream")},
        )
    data = response.json()
    assert data["post"] == {"title": "report"}
    doc = data["files"]["doc"]
    assert doc["name"] == "report.bin"
    assert doc["type"] == "application/octet-stream"
    assert doc["size"] == len(payload)
    assert doc["error"] == 0
    assert base64.b64decode(doc["content"]) == payload
    assert data["server"]["HTTPS"] == "on"
    assert data["server"]["SERVER_PORT"] == "443"


async def test_streamed_request_body_reaches_php_input(php_fpm: PhpFpm) -> None:
    async def chunks() -> Any:
        for i in range(10):
            yield b"%d," % i * 1000

    async with httpx.AsyncClient(transport=_transport(php_fpm), base_url="http://h") as http:
        body = b"".join([b"%d," % i * 1000 for i in range(10)])
        response = await http.put(
            "/x", content=chunks(), headers={"Content-Length": str(len(body))}
        )
    assert response.json()["input"] == body.decode()


async def test_path_info_split_and_status_codes(php_fpm: PhpFpm) -> None:
    transport = FastCGITransport(php_fpm.address, document_root=str(php_fpm.root))
    async with httpx.AsyncClient(transport=transport, base_url="http://h") as http:
        response = await http.get("/echo.php/extra/path?q=1")
        server = response.json()["server"]
        assert server["SCRIPT_NAME"] == "/echo.php"
        assert server["PATH_INFO"] == "/extra/path"
        assert server["SCRIPT_FILENAME"] == php_fpm.script("echo.php")
        missing = await http.get("/notfound.php")
        assert (missing.status_code, missing.text) == (404, "missing")
        redirect = await http.get("/redirect.php")
        assert redirect.status_code == 302
        assert redirect.headers["location"] == "/elsewhere"
        nofile = await http.get("/nope.php")
        assert nofile.status_code == 404  # php-fpm: "Primary script unknown"
        assert b"Primary script unknown" in nofile.extensions["fastcgi_response"].stderr


async def test_stderr_and_large_response(php_fpm: PhpFpm) -> None:
    seen: list[bytes] = []
    async with FastCGIClient(php_fpm.address, on_stderr=seen.append) as client:
        root = str(php_fpm.root)
        response = await client.request(build_params("GET", "/stderr.php", document_root=root))
        assert response.body == b"ok"
        assert b"hello from php" in response.stderr
        assert b"hello from php" in b"".join(seen)
        async with client.stream(build_params("GET", "/big.php", document_root=root)) as big:
            total = 0
            async for chunk in big.aiter_bytes():
                total += len(chunk)
        assert total == 16 * 65536


async def test_keep_alive_reuses_connections(php_fpm: PhpFpm) -> None:
    async with FastCGIClient(php_fpm.address) as client:
        params = build_params("GET", "/echo.php", document_root=str(php_fpm.root))
        pids = set()
        for _ in range(6):
            response = await client.request(params)
            assert response.status_code == 200
            pids.add(json.loads(response.body)["server"]["REMOTE_PORT"])
        (conn,) = client.connections
        assert conn.served == 6


def test_sync_transport(php_fpm: PhpFpm) -> None:
    transport = FastCGISyncTransport(
        php_fpm.address, script_filename=php_fpm.script("echo.php"), document_root=str(php_fpm.root)
    )
    with httpx.Client(transport=transport, base_url="http://h") as http:
        response = http.post("/form?a=b", data={"k": "v"})
        assert response.json()["post"] == {"k": "v"}
        assert response.json()["get"] == {"a": "b"}

        def gen() -> Any:
            yield b"abc"
            yield b"def"

        streamed = http.post("/s", content=gen(), headers={"Content-Length": "6"})
        assert streamed.json()["input"] == "abcdef"


def test_ping_and_status_through_cli(
    php_fpm: PhpFpm, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main([php_fpm.address, "/ping"]) == 0
    assert capsysbinary.readouterr().out == b"pong"
    assert main([php_fpm.address, "/status?json", "-i"]) == 0
    out = capsysbinary.readouterr().out
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: application/json" in head
    status = json.loads(body)
    assert status["pool"] == "test"
    assert status["process manager"] == "static"
    assert main([php_fpm.address, "--get-values"]) == 0
    assert b"FCGI_MPXS_CONNS=0" in capsysbinary.readouterr().out
    assert main([php_fpm.address, "/notfound.php", "--document-root", str(php_fpm.root)]) == 22
    captured = capsysbinary.readouterr()
    assert captured.out == b"missing"
    assert b"HTTP status 404" in captured.err
    assert (
        main([php_fpm.address, "/echo.php", "--document-root", str(php_fpm.root), "-d", "a=1"]) == 0
    )
    assert json.loads(capsysbinary.readouterr().out)["post"] == {"a": "1"}


def test_ping_through_cli_subprocess(php_fpm: PhpFpm) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fcgi_async", "call", php_fpm.address, "/ping", "-i"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"HTTP/1.1 200 OK\r\n")
    assert result.stdout.endswith(b"\r\n\r\npong")


CGI_FCGI = "/usr/bin/cgi-fcgi"


@pytest.mark.skipif(not os.path.exists(CGI_FCGI), reason="cgi-fcgi is missing (libfcgi-bin)")
@pytest.mark.parametrize("target", ["/ping", "/echo.php?a=1&b=%20x", "/notfound.php"])
async def test_same_answer_as_cgi_fcgi(php_fpm: PhpFpm, target: str) -> None:
    """The reference client (libfcgi's cgi-fcgi) and ours get the same response for the same
    params: same status, headers and body."""
    path, _, query = target.partition("?")
    params = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": path,
        "SCRIPT_FILENAME": str(php_fpm.root) + path if path.endswith(".php") else path,
        "QUERY_STRING": query,
        "REQUEST_URI": target,
        "REQUEST_TIME_PINNED": "1",
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [CGI_FCGI, "-bind", "-connect", str(php_fpm.socket_path)],
        env=params,
        capture_output=True,
        timeout=30,
        check=True,
    )
    raw = result.stdout
    head, _, body = raw.partition(b"\r\n\r\n")
    status, _, headers = parse_head(head)
    async with FastCGIClient(php_fpm.address) as client:
        response = await client.request(params)
    assert response.status_code == status
    assert response.headers == headers
    if path == "/echo.php":
        mine, theirs = json.loads(response.body), json.loads(body)
        for key in ("REQUEST_TIME", "REQUEST_TIME_FLOAT"):
            mine["server"].pop(key)
            theirs["server"].pop(key)
        assert mine == theirs
        assert mine["get"] == {"a": "1", "b": " x"}
    else:
        assert response.body == body


async def test_concurrent_requests_within_php_fpm_children(php_fpm: PhpFpm) -> None:
    async with FastCGIClient(php_fpm.address, max_connections=2) as client:
        root = str(php_fpm.root)
        responses = await asyncio.gather(
            *(
                client.request(build_params("GET", f"/echo.php?i={i}", document_root=root))
                for i in range(8)
            )
        )
        assert [json.loads(r.body)["get"]["i"] for r in responses] == [str(i) for i in range(8)]
        assert len(client.connections) <= 2
        # Cancelling a request on a non-multiplexed connection closes that connection only.
        task = asyncio.create_task(
            client.request(build_params("GET", "/big.php", document_root=root))
        )
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        again = await client.request(build_params("GET", "/echo.php", document_root=root))
        assert again.status_code == 200


async def test_chunked_body_is_buffered_for_php(php_fpm: PhpFpm) -> None:
    async def gen() -> Any:
        yield b"abc"
        yield b"def"

    async with httpx.AsyncClient(transport=_transport(php_fpm), base_url="http://h") as http:
        data = (await http.post("/", content=gen())).json()
    assert data["input"] == "abcdef"
    assert data["server"]["CONTENT_LENGTH"] == "6"
    assert "HTTP_TRANSFER_ENCODING" not in data["server"]
