"""Access log lines for a known set of requests, format codes, the app's STDERR lines tied to
their request, and the log files through the CLI (``--access-log``, ``--error-log``)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from fcgi_async.config import Config, ConfigError
from fcgi_async.features import install_features
from fcgi_async.logs import ACCESS_LOGGER, compile_access_format, configure_logging
from fcgi_async.server import Server
from fcgi_async.supervisor import reopen_log_files
from fcgi_async.types import Request

from .fcgi import fcgi_request, params_for

pytestmark = pytest.mark.timeout(60)

FORMAT = (
    "%h|%R|%m|%U|%q|%Q|%r|%s|%b|%B|%i|%p|%{User-Agent}i|%{SCRIPT_NAME}e|%u|%n|%%|%D|%d|%T"
    "|%{milliseconds}d"
)


class App:
    """A raw application whose answer depends on the path."""

    async def startup(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def __call__(self, request: Request) -> None:
        path = request.params.get(b"DOCUMENT_URI", b"/")
        if path == b"/missing":
            await request.end(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope")
        elif path == b"/redirect":
            await request.end(b"Location: /elsewhere\r\n\r\n")
        elif path == b"/boom":
            raise RuntimeError("the app failed")
        elif path == b"/stream":
            await request.send_stdout(b"Content-Type: text/plain\r\n\r\n")
            await request.send_stdout(b"12345")
            await request.end(b"678")
        elif path == b"/stderr":
            await request.send_stderr(b"first problem\nsecond problem\n")
            await request.end(b"Status: 200 OK\r\n\r\nok")
        else:
            body = b""
            while chunk := await request.receive():
                body += chunk
            await request.end(b"Content-Type: text/plain\r\n\r\nhello" + body)


class Lines(logging.Handler):
    """Collects the formatted messages of one logger."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(record.getMessage())


@pytest.fixture
def access_lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, int]]:
    config = Config(bind=("127.0.0.1:0",), access_log="-", access_log_format=FORMAT)
    async with Server(config, App(), wrap=install_features) as srv:
        host, _, port = srv.bound_addresses[0].rpartition(":")
        yield host, int(port)


async def wait_lines(handler: Lines, count: int) -> None:
    """The line is written when the request's task ends, just after END_REQUEST."""
    for _ in range(200):
        if len(handler.lines) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(handler.lines)} access log lines, expected {count}")


async def test_lines_for_known_requests(
    server: tuple[str, int], access_lines: Lines, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="fcgi_async.server")
    requests = [
        (params_for("/a", REMOTE_ADDR="192.0.2.1", HTTP_USER_AGENT="curl/8"), b"", 1),
        (params_for("/missing?x=1&y=2"), b"", 2),
        (params_for("/post", "POST", CONTENT_LENGTH="3"), b"abc", 3),
        (params_for("/redirect"), b"", 4),
        (params_for("/boom"), b"", 5),
        (params_for("/stream"), b"", 6),
        (params_for('/q"uote'), b"", 7),
    ]
    for params, body, request_id in requests:
        await fcgi_request(server, params, body, request_id=request_id)
    await wait_lines(access_lines, len(requests))
    rows = [line.split("|") for line in access_lines.lines]
    pid = str(os.getpid())
    assert rows[0][:17] == [
        "192.0.2.1", "192.0.2.1", "GET", "/a", "", "", "GET /a HTTP/1.1", "200", "5", "5",
        "1", pid, "curl/8", "/a", "-", "www", "%",
    ]  # fmt: skip
    assert rows[1][2:10] == [
        "GET", "/missing", "x=1&y=2", "?", "GET /missing?x=1&y=2 HTTP/1.1", "404", "4", "4",
    ]  # fmt: skip
    assert rows[1][12] == "-"  # no User-Agent header
    assert rows[2][2:10] == ["POST", "/post", "", "", "POST /post HTTP/1.1", "200", "8", "8"]
    assert rows[3][7:10] == ["302", "-", "0"]  # CGI: Location alone is a redirect
    assert rows[4][7] == "500"  # the server answered for the failed app
    assert rows[5][7:10] == ["200", "8", "8"]  # body across three STDOUT chunks
    assert rows[6][3] == '/q\\"uote'  # escaped: one request is one parsable line
    assert [row[10] for row in rows] == [str(i) for _, _, i in requests]
    for row in rows:
        micros, seconds, whole, millis = int(row[17]), float(row[18]), int(row[19]), row[20]
        assert 0 <= micros < 10_000_000
        assert abs(seconds - micros / 1e6) < 0.01
        assert whole == int(seconds)
        assert re.fullmatch(r"\d+\.\d{3}", millis)


