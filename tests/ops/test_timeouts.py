"""--request-timeout and the slow log (php-fpm's request_terminate_timeout and slowlog).

Two layers: the watch driven by hand on a fake transport (``RequestWatch.check`` called with
made-up clock values, so nothing waits), and real in-process servers whose one-second ticker
does the work, talked to with the client package or raw sockets and the client codec.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fcgi_async.adapters.asgi import ASGIAdapter, Message, Receive, Scope, Send
from fcgi_async.adapters.wsgi import WSGIAdapter

from fcgi_async.cli import config_from_args, main, parse_args
from fcgi_async.client import FastCGIClient, build_params
from fcgi_async.config import Config, ConfigError
from fcgi_async.features import install_features
from fcgi_async.protocol import (
    NEED_DATA,
    ClientConnection,
    RemoteProtocolError,
    RequestEnded,
    StdoutReceived,
)
from fcgi_async.server import Server
from fcgi_async.server.connection import GATEWAY_TIMEOUT_RESPONSE
from fcgi_async.server.state import ServerState
from fcgi_async.server.timeouts import coroutine_frames, grace_s
from fcgi_async.types import Application, ClientDisconnected, Request
from tests.server.helpers import App, Harness, wait_until
from tests.supervisor.helpers import Supervised, wait_for

SLOW_PARAMS = {
    b"REQUEST_METHOD": b"POST",
    b"REQUEST_URI": b"/slow/path?x=1",
    b"SCRIPT_FILENAME": b"/srv/app/index.py",
}


@pytest.fixture(autouse=True)
async def _drop_harnesses() -> AsyncIterator[None]:
    """No fake connection or application task outlives a test (as tests/server's conftest)."""
    yield
    harnesses, Harness.live[:] = list(Harness.live), []
    for h in harnesses:
        h.transport.lose()
    tasks = [t for h in harnesses for t in h.state.tasks]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=5)


def _harness(handler: Callable[[Request], Any], **settings: Any) -> Harness:
    return Harness(handler, Config().replace(**settings))


def _start(h: Harness, params: dict[bytes, bytes] | None = None) -> None:
    h.feed(h.request_bytes(1, params or SLOW_PARAMS))


def _read_all(codec: ClientConnection) -> tuple[bytes, bool, Exception | None]:
    """Parse what ``codec`` received: (stdout, END_REQUEST seen, the error that stopped it)."""
    stdout = b""
    ended = False
    try:
        while (event := codec.next_event()) is not NEED_DATA:
            ended = ended or isinstance(event, RequestEnded)
            if isinstance(event, StdoutReceived):
                stdout += event.data
    except RemoteProtocolError as exc:
        return stdout, ended, exc
    return stdout, ended, None


def _age(h: Harness, seconds: float) -> float:
    """The loop time at which the (only) watched request is ``seconds`` old."""
    watch = h.state.watch
    assert watch is not None
    (handle,) = watch.running.values()
    return handle.started_at + seconds


# ----------------------------------------------------------------------- the watch by hand


async def test_off_by_default_nothing_is_watched() -> None:
    h = _harness(lambda req: req.end(b"Status: 200 OK\r\n\r\n"))
    assert h.state.watch is None
    _start(h)
    await wait_until(lambda: not h.state.tasks)
    assert h.state.slow_requests == 0


async def test_timeout_before_any_output_answers_504_and_cancels_the_task() -> None:
    seen: list[str] = []
    running = asyncio.Event()

    async def handler(req: Request) -> None:
        async def watch_disconnect() -> None:
            await req.wait_disconnected()
            seen.append("disconnected")

        watcher = asyncio.ensure_future(watch_disconnect())
        running.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            await watcher
            raise

    h = _harness(handler, request_timeout_s=5)
    _start(h)
    await wait_until(running.is_set)
    watch = h.state.watch
    assert watch is not None
    watch.check(_age(h, 4.9))
    assert h.transport.writes == []
    watch.check(_age(h, 5.0))
    events = h.events()
    assert isinstance(events[-1], RequestEnded)
    assert b"".join(e.data for e in events if isinstance(e, StdoutReceived)) == (
        GATEWAY_TIMEOUT_RESPONSE
    )
    assert not h.proto.requests  # the id is free
    await wait_until(lambda: not h.state.tasks)
    assert seen == ["disconnected", "cancelled"]
    assert not h.transport.closed  # the connection goes on serving


