"""Pure parts of the client: addresses, CGI response heads, params, the public surface."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import fcgi_async.client as client_pkg
from fcgi_async.client import Address, ProtocolError, build_params, parse_address
from fcgi_async.client.params import normalize_path
from fcgi_async.client.response import find_header_end, parse_head


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("unix:/run/php.sock", Address(path="/run/php.sock")),
        ("unix:@abstract", Address(path="\0abstract")),
        ("/run/php.sock", Address(path="/run/php.sock")),
        ("127.0.0.1:9000", Address(host="127.0.0.1", port=9000)),
        ("localhost:9000", Address(host="localhost", port=9000)),
        ("[::1]:9000", Address(host="::1", port=9000)),
    ],
)
def test_parse_address(text: str, expected: Address) -> None:
    address = parse_address(text)
    assert address == expected
    assert parse_address(str(address)) == address


@pytest.mark.parametrize(
    "text", ["unix:", "9000", "host:", "host:0", "host:99999", "::1:9000", "[::1]9000", "[]:1"]
)
def test_bad_addresses(text: str) -> None:
    with pytest.raises(ValueError, match="address"):
        parse_address(text)


def test_parse_head() -> None:
    status, reason, headers = parse_head(
        b"Status: 404 Not Here\r\nContent-Type: text/html\nSet-Cookie: a=1\r\nSet-Cookie: b=2"
    )
    assert (status, reason) == (404, "Not Here")
    assert headers == [("Content-Type", "text/html"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
    assert parse_head(b"Location: /x")[:2] == (302, "Found")
    assert parse_head(b"Status: 301\r\nLocation: /x")[:2] == (301, "Moved Permanently")
    assert parse_head(b"Status: 599")[:2] == (599, "")
    assert parse_head(b"")[:2] == (200, "OK")
    for bad in (b"Status: 20", b"Status: 099 x", b"no colon", b"Bad Name: x", b": empty"):
        with pytest.raises(ProtocolError):
            parse_head(bad)


def test_find_header_end() -> None:
    assert find_header_end(b"A: b\r\n\r\nbody") == (4, 8)
    assert find_header_end(b"A: b\n\nbody") == (4, 6)
    assert find_header_end(b"\r\nbody") == (0, 2)
    assert find_header_end(b"\nbody") == (0, 1)
    assert find_header_end(b"A: b\r\n") is None


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b"/", b"/"),
        (b"", b"/"),
        (b"/a//b/./c/", b"/a/b/c/"),
        (b"/a/../../../etc/passwd", b"/etc/passwd"),
        (b"/a/%2e%2e/b", b"/b"),
        (b"/a/b/..", b"/a/"),
        (b"/%C3%A9", "/é".encode()),
    ],
)
def test_normalize_path(raw: bytes, path: bytes) -> None:
    assert normalize_path(raw) == path


def test_normalize_path_refuses_nul() -> None:
    with pytest.raises(ValueError, match="NUL"):
        normalize_path(b"/a%00.php")


def test_build_params_front_controller() -> None:
    params = build_params(
        "get",
        "/users/1?x=1",
        script_filename="/srv/app/public/index.php",
        document_root="/srv/app/public",
    )
    assert params["REQUEST_METHOD"] == b"GET"
    assert params["SCRIPT_FILENAME"] == b"/srv/app/public/index.php"
    assert params["SCRIPT_NAME"] == b"/index.php"
    assert params["DOCUMENT_ROOT"] == b"/srv/app/public"
    assert params["REQUEST_URI"] == b"/users/1?x=1"
    assert params["DOCUMENT_URI"] == b"/users/1"
    assert "PATH_INFO" not in params
    alone = build_params("GET", "/", script_filename="/opt/x/run.php")
    assert (alone["SCRIPT_NAME"], alone["DOCUMENT_ROOT"]) == (b"/run.php", b"/opt/x")
    outside = build_params("GET", "/", script_filename="/opt/x/run.php", document_root="/srv")
    assert outside["SCRIPT_NAME"] == b"/run.php"


def test_build_params_without_root_and_split() -> None:
    params = build_params("GET", "/ping")
    assert params["SCRIPT_NAME"] == params["SCRIPT_FILENAME"] == b"/ping"
    assert "DOCUMENT_ROOT" not in params
    assert params["SERVER_PORT"] == b"80"
    assert params["SERVER_ADDR"] == b"127.0.0.1"
    assert params["SERVER_SOFTWARE"].startswith(b"fcgi-async/")
    assert "HTTPS" not in params
    placed = build_params("GET", "/", server_addr="192.0.2.7", server_port=8080)
    assert (placed["SERVER_ADDR"], placed["SERVER_PORT"]) == (b"192.0.2.7", b"8080")
    nosplit = build_params("GET", "/a.php/b", split_path_info=None, document_root="/r/")
    assert nosplit["SCRIPT_FILENAME"] == b"/r/a.php/b"
    assert "PATH_INFO" not in nosplit
    custom = build_params("GET", "/app/rest", split_path_info=r"^(/app)(/.*)$")
    assert (custom["SCRIPT_NAME"], custom["PATH_INFO"]) == (b"/app", b"/rest")
    binary = build_params("GET", b"/x", headers=[(b"X-Bin", b"\xff")], extra={"B": b"\x00"})
    assert binary["HTTP_X_BIN"] == b"\xff"
    assert binary["B"] == b"\x00"


def test_public_surface_is_documented() -> None:
    for name in client_pkg.__all__:
        obj = getattr(client_pkg, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name
            for attr, member in vars(obj).items() if inspect.isclass(obj) else ():
                if not attr.startswith("_") and inspect.isfunction(member):
                    assert inspect.getdoc(member), f"{name}.{attr}"


def test_client_imports_without_httpx() -> None:
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "import fcgi_async.client as c\n"
        "try:\n"
        "    c.FastCGITransport\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert "fcgi-async[client]" in result.stdout


async def test_argument_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="max_requests_per_connection"):
        client_pkg.FastCGIClient("127.0.0.1:9", max_requests_per_connection=70000)
    with pytest.raises(ValueError, match="one record"):
        await client_pkg.get_values("127.0.0.1:9", ["N" * 70000])
