"""Status and ping pages (php-fpm compatible): fields add up in every format, inline and with
workers; OpenMetrics parses with prometheus_client; ``?full`` rows; allowed clients only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from fcgi_async.config import Config, ConfigError
from fcgi_async.features import install_features
from fcgi_async.scoreboard import Scoreboard, WorkerState
from fcgi_async.server import Server
from fcgi_async.types import Request

from .fcgi import fcgi_request, params_for

pytestmark = pytest.mark.timeout(60)


class App:
    """A raw application: answers its path; counts what it saw."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    async def startup(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def __call__(self, request: Request) -> None:
        uri = request.params.get(b"REQUEST_URI", b"/")
        self.seen.append(uri)
        await request.end(b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\napp:" + uri)


@pytest.fixture
async def served() -> AsyncIterator[tuple[Server, App]]:
    app = App()
    config = Config(bind=("127.0.0.1:0",), status_path="/status", ping_path="/ping")
    server = Server(config, app, wrap=install_features)
    await server.start()
    yield server, app
    await server.shutdown(1.0)


def address(server: Server) -> tuple[str, int]:
    host, _, port = server.bound_addresses[0].rpartition(":")
    return host, int(port)


def parse_text(body: bytes) -> dict[str, str]:
    """php-fpm's plain text: the first block's ``key: value`` lines."""
    fields = {}
    for line in body.decode().split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


POOL_KEYS = [
    "pool",
    "process manager",
    "start time",
    "start since",
    "accepted conn",
    "listen queue",
    "max listen queue",
    "listen queue len",
    "idle processes",
    "active processes",
    "total processes",
    "max active processes",
    "max children reached",
    "slow requests",
]


def metrics(body: bytes) -> dict[str, float]:
    """Samples of an OpenMetrics text, as parsed by prometheus_client (which validates it)."""
    values = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            key = sample.name + (
                "{" + ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())) + "}"
                if sample.labels
                else ""
            )
            values[key] = sample.value
    return values


async def test_fields_add_up_in_every_format(served: tuple[Server, App]) -> None:
    server, app = served
    addr = address(server)
    for i in range(5):
        response = await fcgi_request(addr, params_for(f"/page/{i}"))
        assert response.body == f"app:/page/{i}".encode()

    text = await fcgi_request(addr, params_for("/status"))  # request 6
    assert text.status == 200
    assert text.headers["content-type"].startswith("text/plain")
    assert "no-cache" in text.headers["cache-control"]
    fields = parse_text(text.body)
    assert list(fields) == POOL_KEYS
    # php-fpm's layout: the key and its colon padded to 22 columns.
    assert text.body.decode().splitlines()[11] == "max active processes: 1"
    assert fields["pool"] == "www"
    assert fields["process manager"] == "static"
    assert fields["accepted conn"] == "6"  # the status request counts, as in php-fpm
    assert fields["active processes"] == "1"  # the one answering
    assert fields["idle processes"] == "0"
    assert fields["total processes"] == "1"
    assert fields["listen queue"] == "0"
    assert int(fields["listen queue len"]) > 0  # the kernel's accept queue size (TCP_INFO)
    assert fields["slow requests"] == "0"
    assert fields["max children reached"] == "0"

    doc = json.loads((await fcgi_request(addr, params_for("/status?json"))).body)  # 7
    assert list(doc) == POOL_KEYS
    assert doc["accepted conn"] == 7
    assert abs(doc["start time"] - time.time()) < 60
    assert doc["total processes"] == doc["idle processes"] + doc["active processes"] == 1

    om = await fcgi_request(addr, params_for("/status?openmetrics"))  # 8
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.body.endswith(b"# EOF\n")
    values = metrics(om.body)
    assert values["phpfpm_up"] == 1
    assert values["phpfpm_accepted_connections_total"] == 8
    assert values["phpfpm_active_processes"] == 1
    assert values["phpfpm_total_processes"] == 1
    assert values["phpfpm_slow_requests_total"] == 0
    # The app never saw the status requests.
    assert app.seen == [f"/page/{i}".encode() for i in range(5)]


