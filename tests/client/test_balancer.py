"""FastCGIBalancer: several servers, round-robin or least-busy, failover, health marks."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from pathlib import Path

import httpx
import pytest

from fcgi_async.client import (
    ConnectError,
    FastCGIBalancer,
    FastCGIError,
    FastCGITransport,
)
from fcgi_async.types import Request

from .conftest import requires_php_fpm, run_php_fpm, serve

pytestmark = pytest.mark.timeout(90)

OK = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n"


def _refusing_address() -> str:
    """A 127.0.0.1 port nothing listens on (bound then closed: connecting is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _named(name: bytes):  # type: ignore[no-untyped-def]
    async def app(request: Request) -> None:
        await asyncio.sleep(0.002)
        await request.end(OK + name)

    return app


async def test_round_robin_spreads_requests_evenly() -> None:
    async with (
        serve(_named(b"a")) as (_, a, _app),
        serve(_named(b"b")) as (_, b, _app2),
        FastCGIBalancer([a, b]) as balancer,
    ):
        bodies = [(await balancer.request({})).body for _ in range(10)]
    assert Counter(bodies) == {b"a": 5, b"b": 5}


async def test_least_busy_avoids_the_server_with_requests_running() -> None:
    release = asyncio.Event()

    async def slow(request: Request) -> None:
        await release.wait()
        await request.end(OK + b"slow")

    async with (
        serve(slow) as (_, a, slow_app),
        serve(_named(b"fast")) as (_, b, _app2),
        FastCGIBalancer([a, b], strategy="least_busy") as balancer,
    ):
        first = asyncio.create_task(balancer.request({}))  # the rotation starts at a
        await asyncio.wait_for(slow_app.arrived.wait(), 10)
        assert balancer.clients[0].load == 1
        bodies = [(await balancer.request({})).body for _ in range(6)]
        assert bodies == [b"fast"] * 6
        release.set()
        assert (await first).body == b"slow"


async def test_failover_and_health_mark_then_retry(caplog: pytest.LogCaptureFixture) -> None:
    dead = _refusing_address()
    async with (
        serve(_named(b"up")) as (_, up, _app),
        FastCGIBalancer([dead, up], retry_after=0.3) as balancer,
    ):
        bodies = [(await balancer.request({})).body for _ in range(6)]
        assert bodies == [b"up"] * 6
        assert balancer.is_down(0)
        # One warning per mark, not one per request.
        marks = [r for r in caplog.records if "marked down" in r.getMessage()]
        assert len(marks) == 1
        assert dead in marks[0].getMessage()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while balancer.is_down(0):
            assert loop.time() < deadline
            await asyncio.sleep(0.05)
        # Past retry_after the dead server is tried again, refuses, and is marked again.
        assert (await balancer.request({})).body == b"up"
        assert (await balancer.request({})).body == b"up"
        assert balancer.is_down(0)


async def test_every_server_refusing_raises_connect_error() -> None:
    async with FastCGIBalancer([_refusing_address(), _refusing_address()]) as balancer:
        with pytest.raises(ConnectError):
            await balancer.request({})
        assert balancer.is_down(0)
        assert balancer.is_down(1)
        # Marked down or not, the servers are still tried: the error is the same.
        with pytest.raises(ConnectError):
            await balancer.request({})


def test_balancer_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        FastCGIBalancer([])
    with pytest.raises(ValueError, match="non-empty"):
        FastCGIBalancer("127.0.0.1:9000")
    with pytest.raises(ValueError, match="strategy"):
        FastCGIBalancer(["127.0.0.1:9000"], strategy="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retry_after"):
        FastCGIBalancer(["127.0.0.1:9000"], retry_after=float("nan"))


@requires_php_fpm
@pytest.mark.phpfpm
@pytest.mark.parametrize("strategy", ["round_robin", "least_busy"])
async def test_two_php_fpm_pools_one_stopped_mid_run(tmp_path: Path, strategy: str) -> None:
    """Load over two php-fpm pools; one is stopped mid-run. No request fails beyond those in
    flight on the stopped one, and the survivor answers the rest."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    total, concurrency, stop_after = 400, 10, 100
    with (
        run_php_fpm(tmp_path / "a", max_children=2, pool="a") as fpm_a,
        run_php_fpm(tmp_path / "b", max_children=2, pool="b") as fpm_b,
    ):
        transport = FastCGITransport(
            [fpm_a.address, fpm_b.address],
            script_filename=fpm_a.script("hello.php"),
            strategy=strategy,
        )
        # Both pools serve the same script path layout; a's root is used for both.
        (fpm_b.root / "hello.php").write_text((fpm_a.root / "hello.php").read_text())
        balancer = transport.client
        assert isinstance(balancer, FastCGIBalancer)
        done = 0
        #: (when the request started, what it raised)
        failures: list[tuple[float, BaseException]] = []
        stop_done = float("inf")
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(total):
            queue.put_nowait(i)
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def worker(http: httpx.AsyncClient) -> None:
            nonlocal done, stop_done
            while not queue.empty():
                i = queue.get_nowait()
                started = loop.time()
                try:
                    response = await http.get(f"/?i={i}")
                    assert response.content.startswith(b"hello %d " % i)
                except (httpx.TransportError, FastCGIError) as exc:
                    failures.append((started, exc))
                done += 1
                if done == stop_after and not stopped.is_set():
                    stopped.set()
                    await asyncio.to_thread(fpm_b.stop)
                    stop_done = loop.time()

        async with httpx.AsyncClient(transport=transport, base_url="http://h", timeout=30) as http:
            await asyncio.wait_for(asyncio.gather(*(worker(http) for _ in range(concurrency))), 60)
        assert stopped.is_set()
        assert done == total
        # Requests in flight on b while it stopped may fail: those sent on connections in
        # its accept queue are reset when it closes its socket. No request started after it
        # stopped fails, none fails on a, and none fails for want of a server (refused
        # connections fail over to a).
        for started, exc in failures:
            assert started < stop_done, exc
            assert str(fpm_b.socket_path) in str(exc), exc
            assert not isinstance(exc, httpx.ConnectError), exc
        assert len(failures) <= concurrency
        assert balancer.is_down(1)