async def test_default_format_and_time(access_lines: Lines) -> None:
    async with Server(
        Config(bind=("127.0.0.1:0",), access_log="-"), App(), wrap=install_features
    ) as srv:
        host, _, port = srv.bound_addresses[0].rpartition(":")
        await fcgi_request((host, int(port)), params_for("/a?b=c"))
        await wait_lines(access_lines, 1)
    line = access_lines.lines[0]
    match = re.fullmatch(
        r'127\.0\.0\.1 - - \[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "GET /a\?b=c" 200 5 '
        r"(\d+\.\d{3})",
        line,
    )
    assert match, line
    when = time.mktime(time.strptime(match.group(1), "%d/%b/%Y:%H:%M:%S %z"))
    assert abs(when - time.time()) < 3600 * 24


def test_format_errors() -> None:
    for bad, word in [("%Z", "%Z"), ("%{x}d", "unit"), ("%e", "param"), ("50%", "lone")]:
        with pytest.raises(ValueError, match=word):
            compile_access_format(bad)
    with pytest.raises(ConfigError, match="access_log_format"):
        Config(access_log_format="%Z")
    assert compile_access_format("%{%H:%M}t %%")[1:] == [" ", "%"]


async def test_off_means_plain_handles() -> None:
    from fcgi_async.server.connection import RequestHandle

    async with Server(Config(bind=("127.0.0.1:0",)), App()) as srv:
        assert srv.state.handle_class is RequestHandle
        assert isinstance(srv.state.app, App)