async def test_listen_queue_counts_connections_not_yet_accepted(
    served: tuple[Server, App],
) -> None:
    server, _ = served
    status = server.state.status
    assert status is not None
    addr = address(server)
    # Blocking connects from the loop's own thread: the kernel completes them, and the
    # server cannot accept one until this test awaits again.
    waiting = [socket.create_connection(addr, timeout=5) for _ in range(3)]
    try:
        deadline = time.monotonic() + 2
        while (fields := parse_text(status.render(set())[1].encode()))["listen queue"] != "3":
            assert time.monotonic() < deadline, fields
            time.sleep(0.01)  # noqa: ASYNC251 - on purpose: the loop must not accept yet
        status.sample()  # what the server's once-a-second ticker does
    finally:
        for sock in waiting:
            sock.close()
    after = parse_text((await fcgi_request(addr, params_for("/status"))).body)
    assert after["listen queue"] == "0"  # accepted since
    assert after["max listen queue"] == "3"
    doc = json.loads((await fcgi_request(addr, params_for("/status?json"))).body)
    assert doc["max listen queue"] == 3
    values = metrics((await fcgi_request(addr, params_for("/status?openmetrics"))).body)
    assert values["phpfpm_max_listen_queue"] == 3


async def test_full_rows(served: tuple[Server, App]) -> None:
    server, _ = served
    addr = address(server)
    await fcgi_request(addr, params_for("/upload", "POST", CONTENT_LENGTH="3"), b"abc")
    doc = json.loads((await fcgi_request(addr, params_for("/status?json&full"))).body)
    [row] = doc["processes"]
    assert row["pid"] == os.getpid()
    assert row["state"] == "Running"
    assert row["requests"] == doc["accepted conn"] == 2
    assert row["request method"] == "GET"
    assert row["request uri"] == "/status?json&full"
    assert row["content length"] == 0
    # The process started with the server, the pool too; the running request has lasted
    # (in µs, as php-fpm counts) at most this test's time so far.
    assert abs(row["start time"] - time.time()) < 60
    assert row["start time"] == doc["start time"]
    assert 0 <= row["start since"] == doc["start since"] < 60
    assert 0 <= row["request duration"] < 60_000_000

    text = (await fcgi_request(addr, params_for("/status?full"))).body.decode()
    block = text.split("************************\n")[1]
    assert f"pid:                  {os.getpid()}\n" in block
    assert "request URI:          /status?full\n" in block
    assert "requests:             3\n" in block

    values = metrics((await fcgi_request(addr, params_for("/status?openmetrics&full"))).body)
    pid = os.getpid()
    assert values[f"phpfpm_process_requests_total{{pid={pid}}}"] == 4
    assert values[f"phpfpm_process_state{{pid={pid},state=Running}}"] == 1


async def test_ping(served: tuple[Server, App]) -> None:
    server, app = served
    response = await fcgi_request(address(server), params_for("/ping"))
    assert response.status == 200
    assert response.body == b"pong"
    assert response.headers["content-type"] == "text/plain"
    assert response.headers["cache-control"] == "no-cache"
    head = await fcgi_request(address(server), params_for("/ping", "HEAD"))
    assert head.status == 200
    assert head.body == b""
    assert app.seen == []


async def test_path_matching() -> None:
    app = App()
    config = Config(bind=("127.0.0.1:0",), ping_path="/fpm-ping", ping_response="alive")
    async with Server(config, app, wrap=install_features) as server:
        addr = address(server)
        # SCRIPT_NAME + PATH_INFO when there is no DOCUMENT_URI; REQUEST_URI last.
        split = params_for("/fpm-ping", DOCUMENT_URI=None, SCRIPT_NAME="/fpm", PATH_INFO="-ping")
        assert (await fcgi_request(addr, split)).body == b"alive"
        only_uri = {b"REQUEST_URI": b"/fpm-ping?x", b"REMOTE_ADDR": b"127.0.0.1"}
        assert (await fcgi_request(addr, only_uri)).body == b"alive"
        # A longer path or a different one is the app's.
        assert (await fcgi_request(addr, params_for("/fpm-ping/x"))).body == b"app:/fpm-ping/x"
        assert (await fcgi_request(addr, params_for("/status"))).body == b"app:/status"