async def test_timeout_after_the_response_began_breaks_the_connection() -> None:
    async def handler(req: Request) -> None:
        await req.send_stdout(b"Status: 200 OK\r\n\r\npartial")
        await asyncio.sleep(30)

    h = _harness(handler, request_timeout_s=2)
    _start(h)
    await wait_until(lambda: h.transport.writes)
    watch = h.state.watch
    assert watch is not None
    watch.check(_age(h, 2.5))
    assert h.transport.closed
    h.client.receive_data(h.transport.output)
    stdout, ended, error = _read_all(h.client)
    assert stdout.endswith(b"partial")
    assert not ended
    assert isinstance(error, RemoteProtocolError)  # the poison record header
    await wait_until(lambda: not h.state.tasks)


async def test_slow_log_entry_is_written_once_with_the_stack(tmp_path: Path) -> None:
    path = tmp_path / "slow.log"
    running = asyncio.Event()

    async def crunch_numbers_slowly() -> None:
        await asyncio.sleep(30)

    async def slow_raw_handler(req: Request) -> None:
        running.set()
        await crunch_numbers_slowly()

    h = _harness(slow_raw_handler, slowlog_timeout_s=1, slowlog=str(path))
    assert path.exists()  # opened at start: a wrong path fails the start-up
    _start(h)
    await wait_until(running.is_set)
    watch = h.state.watch
    assert watch is not None
    watch.check(_age(h, 0.5))
    assert path.read_text() == ""
    for seconds in (1.0, 2.0, 3.0, 60.0):
        watch.check(_age(h, seconds))
    text = path.read_text()
    assert text.count(" request 1 ") == 1
    assert h.state.slow_requests == 1
    header = text.splitlines()[0]
    assert f"pid {os.getpid()}" in header
    assert "POST /slow/path?x=1" in header
    assert "script_filename=/srv/app/index.py" in header
    assert "running 1.0 s" in header
    # Innermost frame last, as in a traceback.
    assert text.index("slow_raw_handler") < text.index("crunch_numbers_slowly")
    assert h.transport.writes == []  # the slow log alone never touches the request


async def test_slow_log_without_a_file_goes_to_the_error_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fcgi_async.slowlog")
    running = asyncio.Event()

    async def dawdling_handler(req: Request) -> None:
        running.set()
        await asyncio.sleep(30)

    h = _harness(dawdling_handler, slowlog_timeout_s=1)
    _start(h, {b"REQUEST_METHOD": b"GET", b"REQUEST_URI": b"/evil\n[forged] line"})
    await wait_until(running.is_set)
    watch = h.state.watch
    assert watch is not None
    watch.check(_age(h, 1.5))
    (record,) = [r for r in caplog.records if r.name == "fcgi_async.slowlog"]
    message = record.getMessage()
    assert "dawdling_handler" in message
    assert "GET /evil\\x0a[forged] line" in message  # params cannot forge log lines


async def test_code_in_a_thread_is_not_cancelled_but_reported_and_recycled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fcgi_async")
    release = threading.Event()
    blocking = threading.Event()
    outcome: list[str] = []

    def stuck_in_a_thread() -> None:
        blocking.set()
        release.wait(10)

    async def handler(req: Request) -> None:
        thread = threading.Thread(target=stuck_in_a_thread)
        thread.start()
        req.thread_ident = thread.ident  # what the WSGI adapter does
        try:
            await asyncio.to_thread(thread.join)  # the task waits on the thread, like WSGI
            await req.send_stdout(b"too late")
        except ClientDisconnected:
            outcome.append("write failed")

    h = _harness(handler, request_timeout_s=3)
    reasons: list[str] = []
    h.state.on_recycle = reasons.append
    try:
        _start(h)
        await wait_until(blocking.is_set)
        watch = h.state.watch
        assert watch is not None
        watch.check(_age(h, 3.0))
        assert b"504 Gateway Timeout" in h.transport.output
        (task,) = h.state.tasks
        assert not task.cancelled()
        assert grace_s(3) == 3
        watch.check(_age(h, 5.9))
        assert not reasons
        watch.check(_age(h, 6.0))
        watch.check(_age(h, 7.0))
        assert len(reasons) == 1
        assert h.state.recycle_requested
        (stuck,) = [r for r in caplog.records if "ignores it" in r.getMessage()]
        assert stuck.levelno == logging.ERROR
        assert "stuck_in_a_thread" in stuck.getMessage()
        assert "POST /slow/path?x=1" in stuck.getMessage()
    finally:
        release.set()
    await wait_until(lambda: not h.state.tasks)
    assert outcome == ["write failed"]


