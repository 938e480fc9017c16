"""FastCGIApp and FastCGIWSGIApp in front of a real php-fpm, mounted under ``/legacy``.

The PHP application is ``tests/client/legacy_php`` (sessions, a form, an upload, a redirect, a
404 from PHP, a front controller). Starlette mounts the ASGI app and is driven through httpx's
ASGITransport; Flask mounts the WSGI app with werkzeug's DispatcherMiddleware and is driven by
Flask's test client and by a real wsgiref server in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from fcgi_async import _compat
from fcgi_async.client import FastCGIApp, FastCGIWSGIApp, Timeouts

from .conftest import PhpFpm

pytestmark = pytest.mark.phpfpm

LEGACY = Path(__file__).resolve().parent / "legacy_php"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "php_mount.py"
UPLOAD = b"\x00binary upload\xff" * 5000


def php_options(tmp_path: Path) -> dict[str, Any]:
    """Options every test app gets: sessions in the test's own directory."""
    sessions = tmp_path / "sessions"
    sessions.mkdir(exist_ok=True)
    return {"params": {"PHP_VALUE": f"session.save_path={sessions}"}}


def starlette_app(legacy: FastCGIApp) -> Starlette:
    """A Python app that serves ``/`` itself and ``/legacy`` from PHP."""

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("python home")

    return Starlette(routes=[Route("/", home), Mount("/legacy", app=legacy)])


@contextlib.asynccontextmanager
async def starlette_client(
    php_fpm: PhpFpm, tmp_path: Path, *, base_url: str = "http://shop.example", **options: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FastCGIApp]]:
    legacy = FastCGIApp(
        php_fpm.address, document_root=str(LEGACY), **{**php_options(tmp_path), **options}
    )
    transport = httpx.ASGITransport(app=starlette_app(legacy), client=("203.0.113.7", 4321))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
            yield http, legacy
    finally:
        await legacy.aclose()


def error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "fcgi_async.client" and r.levelno >= logging.ERROR
    ]


# ------------------------------------------------------------------------ Starlette (ASGI)
async def test_starlette_params_under_the_mount(php_fpm: PhpFpm, tmp_path: Path) -> None:
    async with starlette_client(php_fpm, tmp_path, base_url="https://shop.example:8443") as (
        http,
        _,
    ):
        assert (await http.get("/")).text == "python home"
        r = await http.get(
            "/legacy/info.php/users/7?page=2", headers={"X-Test": "yes", "Proxy": "evil:1"}
        )
    assert r.status_code == 200
    server = r.json()["server"]
    assert server["SCRIPT_NAME"] == "/legacy/info.php"
    assert server["PATH_INFO"] == "/users/7"
    assert server["REQUEST_URI"] == "/legacy/info.php/users/7?page=2"
    assert server["DOCUMENT_URI"] == "/legacy/info.php/users/7"
    assert server["SCRIPT_FILENAME"] == str(LEGACY / "info.php")
    assert server["DOCUMENT_ROOT"] == str(LEGACY)
    assert server["QUERY_STRING"] == "page=2"
    assert server["HTTPS"] == "on"
    assert server["REQUEST_SCHEME"] == "https"
    assert (server["REMOTE_ADDR"], server["REMOTE_PORT"]) == ("203.0.113.7", "4321")
    assert (server["SERVER_NAME"], server["SERVER_PORT"]) == ("shop.example", "8443")
    assert server["HTTP_X_TEST"] == "yes"
    assert server["HTTP_PROXY"] is None  # httpoxy
    assert r.json()["get"] == {"page": "2"}


async def test_starlette_plain_http_has_no_https(php_fpm: PhpFpm, tmp_path: Path) -> None:
    async with starlette_client(php_fpm, tmp_path) as (http, _):
        server = (await http.get("/legacy/info.php")).json()["server"]
    assert server["HTTPS"] is None
    assert (server["SERVER_NAME"], server["SERVER_PORT"]) == ("shop.example", "80")
    assert server["PATH_INFO"] is None