async def test_refused_for_a_disallowed_client() -> None:
    app = App()
    config = Config(
        bind=("127.0.0.1:0",),
        status_path="/status",
        ping_path="/ping",
        allowed_clients=("127.0.0.1", "10.1.0.0/16"),
    )
    async with Server(config, app, wrap=install_features) as server:
        addr = address(server)
        for uri in ("/status", "/status?json", "/ping"):
            refused = await fcgi_request(addr, params_for(uri, REMOTE_ADDR="203.0.113.7"))
            assert refused.status == 403, uri
            assert b"pool" not in refused.body
            assert b"pong" not in refused.body
        allowed = await fcgi_request(addr, params_for("/ping", REMOTE_ADDR="10.1.2.3"))
        assert allowed.body == b"pong"
        # The app is not the fallback for a refused status request.
        assert app.seen == []


async def test_without_allowed_clients_only_loopback_users() -> None:
    config = Config(bind=("127.0.0.1:0",), status_path="/status")
    async with Server(config, App(), wrap=install_features) as server:
        addr = address(server)
        assert (await fcgi_request(addr, params_for("/status", REMOTE_ADDR="::1"))).status == 200
        outside = await fcgi_request(addr, params_for("/status", REMOTE_ADDR="198.51.100.1"))
        assert outside.status == 403
        # No REMOTE_ADDR (a direct FastCGI call): the connection's peer, loopback here.
        direct = params_for("/status")
        del direct[b"REMOTE_ADDR"]
        assert (await fcgi_request(addr, direct)).status == 200


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="status_path"):
        Config(status_path="status")
    with pytest.raises(ConfigError, match="both"):
        Config(status_path="/s", ping_path="/s")


def test_scoreboard_keeps_what_exited_workers_served() -> None:
    board = Scoreboard(2)
    try:
        board.reset(0, now=time.monotonic(), state=WorkerState.STARTING)
        board.report(0, 0, 7, time.monotonic())
        board.set_request(
            0, started_at=1.0, duration=0.5, content_length=0, slow_requests=2, method=b"GET",
            uri=b"/x",
        )  # fmt: skip
        board.reset(0, now=time.monotonic())  # reaped
        pool = board.pool()
        assert (pool.retired_requests, pool.retired_slow_requests) == (7, 2)
        assert board.read(0).total_requests == 0
        board.raise_pool_max("max_active_processes", 3)
        board.raise_pool_max("max_active_processes", 2)
        assert board.pool().max_active_processes == 3
    finally:
        board.close()


def test_the_scoreboard_clamps_what_does_not_fit() -> None:
    """Bookkeeping never fails a request: values beyond a 64-bit field are clamped."""
    board = Scoreboard(1)
    try:
        board.reset(0, now=time.monotonic(), state=WorkerState.STARTING)
        for length, slow, shown in [(-1, -5, (0, 0)), (2**64, 2**64, (2**64 - 1,) * 2)]:
            board.set_request(
                0, started_at=1.0, duration=-1.0, content_length=length, slow_requests=slow,
                method=b"POST" * 10, uri=b"/u" * 200,
            )  # fmt: skip
            info = board.request(0)
            assert (info.content_length, info.slow_requests) == shown
            assert info.method == "POSTPOSTPOSTPOST"  # cut to its 16-byte field
    finally:
        board.close()


