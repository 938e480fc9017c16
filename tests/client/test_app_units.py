"""FastCGIApp's request description, without a FastCGI server: scopes, environs, Host."""

from __future__ import annotations

import pytest

from fcgi_async.client import FastCGIApp, FastCGIClient
from fcgi_async.client.app import _incoming_from_environ, _incoming_from_scope, _split_host


def scope(**extra: object) -> dict[str, object]:
    base: dict[str, object] = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": "/legacy/a b.php",
        "query_string": b"q=1",
        "root_path": "/legacy",
        "headers": [(b"host", b"shop.example")],
    }
    base.update(extra)
    return base


def test_mount_point_in_path_or_not() -> None:
    # Starlette keeps the mount point in path; older routers strip it. Same request.
    kept = _incoming_from_scope(scope())
    stripped = _incoming_from_scope(scope(path="/a b.php"))
    for inc in (kept, stripped):
        assert (inc.mount, inc.path) == (b"/legacy", b"/a b.php")
        assert inc.target == b"/legacy/a%20b.php?q=1"  # rebuilt: no raw_path
    exact = _incoming_from_scope(scope(path="/legacy"))
    assert exact.path == b""
    # A sibling that merely starts with the same letters is not below the mount.
    sibling = _incoming_from_scope(scope(path="/legacyx/a.php"))
    assert sibling.path == b"/legacyx/a.php"


def test_raw_path_is_the_request_uri_without_a_query() -> None:
    inc = _incoming_from_scope(scope(raw_path=b"/legacy/a%20b.php?q=1", query_string=b"q=1"))
    assert inc.target == b"/legacy/a%20b.php?q=1"  # httpx's raw_path carries the query too
    inc = _incoming_from_scope(scope(raw_path=b"/legacy/a%20b.php", query_string=b""))
    assert inc.target == b"/legacy/a%20b.php"


def test_server_and_client_from_the_scope() -> None:
    inc = _incoming_from_scope(
        scope(
            scheme="https",
            headers=[],
            server=("10.0.0.5", 8443),
            client=("2001:db8::7", 50000),
        )
    )
    assert (inc.server_name, inc.server_port, inc.server_addr) == ("10.0.0.5", 8443, "10.0.0.5")
    assert (inc.remote_addr, inc.remote_port) == ("2001:db8::7", 50000)
    bare = _incoming_from_scope(scope(headers=[], server=None, client=None))
    assert (bare.server_name, bare.server_port) == ("localhost", 80)
    assert (bare.remote_addr, bare.remote_port) == ("", 0)
    unix = _incoming_from_scope(scope(headers=[], server=("/run/app.sock", None)))
    assert (unix.server_name, unix.server_addr) == ("localhost", "127.0.0.1")


@pytest.mark.parametrize(
    ("host", "scheme", "expected"),
    [
        (b"shop.example", "http", ("shop.example", 80)),
        (b"shop.example", "https", ("shop.example", 443)),
        (b"shop.example:8080", "http", ("shop.example", 8080)),
        (b"[2001:db8::1]:8443", "https", ("[2001:db8::1]", 8443)),
        (b"[2001:db8::1]", "https", ("[2001:db8::1]", 443)),
        (b"shop.example:99999", "http", ("shop.example", 80)),  # nonsense port: the default
        (b"shop.example:abc", "http", ("shop.example", 80)),
    ],
)
def test_split_host(host: bytes, scheme: str, expected: tuple[str, int]) -> None:
    assert _split_host(host, scheme) == expected


def test_environ_from_dispatcher_middleware() -> None:
    inc = _incoming_from_environ(
        {
            "REQUEST_METHOD": "POST",
            "SCRIPT_NAME": "/legacy",
            "PATH_INFO": "/caf\xc3\xa9.php",  # PEP 3333: bytes as latin-1
            "QUERY_STRING": "a=1",
            "CONTENT_TYPE": "text/plain",
            "CONTENT_LENGTH": "3",
            "HTTP_HOST": "shop.example:8000",
            "HTTP_X_FORWARDED_FOR": "203.0.113.9",
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": "40000",
            "SERVER_NAME": "0.0.0.0",
            "SERVER_PORT": "8000",
            "wsgi.url_scheme": "http",
        }
    )
    assert (inc.mount, inc.path) == (b"/legacy", "/café.php".encode())
    assert inc.target == b"/legacy/caf%C3%A9.php?a=1"
    assert (b"CONTENT-TYPE", b"text/plain") in inc.headers
    assert (b"X-FORWARDED-FOR", b"203.0.113.9") in inc.headers
    assert (inc.server_name, inc.server_port) == ("shop.example", 8000)
    assert inc.server_addr == "127.0.0.1"  # WSGI has no SERVER_ADDR; SERVER_NAME is a name
    assert (inc.remote_addr, inc.remote_port) == ("127.0.0.1", 40000)
    uri = _incoming_from_environ({"REQUEST_URI": "/legacy/x%2Fy?z", "PATH_INFO": "/x/y"})
    assert uri.target == b"/legacy/x%2Fy?z"  # as received, when the server says


def test_client_options_need_no_client() -> None:
    client = FastCGIClient("127.0.0.1:9000")
    with pytest.raises(TypeError, match="max_connections"):
        FastCGIApp(document_root="/srv", client=client, max_connections=3)
    app = FastCGIApp(document_root="/srv", client=client)
    assert app.client is client