async def test_front_controller_and_directory_index(php_fpm: PhpFpm, tmp_path: Path) -> None:
    async with starlette_client(php_fpm, tmp_path) as (http, _):
        route = await http.get("/legacy/blog/2024/hello?x=1")
        root = await http.get("/legacy/")
        admin = await http.get("/legacy/admin/")
    assert route.json() == {
        "controller": "index",
        "script_name": "/legacy/index.php",
        "request_uri": "/legacy/blog/2024/hello?x=1",
        "path_info": None,
    }
    assert root.json()["script_name"] == "/legacy/index.php"
    assert admin.text == "admin index at /legacy/admin/index.php"


async def test_script_filename_runs_one_file(php_fpm: PhpFpm, tmp_path: Path) -> None:
    async with starlette_client(php_fpm, tmp_path, script_filename=str(LEGACY / "index.php")) as (
        http,
        _,
    ):
        r = await http.get("/legacy/info.php/anything")
    assert r.json()["controller"] == "index"
    assert r.json()["script_name"] == "/legacy/index.php"
    assert r.json()["request_uri"] == "/legacy/info.php/anything"


async def test_sessions_and_several_cookies(php_fpm: PhpFpm, tmp_path: Path) -> None:
    async with starlette_client(php_fpm, tmp_path) as (http, _):
        first = await http.get("/legacy/session.php")
        second = await http.get("/legacy/session.php")
    assert first.json()["visits"] == 1
    assert second.json()["visits"] == 2
    assert second.json()["session"] == first.json()["session"]
    cookies = first.headers.get_list("set-cookie")
    assert len(cookies) == 2
    assert cookies[0].startswith("PHPSESSID=")
    assert cookies[1].startswith("theme=dark")


async def test_form_post_upload_redirect_and_404(php_fpm: PhpFpm, tmp_path: Path) -> None:
    async with starlette_client(php_fpm, tmp_path) as (http, _):
        form = await http.post("/legacy/form.php", data={"name": "Ada", "lang": "PHP"})
        upload = await http.post(
            "/legacy/upload.php",
            data={"title": "a file"},
            files={"doc": ("report.bin", UPLOAD, "application/octet-stream")},
        )
        redirect = await http.get("/legacy/redirect.php")
        missing = await http.get("/legacy/missing.php")
    assert form.json() == {"post": {"name": "Ada", "lang": "PHP"}}
    assert upload.json() == {
        "files": {
            "doc": {
                "name": "report.bin",
                "size": len(UPLOAD),
                "error": 0,
                "md5": hashlib.md5(UPLOAD).hexdigest(),
            }
        },
        "post": {"title": "a file"},
    }
    assert redirect.status_code == 302
    assert redirect.headers["location"] == "/legacy/form.php?sent=1"
    assert missing.status_code == 404
    assert missing.text == "no such page"


async def test_chunked_body_is_sent_with_its_length(php_fpm: PhpFpm, tmp_path: Path) -> None:
    body = b"x" * 3_000_000  # past SPOOL_MEMORY_BYTES: goes through the temporary file

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 100_000):
            yield body[i : i + 100_000]

    async with starlette_client(php_fpm, tmp_path) as (http, _):
        r = await http.post("/legacy/info.php", content=chunks())
    data = r.json()
    assert data["input_length"] == len(body)
    assert data["input_md5"] == hashlib.md5(body).hexdigest()
    assert data["server"]["CONTENT_LENGTH"] == str(len(body))
    assert data["server"]["HTTP_TRANSFER_ENCODING"] is None