# ------------------------------------------------------------------------ with workers
RAW_APP = """
import asyncio, os, time

class App:
    async def startup(self):
        pass

    async def shutdown(self):
        pass

    async def __call__(self, request):
        path = request.params.get(b"DOCUMENT_URI")
        if path == b"/slow":
            await asyncio.sleep(1.0)
        elif path == b"/block":  # blocks the event loop: the worker accepts nothing meanwhile
            open(os.path.join(os.path.dirname(__file__), "blocking"), "w").close()
            time.sleep(2.0)
        await request.end(b"Status: 200 OK\\r\\n\\r\\n" + str(os.getpid()).encode())

app = App()
"""


@contextlib.contextmanager
def supervisor(tmp_path: Path, *args: str) -> Iterator[str]:
    """fcgi-async with workers, status and ping on a unix socket; yields the socket path."""
    (tmp_path / "opsapp.py").write_text(RAW_APP)
    sock = str(tmp_path / "s.sock")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FCGI_ASYNC_")}
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "fcgi_async", "opsapp:app", "--app-dir", str(tmp_path),
         "--bind", f"unix:{sock}", "--status-path", "/status", "--ping-path", "/ping",
         "--graceful-timeout", "5", *args],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )  # fmt: skip
    try:
        yield sock
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[str]:
    """``--workers 2``; yields the socket path."""
    with supervisor(tmp_path, "--workers", "2") as sock:
        yield sock


async def wait_both_workers(sock: str) -> int:
    """Send pings until both workers serve; return how many requests that took."""
    sent = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            doc = json.loads((await fcgi_request(sock, params_for("/status?json"))).body)
            sent += 1
            if doc["total processes"] == 2:
                return sent
        except OSError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("the two workers never both served")


async def test_fields_add_up_over_two_workers(supervised: str) -> None:
    sock = supervised
    sent = await wait_both_workers(sock)
    pids = set()
    for _ in range(20):
        response = await fcgi_request(sock, params_for("/"))
        pids.add(int(response.body))
    sent += 20

    doc = json.loads((await fcgi_request(sock, params_for("/status?json&full"))).body)
    sent += 1
    assert doc["process manager"] == "static"
    assert doc["accepted conn"] == sent
    assert doc["total processes"] == 2 == doc["idle processes"] + doc["active processes"]
    assert doc["active processes"] >= 1
    rows = doc["processes"]
    assert len(rows) == 2
    assert sum(row["requests"] for row in rows) == sent
    assert pids <= {row["pid"] for row in rows}
    assert {row["state"] for row in rows} <= {"Idle", "Running"}
    assert doc["max active processes"] >= 1

    text = parse_text((await fcgi_request(sock, params_for("/status"))).body)
    sent += 1
    assert text["accepted conn"] == str(sent)
    assert text["total processes"] == "2"

    values = metrics((await fcgi_request(sock, params_for("/status?openmetrics&full"))).body)
    sent += 1
    assert values["phpfpm_accepted_connections_total"] == sent
    assert values["phpfpm_total_processes"] == 2
    per_worker = [v for k, v in values.items() if k.startswith("phpfpm_process_requests_total")]
    assert len(per_worker) == 2
    assert sum(per_worker) == sent

    assert (await fcgi_request(sock, params_for("/ping"))).body == b"pong"


@pytest.mark.parametrize(
    ("content_length", "shown"),
    [("-1", 0), (str(2**64), 0), ("9" * 19, 10**19 - 1), ("+5", 0), ("\u00b2", 0), ("7", 7)],
)
async def test_any_content_length_is_served_and_shown_as_the_adapters_parse_it(
    supervised: str, content_length: str, shown: int
) -> None:
    """CONTENT_LENGTH -1 (Caddy) or 2**64 once made the scoreboard raise and every such request
    a 500; the status page shows the length the adapters' parser accepts (unknown: 0)."""
    sock = supervised
    await wait_both_workers(sock)
    lengths: set[int] = set()
    for _ in range(20):  # until the worker that served /up is not the one serving /status
        response = await fcgi_request(
            sock, params_for("/up", "POST", CONTENT_LENGTH=content_length), b"abcdefg"
        )
        assert response.status == 200, response
        assert response.body.isdigit()
        doc = json.loads((await fcgi_request(sock, params_for("/status?json&full"))).body)
        rows = doc["processes"]
        lengths = {row["content length"] for row in rows if row["request uri"] == "/up"}
        if lengths:
            break
    assert lengths == {shown}


