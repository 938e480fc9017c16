"""``cgi-fcgi`` (libfcgi-bin, the FastCGI reference library) talking to fcgi-async directly.

``cgi-fcgi -bind -connect ADDR`` sends its own environment as the CGI params and its stdin as
the request body, and prints the application's CGI response (headers, blank line, body).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from .conftest import TEST_APPS, FcgiServer, run_fcgi_async

CGI_FCGI = shutil.which("cgi-fcgi") or "/usr/bin/cgi-fcgi"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CGI_FCGI), reason="cgi-fcgi is missing (.ci/run installs libfcgi-bin)"
)


@pytest.fixture(
    scope="module",
    params=[(a, t) for a in sorted(TEST_APPS) for t in ("unix", "tcp")],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FcgiServer]:
    adapter, transport = request.param
    workdir = tmp_path_factory.mktemp(f"cgi-fcgi-{adapter}-{transport}")
    with run_fcgi_async(
        TEST_APPS[adapter], workdir, tcp=transport == "tcp", extra_args=["--interface", adapter]
    ) as server:
        yield server


def cgi_fcgi(
    server: FcgiServer, method: str, path_info: str, body: bytes = b"", **params: str
) -> tuple[int, dict[str, list[str]], bytes]:
    """Run one request through cgi-fcgi; return (status, headers, body) of the CGI response."""
    env = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path_info,
        "QUERY_STRING": "",
        "REQUEST_URI": path_info,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
    }
    if body:
        env["CONTENT_LENGTH"] = str(len(body))
        env["CONTENT_TYPE"] = "application/octet-stream"
    env.update(params)
    result = subprocess.run(
        [CGI_FCGI, "-bind", "-connect", server.cgi_fcgi_address],
        input=body,
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, (result.returncode, result.stderr)
    head, sep, content = result.stdout.partition(b"\r\n\r\n")
    assert sep, f"no header block in {result.stdout[:200]!r}"
    headers: dict[str, list[str]] = {}
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    status = int(headers.pop("status", ["200"])[0].split()[0])
    return status, headers, content


def test_get(server: FcgiServer) -> None:
    status, headers, body = cgi_fcgi(server, "GET", "/hello")
    assert status == 200
    assert headers["content-type"] == ["text/plain; charset=utf-8"]
    assert headers["content-length"] == ["14"]
    assert body == b"Hello, world!\n"


@pytest.mark.parametrize("size", [1, 70_000, 3 * 1024 * 1024])
def test_post_body(server: FcgiServer, size: int) -> None:
    payload = os.urandom(size)
    status, _, body = cgi_fcgi(server, "POST", "/echo", payload)
    assert status == 200
    data = json.loads(body)
    assert data["length"] == size
    assert data["sha256"] == hashlib.sha256(payload).hexdigest()


def test_params_as_sent(server: FcgiServer) -> None:
    status, _, body = cgi_fcgi(
        server,
        "GET",
        "/echo-path/x y",
        SCRIPT_NAME="/mount",
        QUERY_STRING="a=1&b=%20",
        REQUEST_URI="/mount/echo-path/x%20y?a=1&b=%20",
    )
    assert status == 200
    data = json.loads(body)
    assert data["script_name"] == "/mount"
    assert data["path_info"] == "/echo-path/x y"
    assert data["query"] == "a=1&b=%20"


def test_multiple_headers_and_statuses(server: FcgiServer) -> None:
    status, headers, _ = cgi_fcgi(server, "GET", "/cookies")
    assert status == 200
    assert headers["set-cookie"] == [
        "a=1; Path=/",
        "b=2; Path=/; HttpOnly",
        "c=3; Path=/; Max-Age=60",
    ]
    status, headers, body = cgi_fcgi(server, "GET", "/redirect")
    assert status == 302
    assert headers["location"] == ["/hello"]
    status, _, body = cgi_fcgi(server, "GET", "/status/204")
    assert status == 204
    assert body == b""


def test_error_before_start_is_a_500(server: FcgiServer) -> None:
    status, _, body = cgi_fcgi(server, "GET", "/error-before")
    assert status == 500
    assert b"boom" not in body