async def test_body_over_the_limit_is_413(
    php_fpm: PhpFpm, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"y" * 400

    async with starlette_client(php_fpm, tmp_path, max_body_bytes=1000) as (http, _):
        declared = await http.post("/legacy/info.php", content=b"z" * 1001)
        chunked = await http.post("/legacy/info.php", content=chunks())
        fits = await http.post("/legacy/info.php", content=b"z" * 1000)
    assert declared.status_code == 413
    assert chunked.status_code == 413
    assert fits.json()["input_length"] == 1000
    lines = [r.getMessage() for r in caplog.records if "413" in r.getMessage()]
    assert len(lines) == 2
    assert "max_body_bytes=1000" in lines[0]


async def test_missing_script_is_404_without_php(php_fpm: PhpFpm, tmp_path: Path) -> None:
    async with starlette_client(php_fpm, tmp_path, index=None) as (http, _):
        missing = await http.get("/legacy/nope.php")
        route = await http.get("/legacy/some/route")
        exists = await http.get("/legacy/info.php")
    assert missing.status_code == 404
    assert route.status_code == 404
    assert exists.status_code == 200


async def test_stderr_is_logged_bounded(
    php_fpm: PhpFpm, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fcgi_async.client")
    async with starlette_client(php_fpm, tmp_path) as (http, _):
        one = await http.get("/legacy/stderr.php?n=1")
        assert one.text == "ok"
        lines = [r for r in caplog.records if "stderr" in r.getMessage()]
        assert len(lines) == 1
        assert lines[0].levelno == logging.WARNING
        assert "GET /legacy/stderr.php?n=1" in lines[0].getMessage()
        assert "legacy warning 1" in lines[0].getMessage()
        caplog.clear()
        await http.get("/legacy/stderr.php?n=50")
    lines = [r.getMessage() for r in caplog.records if "stderr" in r.getMessage()]
    assert len(lines) == 11  # MAX_STDERR_LOG_LINES, then one count
    assert "40 more stderr lines" in lines[-1]


async def test_response_is_streamed(php_fpm: PhpFpm, tmp_path: Path) -> None:
    legacy = FastCGIApp(php_fpm.address, document_root=str(LEGACY))
    messages: list[dict[str, Any]] = []
    calls = 0

    async def receive() -> dict[str, Any]:
        # Breaks the spec on purpose: http.request again after the whole body. The proxy
        # must not spin on it; a loop is caught at 100 calls, then parked (it never yields).
        nonlocal calls
        calls += 1
        if calls > 100:
            await asyncio.Event().wait()
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/big.php",
        "raw_path": b"/big.php",
        "query_string": b"kib=1024",
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    try:
        await legacy(scope, receive, send)
    finally:
        await legacy.aclose()
    assert messages[0]["type"] == "http.response.start"
    bodies = [m for m in messages[1:] if m["type"] == "http.response.body"]
    assert sum(len(m["body"]) for m in bodies) == 1024 * 1024
    assert len(bodies) > 4  # chunk by chunk, not one buffered body
    assert all(m["more_body"] for m in bodies[:-1])
    assert bodies[-1]["more_body"] is False
    assert calls == 2  # the body, then one look for a disconnect


async def test_client_leaving_mid_response_aborts_the_request(
    php_fpm: PhpFpm, caplog: pytest.LogCaptureFixture
) -> None:
    legacy = FastCGIApp(php_fpm.address, document_root=str(LEGACY))
    gone = asyncio.Event()
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message.get("body"):
            gone.set()  # the browser closes its tab after the first piece

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/drip.php",
        "query_string": b"n=100&ms=100",
        "headers": [],
    }
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with _compat.timeout(30):
            await legacy(scope, receive, send)
    finally:
        await legacy.aclose()
    # The script takes 10 s to finish; the proxy stopped at the disconnect.
    assert loop.time() - started < 5.0
    assert sent[0]["status"] == 200
    assert all(m.get("more_body") for m in sent[1:])
    assert error_lines(caplog) == []


async def test_concurrent_requests_keep_their_answers(php_fpm: PhpFpm, tmp_path: Path) -> None:
    async with starlette_client(php_fpm, tmp_path) as (http, _), _compat.timeout(60):
        answers = await asyncio.gather(
            *(http.post(f"/legacy/info.php?i={i}", content=b"x" * i) for i in range(12))
        )
    assert [r.json()["get"]["i"] for r in answers] == [str(i) for i in range(12)]
    assert [r.json()["input_length"] for r in answers] == list(range(12))


async def test_path_traversal_never_leaves_the_root(php_fpm: PhpFpm, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    root = tmp_path / "site"
    outside.mkdir()
    root.mkdir()
    marker = tmp_path / "secret-ran"
    (outside / "secret.php").write_text(f"<?php touch('{marker}'); echo 'SECRET';")
    (root / "link.php").symlink_to(outside / "secret.php")
    (root / "dir").symlink_to(outside)
    (root / "ok.php").write_text("<?php echo 'inside';")
    legacy = FastCGIApp(php_fpm.address, document_root=str(root), index=None)
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    async def get(path: str) -> tuple[int, bytes]:
        messages.clear()
        scope = {
            "type": "http",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "query_string": b"",
            "root_path": "/legacy",
            "headers": [],
        }
        await legacy(scope, receive, send)
        return messages[0]["status"], b"".join(m.get("body", b"") for m in messages[1:])

    try:
        for path in (
            "/legacy/../outside/secret.php",
            "/legacy/../../outside/secret.php",
            "/../outside/secret.php",
            "/legacy/..%2f..%2foutside/secret.php",
            "/legacy/link.php",
            "/legacy/dir/secret.php",
            "/legacy/dir/../../outside/secret.php",
        ):
            status, body = await get(path)
            assert status == 404, path
            assert b"SECRET" not in body
        assert (await get("/legacy/ok.php")) == (200, b"inside")
        assert (await get("/legacy/a\0b.php"))[0] == 400
    finally:
        await legacy.aclose()
    assert not marker.exists()


async def test_php_fpm_down_is_502_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sock = tmp_path / "nobody.sock"
    legacy = FastCGIApp(f"unix:{sock}", document_root=str(LEGACY))
    transport = httpx.ASGITransport(app=starlette_app(legacy))
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.example") as http:
        r = await http.get("/legacy/info.php?x=1")
    await legacy.aclose()
    assert r.status_code == 502
    assert r.text.startswith("502 Bad Gateway")
    lines = error_lines(caplog)
    assert len(lines) == 1
    assert str(sock) in lines[0]
    assert "GET /legacy/info.php?x=1" in lines[0]
    assert "502" in lines[0]


async def test_slow_script_is_504(
    php_fpm: PhpFpm, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    timeouts = Timeouts(connect=5.0, pool=5.0, read=0.3, write=5.0)
    async with (
        starlette_client(php_fpm, tmp_path, timeouts=timeouts) as (http, _),
        _compat.timeout(30),
    ):
        r = await http.get("/legacy/slow.php?ms=1500")
    assert r.status_code == 504
    lines = error_lines(caplog)
    assert len(lines) == 1
    assert "504" in lines[0]
    assert "read timeout" in lines[0]


async def test_php_fpm_pool_at_its_limit_gives_a_gateway_error(
    php_fpm: PhpFpm, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Both workers of the fixture's pool (pm.max_children = 2) sleep; php-fpm queues the next
    # connection in its backlog, and the proxy answers within its read timeout, never hangs.
    timeouts = Timeouts(connect=5.0, pool=5.0, read=0.5, write=5.0)
    async with starlette_client(php_fpm, tmp_path) as (busy, _):
        hogs = [asyncio.ensure_future(busy.get("/legacy/slow.php?ms=2500")) for _ in range(2)]
        try:
            async with (
                starlette_client(php_fpm, tmp_path, timeouts=timeouts) as (http, _),
                _compat.timeout(30),
            ):
                # Wait (bounded) until the hogs hold both workers: a quick script times out.
                for _ in range(200):
                    r = await http.get("/legacy/info.php")
                    if r.status_code != 200:
                        break
                    await asyncio.sleep(0.05)
        finally:
            done = await asyncio.gather(*hogs)
    assert r.status_code == 504
    assert [h.text for h in done] == ["late", "late"]
    assert len(error_lines(caplog)) == 1


async def test_websocket_is_refused_and_lifespan_closes_the_client(tmp_path: Path) -> None:
    legacy = FastCGIApp("unix:" + str(tmp_path / "x.sock"), document_root=str(LEGACY))
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def ws_receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    await legacy({"type": "websocket", "path": "/"}, ws_receive, send)
    assert sent == [{"type": "websocket.close", "code": 1000}]
    sent.clear()
    events = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def life_receive() -> dict[str, Any]:
        return next(events)

    await legacy({"type": "lifespan"}, life_receive, send)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert legacy.client._closed


def test_configuration_errors() -> None:
    with pytest.raises(TypeError, match="document_root"):
        FastCGIApp("127.0.0.1:9000")
    with pytest.raises(ValueError, match="index"):
        FastCGIApp("127.0.0.1:9000", document_root="/srv", index="../x.php")
    with pytest.raises(ValueError, match="two groups"):
        FastCGIApp("127.0.0.1:9000", document_root="/srv", split_path=r"^(.+\.php)$")
    with pytest.raises(ValueError, match="max_body_bytes"):
        FastCGIApp("127.0.0.1:9000", document_root="/srv", max_body_bytes=-1)
    with pytest.raises(ValueError, match="max_body_bytes"):
        FastCGIApp("127.0.0.1:9000", document_root="/srv", max_body_bytes=2**40 * 64)
    with pytest.raises(TypeError, match="address"):
        FastCGIApp(document_root="/srv")
    with pytest.raises(TypeError, match="client"):
        FastCGIWSGIApp("127.0.0.1:9000", document_root="/srv", client=object())


# ----------------------------------------------------------------------------- Flask (WSGI)
@pytest.fixture
def flask_app(php_fpm: PhpFpm, tmp_path: Path) -> Iterator[Flask]:
    legacy = FastCGIWSGIApp(php_fpm.address, document_root=str(LEGACY), **php_options(tmp_path))
    app = Flask(__name__)

    @app.get("/")
    def home() -> str:
        return "flask home"

    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/legacy": legacy})  # type: ignore[method-assign]
    try:
        yield app
    finally:
        legacy.close()


def test_flask_mount_session_form_upload_redirect_404(flask_app: Flask) -> None:
    client = flask_app.test_client()
    assert client.get("/").text == "flask home"
    info = client.get(
        "/legacy/info.php/x?y=1", environ_base={"REMOTE_ADDR": "198.51.100.4"}
    ).get_json()
    assert info["server"]["SCRIPT_NAME"] == "/legacy/info.php"
    assert info["server"]["PATH_INFO"] == "/x"
    assert info["server"]["REQUEST_URI"] == "/legacy/info.php/x?y=1"
    assert info["server"]["REMOTE_ADDR"] == "198.51.100.4"
    first = client.get("/legacy/session.php")
    assert first.get_json()["visits"] == 1
    assert len(first.headers.getlist("Set-Cookie")) == 2
    assert client.get("/legacy/session.php").get_json()["visits"] == 2
    form = client.post("/legacy/form.php", data={"name": "Ada"})
    assert form.get_json() == {"post": {"name": "Ada"}}
    upload = client.post(
        "/legacy/upload.php",
        data={"doc": (io.BytesIO(UPLOAD), "report.bin")},
        content_type="multipart/form-data",
    )
    doc = upload.get_json()["files"]["doc"]
    assert (doc["size"], doc["md5"]) == (len(UPLOAD), hashlib.md5(UPLOAD).hexdigest())
    redirect = client.get("/legacy/redirect.php")
    assert redirect.status_code == 302
    assert redirect.headers["Location"] == "/legacy/form.php?sent=1"
    missing = client.get("/legacy/missing.php")
    assert (missing.status_code, missing.text) == (404, "no such page")
    assert client.get("/legacy/admin/").text == "admin index at /legacy/admin/index.php"


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def wsgiref_server(app: Any) -> Iterator[str]:
    """A real stdlib WSGI server on 127.0.0.1:0 in a thread; yields its base URL."""
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_flask_over_a_real_wsgi_server(flask_app: Flask) -> None:
    with wsgiref_server(flask_app) as url, httpx.Client(base_url=url, timeout=30) as http:
        big = http.get("/legacy/big.php?kib=512")
        post = http.post("/legacy/info.php", content=UPLOAD)
        cookies = http.get("/legacy/session.php")
    assert big.status_code == 200
    assert len(big.content) == 512 * 1024
    assert post.json()["input_md5"] == hashlib.md5(UPLOAD).hexdigest()
    assert post.json()["server"]["REQUEST_URI"] == "/legacy/info.php"
    assert len(cookies.headers.get_list("set-cookie")) == 2


def test_wsgi_php_fpm_down_is_502(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    legacy = FastCGIWSGIApp(f"unix:{tmp_path / 'none.sock'}", document_root=str(LEGACY))
    app = Flask(__name__)
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/legacy": legacy})  # type: ignore[method-assign]
    try:
        r = app.test_client().get("/legacy/info.php")
    finally:
        legacy.close()
    assert r.status_code == 502
    lines = error_lines(caplog)
    assert len(lines) == 1
    assert "none.sock" in lines[0]


# ---------------------------------------------------------------------------------- example
async def test_example_serves_php_under_legacy(
    php_fpm: PhpFpm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHP_FPM", php_fpm.address)
    spec = importlib.util.spec_from_file_location("php_mount_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    transport = httpx.ASGITransport(app=module.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            home = await http.get("/")
            page = await http.get("/legacy/any/route")
            posted = await http.post("/legacy/index.php", data={"name": "Ada"})
    finally:
        await module.legacy.aclose()
    assert "Hello from Python" in home.text
    assert page.status_code == 200
    assert "you asked for /legacy/any/route." in page.text
    assert "Hello, Ada, from PHP" in posted.text


def readme_snippet() -> str:
    """The README's Python snippet for the proxy apps."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Mount a PHP application inside a Python app", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def test_readme_snippet_runs(php_fpm: PhpFpm) -> None:
    code = readme_snippet().replace("unix:/run/php/php8.2-fpm.sock", php_fpm.address)
    code = code.replace("/srv/legacy", str(LEGACY))
    namespace: dict[str, Any] = {"__name__": "readme_snippet"}
    exec(compile(code, "README.md", "exec"), namespace)
    transport = httpx.ASGITransport(app=namespace["app"])
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            asgi = await http.get("/legacy/info.php/a")
        client = namespace["flask_app"].test_client()
        wsgi = await asyncio.to_thread(lambda: client.get("/legacy/x").get_json())
    finally:
        await namespace["legacy"].aclose()
        wsgi_app = namespace["flask_app"].wsgi_app.mounts["/legacy"]
        await asyncio.to_thread(wsgi_app.close)
    assert asgi.json()["server"]["SCRIPT_NAME"] == "/legacy/info.php"
    assert wsgi["script_name"] == "/legacy/index.php"


def test_wsgi_body_after_close_fails_cleanly(php_fpm: PhpFpm) -> None:
    legacy = FastCGIWSGIApp(php_fpm.address, document_root=str(LEGACY))
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/big.php",
        "QUERY_STRING": "kib=256",
        "wsgi.input": io.BytesIO(),
    }
    statuses: list[str] = []
    try:
        body = legacy(environ, lambda status, headers: statuses.append(status))
    finally:
        legacy.close()
    assert statuses == ["200 OK"]
    with pytest.raises(RuntimeError, match="FastCGIWSGIApp is closed"):
        list(body)
    body.close()  # type: ignore[attr-defined]  # still safe: a WSGI server always calls it


def test_wsgi_app_is_shared_by_server_threads(php_fpm: PhpFpm) -> None:
    legacy = FastCGIWSGIApp(php_fpm.address, document_root=str(LEGACY))
    results: dict[int, bytes] = {}

    def worker(i: int) -> None:
        environ = {
            "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": "/legacy",
            "PATH_INFO": "/info.php",
            "QUERY_STRING": f"i={i}",
            "wsgi.input": io.BytesIO(),
        }
        body = legacy(environ, lambda status, headers: None)
        try:
            results[i] = b"".join(body)
        finally:
            body.close()  # type: ignore[attr-defined]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        legacy.close()
    assert sorted(results) == list(range(8))
    for i, body in results.items():
        assert json.loads(body)["get"] == {"i": str(i)}