async def test_max_children_reached(tmp_path: Path) -> None:
    args = ["--pm", "dynamic", "--pm-max-children", "1", "--pm-start", "1"]
    args += ["--pm-min-spare", "1", "--pm-max-spare", "1"]
    with supervisor(tmp_path, *args) as sock:
        deadline = time.monotonic() + 20
        while True:
            try:
                await fcgi_request(sock, params_for("/ping"))
                break
            except OSError:
                assert time.monotonic() < deadline, "never served"
                await asyncio.sleep(0.05)
        # The only worker is busy for a second: no spare, and no room for one.
        slow = asyncio.create_task(fcgi_request(sock, params_for("/slow")))
        try:
            for _ in range(100):
                doc = json.loads((await fcgi_request(sock, params_for("/status?json"))).body)
                if doc["max children reached"]:
                    break
                await asyncio.sleep(0.02)
            assert doc["max children reached"] == 1
            assert doc["process manager"] == "dynamic"
        finally:
            await slow


async def test_max_children_reached_ondemand(tmp_path: Path) -> None:
    """php-fpm's ondemand counts a connection that waits while every child is busy and no
    more may be forked: once per episode."""
    args = ["--pm", "ondemand", "--pm-max-children", "1", "--pm-idle-timeout", "60"]
    with supervisor(tmp_path, *args) as sock:
        deadline = time.monotonic() + 20
        while True:  # the first connection forks the one worker
            try:
                doc = json.loads((await fcgi_request(sock, params_for("/status?json"))).body)
                break
            except OSError:
                assert time.monotonic() < deadline, "never served"
                await asyncio.sleep(0.05)
        assert (doc["process manager"], doc["max children reached"]) == ("ondemand", 0)
        blocked = asyncio.create_task(fcgi_request(sock, params_for("/block")))
        for _ in range(200):
            if (tmp_path / "blocking").exists():
                break
            await asyncio.sleep(0.02)
        assert (tmp_path / "blocking").exists(), "the blocking request never started"
        # Two connections wait in the accept queue; the worker answers them once it unblocks.
        waiting = [fcgi_request(sock, params_for("/status?json")) for _ in range(2)]
        docs = [json.loads(r.body) for r in await asyncio.gather(*waiting)]
        assert (await blocked).status == 200
        assert [d["max children reached"] for d in docs] == [1, 1]
        assert docs[0]["total processes"] == 1
    log = (tmp_path / "server.log").read_text()
    assert log.count("pool reached --pm-max-children (1)") == 1


async def test_accepted_conn_keeps_what_recycled_workers_served(tmp_path: Path) -> None:
    with supervisor(tmp_path, "--workers", "2", "--max-requests", "4") as sock:
        sent = 0
        deadline = time.monotonic() + 20
        pids: set[int] = set()
        while len(pids) < 5:  # at least three workers recycled
            assert time.monotonic() < deadline, f"only saw workers {pids}"
            try:
                pids.add(int((await fcgi_request(sock, params_for("/"))).body))
                sent += 1
            except (OSError, ValueError):
                await asyncio.sleep(0.05)
        doc = json.loads((await fcgi_request(sock, params_for("/status?json&full"))).body)
        sent += 1
        assert doc["accepted conn"] == sent
        assert sum(row["requests"] for row in doc["processes"]) < sent


@pytest.mark.parametrize(
    "settings", [{"status_path": "/status"}, {"ping_path": "/ping"}, {"access_log": "-"}]
)
def test_a_server_without_wrap_refuses_a_config_that_enables_a_feature(
    settings: dict[str, str],
) -> None:
    # The server package imports no feature: a caller that forgets the wrap would silently
    # lose the status page or the access log, so the Server says so instead.
    with pytest.raises(ValueError, match="install_features"):
        Server(Config(bind=("127.0.0.1:0",), **settings), App())