async def test_stderr_lines_are_logged_with_their_request(
    server: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fcgi_async.app")
    response = await fcgi_request(server, params_for("/stderr?v=1", "PUT"), request_id=9)
    assert response.stderr == b"first problem\nsecond problem\n"
    records = [r for r in caplog.records if r.name == "fcgi_async.app"]
    assert [r.getMessage() for r in records] == [
        "request 9 (PUT /stderr?v=1) stderr: first problem",
        "request 9 (PUT /stderr?v=1) stderr: second problem",
    ]
    assert all(r.levelno == logging.WARNING for r in records)
    keys = ("request_id", "request_method", "request_uri")
    assert [tuple(getattr(r, k) for k in keys) for r in records] == [(9, "PUT", "/stderr?v=1")] * 2


CLI_APP = """
class App:
    async def startup(self):
        pass

    async def shutdown(self):
        pass

    async def __call__(self, request):
        path = request.params[b"DOCUMENT_URI"]
        await request.send_stderr(b"app says " + path + b"\\n")
        await request.end(b"Status: 201 Created\\r\\nContent-Type: text/plain\\r\\n\\r\\nmade")

app = App()
"""


@pytest.fixture
def cli_server(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """The CLI, inline, with --access-log and --error-log files and a custom format."""
    (tmp_path / "cliapp.py").write_text(CLI_APP)
    sock = str(tmp_path / "s.sock")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FCGI_ASYNC_")}
    env["FCGI_ASYNC_ACCESS_LOG_FORMAT"] = "%m %U %s %B %i"  # through the environment
    proc = subprocess.Popen(
        [sys.executable, "-m", "fcgi_async", "cliapp:app", "--app-dir", str(tmp_path),
         "--bind", f"unix:{sock}", "--access-log", str(tmp_path / "access.log"),
         "--error-log", str(tmp_path / "error.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        yield sock, tmp_path, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_cli_access_and_error_log_files(
    cli_server: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    sock, tmp, proc = cli_server
    deadline = time.monotonic() + 20
    while not await asyncio.to_thread(os.path.exists, sock):
        assert time.monotonic() < deadline, "the server never listened"
        assert proc.poll() is None, "the server exited"
        await asyncio.sleep(0.05)
    for i, path in enumerate(["/one", "/two", "/three"], start=1):
        response = await fcgi_request(sock, params_for(path), request_id=i)
        assert response.status == 201
        if i == 1:  # logrotate: move the file, SIGUSR1 (inline: to the server itself)
            (tmp / "access.log").rename(tmp / "access.log.1")
            proc.send_signal(signal.SIGUSR1)
            while not await asyncio.to_thread((tmp / "access.log").exists):
                assert time.monotonic() < deadline, "SIGUSR1 did not reopen the access log"
                await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 15) == 0
    assert (tmp / "access.log.1").read_text().splitlines() == ["GET /one 201 4 1"]
    assert (tmp / "access.log").read_text().splitlines() == [
        "GET /two 201 4 2",
        "GET /three 201 4 3",
    ]
    error_log = (tmp / "error.log").read_text()
    # Every line: time, [pid], level, logger: message (what a 3 a.m. grep relies on).
    line_shape = re.compile(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[(\d+)\] "
        r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: \S"
    )
    lines = error_log.splitlines()
    assert lines
    for line in lines:
        found = line_shape.match(line)
        assert found is not None, line
        assert int(found.group(1)) == proc.pid
    assert "INFO fcgi_async.server: listening on unix:" in error_log
    # Each STDERR line once, with its request; no access line in the error log.
    assert error_log.count("app says") == 3
    assert "WARNING fcgi_async.app: request 2 (GET /two) stderr: app says /two" in error_log
    assert "GET /one 201" not in error_log


def test_sigusr1_reopen_covers_the_access_log(tmp_path: Path) -> None:
    root = logging.getLogger()
    access = logging.getLogger(ACCESS_LOGGER)
    saved = (root.handlers[:], root.level, access.handlers[:], access.level, access.propagate)
    try:
        configure_logging("info", str(tmp_path / "error.log"), str(tmp_path / "access.log"))
        access.info("before")
        (tmp_path / "access.log").rename(tmp_path / "access.log.1")
        assert reopen_log_files() >= 2
        access.info("after")
        assert (tmp_path / "access.log.1").read_text() == "before\n"
        assert (tmp_path / "access.log").read_text() == "after\n"
    finally:
        for logger in (root, access):
            for handler in logger.handlers:
                if getattr(handler, "_fcgi_async_handler", False):
                    handler.close()
        root.handlers[:], access.handlers[:] = saved[0], saved[2]
        root.setLevel(saved[1])
        access.setLevel(saved[3])
        access.propagate = saved[4]


class Sleeper(App):
    """/sleep outlives the request timeout."""

    async def __call__(self, request: Request) -> None:
        if request.params.get(b"DOCUMENT_URI") == b"/sleep":
            await asyncio.sleep(30)
        await super().__call__(request)


async def test_timed_out_request_is_logged_504_and_counted_slow(
    access_lines: Lines, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="fcgi_async")
    config = Config(
        bind=("127.0.0.1:0",),
        access_log="-",
        access_log_format="%U %s",
        status_path="/status",
        slowlog_timeout_s=0.5,
        request_timeout_s=1.5,
    )
    async with Server(config, Sleeper(), wrap=install_features) as srv:
        host, _, port = srv.bound_addresses[0].rpartition(":")
        addr = (host, int(port))
        timed_out = await fcgi_request(addr, params_for("/sleep"))
        assert timed_out.status == 504
        status = await fcgi_request(addr, params_for("/status?json"))
        assert b'"slow requests": 1' in status.body
        await wait_lines(access_lines, 2)
    assert access_lines.lines == ["/sleep 504", "/status 200"]


async def test_wsgi_errors_lines_are_logged_once_with_their_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # By name: mypy cannot follow the adapters' package-dir mapping (as in cli._adapter).
    wsgi_adapter: Any = importlib.import_module("fcgi_async.adapters.wsgi").WSGIAdapter

    def wsgi_app(environ: dict[str, object], start_response: Any) -> list[bytes]:
        errors: Any = environ["wsgi.errors"]
        errors.write("line one\nline two\n")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    caplog.set_level(logging.INFO)
    adapter = wsgi_adapter(wsgi_app)
    async with Server(Config(bind=("127.0.0.1:0",)), adapter) as srv:
        host, _, port = srv.bound_addresses[0].rpartition(":")
        response = await fcgi_request((host, int(port)), params_for("/w"), request_id=3)
    assert response.stderr == b"line one\nline two\n"
    lines = [r.getMessage() for r in caplog.records if "line " in r.getMessage()]
    assert lines == [
        "request 3 (GET /w) stderr: line one",
        "request 3 (GET /w) stderr: line two",
    ]