async def test_inline_recycle_recommends_a_restart_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="fcgi_async.server")
    state = ServerState(Config(), App(lambda req: req.end()), asyncio.get_running_loop())
    state.request_recycle("request 1 (GET /) is stuck")
    state.request_recycle("request 2 (GET /) is stuck")
    (record,) = caplog.records
    assert "request 1" in record.getMessage()
    assert "restart" in record.getMessage()


async def test_the_task_stack_reaches_into_awaited_tasks() -> None:
    gate = asyncio.Event()

    async def innermost_waiter() -> None:
        await gate.wait()

    async def outer() -> None:
        await asyncio.ensure_future(innermost_waiter())

    task = asyncio.ensure_future(outer())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    names = [f.f_code.co_name for f in coroutine_frames(task.get_coro())]
    assert names[0] == "outer"
    assert "innermost_waiter" in names
    gate.set()
    await task


# ---------------------------------------------------------------- configuration and CLI


def test_settings_are_validated() -> None:
    assert Config().request_timeout_s == 0
    assert Config().slowlog_timeout_s == 0
    assert Config().slowlog is None
    for bad in ({"request_timeout_s": -1}, {"slowlog_timeout_s": float("nan")}, {"slowlog": ""}):
        with pytest.raises(ConfigError):
            Config().replace(**bad)


def test_flags_and_environment(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args(
        ["app:x", "--request-timeout", "30", "--slowlog", "/tmp/s.log"],
        {"FCGI_ASYNC_SLOWLOG_TIMEOUT": "2.5", "FCGI_ASYNC_REQUEST_TIMEOUT": "99"},
    )
    config = config_from_args(args)
    assert config.request_timeout_s == 30
    assert config.slowlog_timeout_s == 2.5
    assert config.slowlog == "/tmp/s.log"
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--request-timeout", "--slowlog-timeout", "--slowlog PATH"):
        assert flag in out


# ------------------------------------------------------------------- real servers


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    """``await serve(app, **config)`` starts a Server on loopback; all stop at teardown."""
    running: list[Server] = []

    async def start(app: Application, **settings: Any) -> Server:
        server = Server(
            Config().replace(bind=("127.0.0.1:0",), **settings), app, wrap=install_features
        )
        await server.start()
        running.append(server)
        return server

    yield start
    for server in running:
        await server.shutdown(5.0)


def _params(target: str = "/slow/path?x=1") -> dict[str, bytes]:
    return build_params("GET", target, script_filename="/srv/app/index.py")


async def test_asgi_request_over_the_timeout_gets_504_and_the_app_is_told(
    serve: Callable[..., Any],
) -> None:
    events: list[str] = []
    listeners: list[asyncio.Future[None]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/fast":
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"fast"})
            return

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            events.append("http.disconnect")

        listeners.append(asyncio.ensure_future(listen()))
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    server = await serve(ASGIAdapter(app, lifespan="off"), request_timeout_s=1)
    async with FastCGIClient(server.bound_addresses[0]) as client:
        response = await client.request(_params(), timeout=10)
        assert response.status_code == 504
        assert response.body == b"Gateway Timeout"
        await wait_until(lambda: len(events) == 2, within_s=5)
        assert sorted(events) == ["cancelled", "http.disconnect"]
        again = await client.request(_params("/fast"), timeout=10)  # the id was freed cleanly
        assert again.body == b"fast"
    await wait_until(lambda: not server.state.tasks)


