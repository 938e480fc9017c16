"""Who may connect over TCP (``--allowed-clients``, ``FCGI_WEB_SERVER_ADDRS``), on real IPv4
and IPv6 loopback sockets: allowed peers are served, others are closed at accept with a log
line naming them, inline and with workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from fcgi_async.config import Config
from fcgi_async.features import install_features
from fcgi_async.server import Server
from fcgi_async.types import Request

from .fcgi import fcgi_request, params_for

pytestmark = pytest.mark.timeout(60)

#: Upper bound for a subprocess to start serving.
START_S = 20.0


class App:
    """A raw application answering ``ok``."""

    async def startup(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def __call__(self, request: Request) -> None:
        await request.end(b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nok")


def tcp_address(bound: str) -> tuple[str, int]:
    """``127.0.0.1:9000`` or ``[::1]:9000`` as a (host, port) pair."""
    host, _, port = bound.rpartition(":")
    return host.strip("[]"), int(port)


@contextlib.asynccontextmanager
async def serving(allowed: tuple[str, ...]) -> AsyncIterator[dict[str, tuple[str, int]]]:
    """An inline Server on 127.0.0.1 and ::1; yields {"v4": addr, "v6": addr}."""
    config = Config(bind=("127.0.0.1:0", "[::1]:0"), allowed_clients=allowed)
    async with Server(config, App(), wrap=install_features) as server:
        v4, v6 = (tcp_address(b) for b in server.bound_addresses)
        assert (v4[0], v6[0]) == ("127.0.0.1", "::1")
        yield {"v4": v4, "v6": v6}


async def answered(address: tuple[str, int]) -> bool:
    """True when a request on ``address`` is served; False when the server closed it."""
    try:
        response = await fcgi_request(address, params_for("/"))
    except ConnectionError:
        return False
    assert response.body == b"ok"
    return True


@pytest.mark.parametrize(
    ("allowed", "served"),
    [
        (("127.0.0.1", "::1"), {"v4", "v6"}),  # single addresses
        (("127.0.0.0/8",), {"v4"}),  # a v4 network does not admit ::1
        (("::1/128",), {"v6"}),  # a v6 network does not admit 127.0.0.1
        (("10.0.0.0/8", "2001:db8::/32"), set()),
        # IPv4-mapped spellings mean the IPv4 client (the dual-stack socket's view of it).
        (("::ffff:127.0.0.1",), {"v4"}),
        (("::ffff:127.0.0.0/104",), {"v4"}),
        (("::ffff:10.0.0.1",), set()),
    ],
)
async def test_tcp_peers_v4_and_v6(
    allowed: tuple[str, ...], served: set[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fcgi_async")
    async with serving(allowed) as addresses:
        results = {family: await answered(addr) for family, addr in addresses.items()}
    assert {family for family, ok in results.items() if ok} == served
    refusals = [r.getMessage() for r in caplog.records if "not an allowed client" in r.getMessage()]
    expected = []
    if "v4" not in served:
        expected.append("refusing connection from 127.0.0.1:")
    if "v6" not in served:
        expected.append("refusing connection from [::1]:")
    assert len(refusals) == len(expected), refusals
    for line, start in zip(refusals, expected, strict=True):
        assert line.startswith(start), line
        assert line.endswith("not an allowed client (--allowed-clients)")


RAW_APP = """
class App:
    async def startup(self):
        pass

    async def shutdown(self):
        pass

    async def __call__(self, request):
        await request.end(b"Status: 200 OK\\r\\n\\r\\nok")

app = App()
"""


@contextlib.contextmanager
def supervised(tmp_path: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """``fcgi-async --workers 2`` on 127.0.0.1 and ::1 (port 0), logging to server.log."""
    (tmp_path / "allowapp.py").write_text(RAW_APP)
    argv = [sys.executable, "-m", "fcgi_async", "allowapp:app", "--app-dir", str(tmp_path)]
    argv += ["--bind", "127.0.0.1:0", "--bind", "[::1]:0", "--workers", "2"]
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [*argv, "--graceful-timeout", "5"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


async def test_fcgi_web_server_addrs_with_workers(tmp_path: Path) -> None:
    """The supervisor's workers apply FCGI_WEB_SERVER_ADDRS on the sockets they inherit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FCGI_ASYNC_")}
    env["FCGI_WEB_SERVER_ADDRS"] = "::1"
    log_path = tmp_path / "server.log"
    with supervised(tmp_path, env) as proc:
        deadline = time.monotonic() + START_S
        while True:
            found = re.findall(r"listening on (\S+)", log_path.read_text())
            if len(set(found)) == 2:
                break
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the workers never listened"
            await asyncio.sleep(0.05)
        v4 = next(tcp_address(a) for a in found if a.startswith("127.0.0.1:"))
        v6 = next(tcp_address(a) for a in found if a.startswith("[::1]:"))
        assert await answered(v6)
        assert not await answered(v4)
        refused = "refusing connection from 127.0.0.1:"
        for _ in range(100):  # the worker's log line may trail the closed connection
            if refused in log_path.read_text():
                break
            await asyncio.sleep(0.05)
        text = log_path.read_text()
        assert re.search(r"\[\d+\] WARNING fcgi_async\.server: " + refused, text), text
        assert "refusing connection from [::1]" not in text