async def test_started_response_over_the_timeout_fails_visibly(
    serve: Callable[..., Any],
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        await asyncio.sleep(30)

    server = await serve(ASGIAdapter(app, lifespan="off"), request_timeout_s=1)
    host, _, port = server.bound_addresses[0].rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    codec = ClientConnection()
    writer.write(codec.begin_request(1, keep_conn=True))
    writer.writelines(codec.send_params(1, {b"REQUEST_METHOD": b"GET", b"REQUEST_URI": b"/"}))
    writer.write(codec.end_stdin(1))
    try:
        raw = await asyncio.wait_for(reader.read(-1), 10)  # until the server closes
    finally:
        writer.close()
    codec.receive_data(raw)
    stdout, ended, error = _read_all(codec)
    assert stdout.endswith(b"partial")
    assert not ended
    assert isinstance(error, RemoteProtocolError)  # the poison record header


async def test_wsgi_thread_that_ignores_the_timeout_is_reported_and_recycled(
    serve: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fcgi_async")
    release = threading.Event()
    outcome: list[str] = []

    def stuck_wsgi_view(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        release.wait(20)
        try:
            write(b"too late")
        except ClientDisconnected:
            outcome.append("write failed")
        return []

    server = await serve(WSGIAdapter(stuck_wsgi_view, threads=2), request_timeout_s=1)
    reasons: list[str] = []
    server.state.on_recycle = reasons.append
    try:
        async with FastCGIClient(server.bound_addresses[0]) as client:
            response = await client.request(_params(), timeout=10)
        assert response.status_code == 504
        await wait_until(lambda: reasons, within_s=6)
        (stuck,) = [r for r in caplog.records if "ignores it" in r.getMessage()]
        assert "stuck_wsgi_view" in stuck.getMessage()
        assert "its thread ignores it" in stuck.getMessage()
    finally:
        release.set()
    await wait_until(lambda: not server.state.tasks, within_s=5)
    assert outcome == ["write failed"]
    assert len(reasons) == 1


async def test_a_wsgi_request_that_timed_out_waiting_for_a_thread_never_runs(
    serve: Callable[..., Any],
) -> None:
    release = threading.Event()
    ran: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        ran.append(path)
        if path == "/block":
            release.wait(20)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [path.encode()]

    server = await serve(WSGIAdapter(app, threads=1), request_timeout_s=1)
    try:
        async with FastCGIClient(server.bound_addresses[0]) as client:
            blocked = asyncio.ensure_future(client.request(_params("/block"), timeout=10))
            await wait_until(lambda: ran == ["/block"])
            queued = await client.request(_params("/queued"), timeout=10)  # no thread is free
            assert queued.status_code == 504
            assert (await blocked).status_code == 504
            release.set()
            # The one thread takes jobs in order: once /fast is answered, /queued was skipped.
            fast = await client.request(_params("/fast"), timeout=10)
            assert fast.body == b"/fast"
    finally:
        release.set()
    assert ran == ["/block", "/fast"]


def _asgi_slow_app(gate: asyncio.Event) -> Application:
    async def crunch_numbers_slowly() -> None:
        await gate.wait()

    async def slow_asgi_view(scope: Scope, receive: Receive, send: Send) -> None:
        await crunch_numbers_slowly()
        message: Message = {"type": "http.response.start", "status": 200}
        await send(message)
        await send({"type": "http.response.body", "body": b"done"})

    return ASGIAdapter(slow_asgi_view, lifespan="off")


def _wsgi_slow_app(gate: threading.Event) -> Application:
    def crunch_numbers_slowly() -> None:
        gate.wait(20)

    def slow_wsgi_view(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        crunch_numbers_slowly()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    return WSGIAdapter(slow_wsgi_view, threads=2)


@pytest.fixture(params=["asgi", "wsgi"])
def slow_app(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[str, Application, Callable[[], None]]]:
    """(interface, an app stuck in ``crunch_numbers_slowly`` until released, release)."""
    if request.param == "asgi":
        agate = asyncio.Event()
        yield "asgi", _asgi_slow_app(agate), agate.set
    else:
        tgate = threading.Event()
        try:
            yield "wsgi", _wsgi_slow_app(tgate), tgate.set
        finally:
            tgate.set()


async def test_slow_log_shows_the_slow_app_code_once_per_request(
    serve: Callable[..., Any],
    slow_app: tuple[str, Application, Callable[[], None]],
    tmp_path: Path,
) -> None:
    kind, app, release = slow_app
    path = tmp_path / "slow.log"
    server = await serve(app, slowlog_timeout_s=1, slowlog=str(path))
    state = server.state
    async with FastCGIClient(server.bound_addresses[0]) as client:
        pending = asyncio.ensure_future(client.request(_params(), timeout=15))
        try:
            await wait_until(lambda: "crunch_numbers_slowly" in path.read_text(), within_s=5)
            watch = state.watch
            assert watch is not None
            (handle,) = watch.running.values()
            # Two more ticks while it still runs: no second entry.
            await wait_until(lambda: state.loop.time() - handle.started_at > 3.2, within_s=5)
        finally:
            release()
        response = await pending
    assert response.body == b"done"
    text = path.read_text()
    assert text.count(f"pid {os.getpid()} request 1 ") == 1
    assert text.count("in crunch_numbers_slowly") == 1
    assert "GET /slow/path?x=1" in text
    assert "script_filename=/srv/app/index.py" in text
    assert f"slow_{kind}_view" in text
    if kind == "wsgi":
        assert "Thread " in text  # the thread's stack, not the task waiting on it
    assert state.slow_requests == 1


# ------------------------------------------------------------------ under the supervisor

STUCK_WSGI_APP = """
import os, time

def stuck_in_blocking_code(seconds):
    time.sleep(seconds)

def app(environ, start_response):
    if environ["PATH_INFO"] == "/stuck":
        stuck_in_blocking_code(float(environ["QUERY_STRING"]))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
"""


def test_a_worker_with_a_stuck_thread_is_recycled(tmp_path: Path) -> None:
    (tmp_path / "stuckapp.py").write_text(STUCK_WSGI_APP)
    server = Supervised(
        tmp_path,
        "--workers",
        "2",
        "--request-timeout",
        "1",
        "--graceful-timeout",
        "3",
        app="stuckapp:app",
    )
    try:
        server.wait_serving(workers=2)
        status, _ = server.get("/stuck?6")
        assert status == 504
        wait_for(lambda: "is stuck past --request-timeout: recycling" in server.log)
        found = re.search(r"worker (\d+): request 1 .* is stuck", server.log)
        assert found is not None
        stuck_pid = int(found.group(1))
        log = server.log
        assert "stuck_in_blocking_code" in log  # the thread's stack was reported
        assert "its thread ignores it" in log
        wait_for(
            lambda: stuck_pid not in server.workers() and len(server.listening()) == 2,
            what="the stuck worker to be replaced",
        )
        status, body = server.get("/")
        assert status == 200
        assert int(body) != stuck_pid
        assert "died unexpectedly" not in server.log
    finally:
        server.kill()


def test_slow_log_file_with_workers(tmp_path: Path) -> None:
    """--slowlog PATH through the CLI with two workers: each worker writes its own slow
    requests, with its pid and the stack of the code serving them, to the one file."""
    (tmp_path / "stuckapp.py").write_text(STUCK_WSGI_APP)
    slowlog = tmp_path / "slow.log"
    server = Supervised(
        tmp_path,
        *("--workers", "2", "--slowlog-timeout", "0.5", "--slowlog", str(slowlog)),
        app="stuckapp:app",
    )
    try:
        server.wait_serving(workers=2)
        status, body = server.get("/stuck?1.5")
        assert status == 200
        wait_for(lambda: slowlog.exists() and "stuck_in_blocking_code" in slowlog.read_text())
        text = slowlog.read_text()
        assert f"pid {int(body)} request 1 " in text  # the worker that served it
        assert text.count("in stuck_in_blocking_code") == 1  # once per request
        assert "/stuck" in text
        assert server.get("/")[0] == 200  # fast requests are not logged
        assert slowlog.read_text() == text
    finally:
        server.kill()
