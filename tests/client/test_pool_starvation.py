"""The pool never starves against php-fpm, whose children stay pinned to kept-alive connections.

php-fpm answers GET_VALUES without FCGI_MAX_CONNS, accepts a connection only when a child is
free, and a child serves one connection until it closes. These tests run more concurrent
requests than ``pm.max_children`` and bound every wait: on a pool that keeps idle connections
while others wait in php-fpm's accept queue, they time out instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fcgi_async.client import (
    FastCGIClient,
    FastCGISyncTransport,
    FastCGITransport,
    Timeout,
    build_params,
)

from .conftest import PhpFpm, requires_php_fpm, run_php_fpm

pytestmark = [pytest.mark.phpfpm, requires_php_fpm, pytest.mark.timeout(120)]

#: Seconds any one batch may take. A hello.php answers in about a millisecond; the bound is
#: wide for a noisy 2-core machine, and far below the read timeouts a starved request waits.
BATCH_BOUND_S = 30.0


@contextlib.contextmanager
def _fpm(tmp_path: Path, max_children: int, pm: str = "static") -> Iterator[PhpFpm]:
    base = tmp_path / f"fpm-{pm}-{max_children}"
    base.mkdir()
    with run_php_fpm(base, max_children=max_children, pm=pm) as fpm:
        yield fpm


@pytest.fixture(
    scope="module",
    params=[(1, "static"), (2, "static"), (5, "static"), (2, "ondemand")],
    ids=["static1", "static2", "static5", "ondemand2"],
)
def fpm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PhpFpm]:
    """php-fpm with each of the acceptance's process-manager settings."""
    children, pm = request.param
    with _fpm(tmp_path_factory.mktemp("fpm"), children, pm) as fpm:
        yield fpm


def _check(i: int, body: bytes) -> None:
    assert body.startswith(b"hello %d " % i), body


async def test_twenty_posts_through_the_transport_do_not_hang(tmp_path: Path) -> None:
    """The issue's reproduction: 20 concurrent POSTs, ``pm.max_children = 2``."""
    with _fpm(tmp_path, 2) as fpm:
        transport = FastCGITransport(
            fpm.address, script_filename=fpm.script("hello.php"), document_root=str(fpm.root)
        )
        timeout = httpx.Timeout(BATCH_BOUND_S)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://h", timeout=timeout
        ) as http:
            started = time.monotonic()
            responses = await asyncio.wait_for(
                asyncio.gather(*(http.post(f"/?i={i}", content=b"x" * 100) for i in range(20))),
                BATCH_BOUND_S,
            )
            assert time.monotonic() - started < BATCH_BOUND_S
            for i, response in enumerate(responses):
                assert response.status_code == 200
                _check(i, response.content)


#: Microseconds each work.php request sleeps: "its share of the work" is measurable.
WORK_US = 5000


def _ideal_s(n: int, children: int) -> float:
    """Seconds n requests take on ``children`` processes doing nothing else."""
    return -(-n // children) * WORK_US / 1e6


def _bound_s(n: int, children: int) -> float:
    """The slowest request's allowed latency: its share of the work, with wide margins for a
    noisy shared machine (a starved request waits for a read timeout instead)."""
    return 4 * _ideal_s(n, children) + 3.0


async def _timed(coro_factory: object, i: int) -> tuple[float, bytes]:
    started = time.monotonic()
    body = await coro_factory(i)  # type: ignore[operator]
    return time.monotonic() - started, body


@pytest.mark.parametrize("n", [1, 10, 50, 200])
async def test_client_answers_every_request_in_its_share(fpm: PhpFpm, n: int) -> None:
    children = fpm.max_children
    async with FastCGIClient(fpm.address) as client:

        async def one(i: int) -> bytes:
            params = build_params(
                "GET", f"/work.php?i={i}&us={WORK_US}", document_root=str(fpm.root)
            )
            response = await client.request(params)
            assert response.status_code == 200
            return response.body

        results = await asyncio.wait_for(
            asyncio.gather(*(_timed(one, i) for i in range(n))), BATCH_BOUND_S
        )
        if n == 200:
            # The batch outlasts accept_grace (40 rounds of 5 ms at most 5 children): the pool
            # learned php-fpm's limit (one probe above it at most), so requests beyond it
            # queue in the pool and reuse kept-alive connections.
            assert client.connection_limit <= children + 1, client.connection_limit
            if fpm.pm == "static" and children <= 2:
                # Static children all accept the first burst; a wave of releases keeps that
                # count (more children, or ondemand spawning, may lag on a loaded machine).
                assert client.connection_limit >= children, client.connection_limit
    for i, (_, body) in enumerate(results):
        assert body == b"done %d" % i
    slowest = max(latency for latency, _ in results)
    assert slowest < _bound_s(n, children), (slowest, n, children)


@pytest.mark.parametrize("n", [1, 10, 50, 200])
async def test_async_transport_answers_every_request(fpm: PhpFpm, n: int) -> None:
    children = fpm.max_children
    transport = FastCGITransport(
        fpm.address, script_filename=fpm.script("work.php"), document_root=str(fpm.root)
    )
    async with httpx.AsyncClient(
        transport=transport, base_url="http://h", timeout=BATCH_BOUND_S
    ) as http:

        async def one(i: int) -> bytes:
            response = await http.post(f"/?i={i}&us={WORK_US}", content=b"payload")
            assert response.status_code == 200
            return response.content

        results = await asyncio.wait_for(
            asyncio.gather(*(_timed(one, i) for i in range(n))), BATCH_BOUND_S
        )
    assert [body for _, body in results] == [b"done %d" % i for i in range(n)]
    assert max(latency for latency, _ in results) < _bound_s(n, children)


@pytest.mark.parametrize("n", [1, 10, 50, 200])
def test_sync_transport_answers_every_request(fpm: PhpFpm, n: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    children = fpm.max_children
    transport = FastCGISyncTransport(
        fpm.address, script_filename=fpm.script("work.php"), document_root=str(fpm.root)
    )
    with httpx.Client(transport=transport, base_url="http://h", timeout=BATCH_BOUND_S) as http:

        def one(i: int) -> tuple[float, bytes]:
            started = time.monotonic()
            response = http.get(f"/?i={i}&us={WORK_US}")
            assert response.status_code == 200
            return time.monotonic() - started, response.content

        # Threads bounded at 50: the sync transport's pool is what is tested, not the GIL.
        with ThreadPoolExecutor(max_workers=min(n, 50)) as pool:
            results = list(pool.map(one, range(n), timeout=BATCH_BOUND_S))
    assert [body for _, body in results] == [b"done %d" % i for i in range(n)]
    assert max(latency for latency, _ in results) < _bound_s(n, children) + 2.0


@pytest.mark.parametrize("n", [1, 10])
def test_cli_calls_in_parallel(fpm: PhpFpm, n: int) -> None:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fcgi_async",
                "call",
                fpm.address,
                f"/work.php?i={i}&us={WORK_US}",
                "--document-root",
                str(fpm.root),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(n)
    ]
    try:
        for i, proc in enumerate(procs):
            out, err = proc.communicate(timeout=BATCH_BOUND_S + 30)
            assert proc.returncode == 0, err
            assert out == b"done %d" % i
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


async def test_a_pool_at_its_limit_gives_a_timeout_then_recovers(tmp_path: Path) -> None:
    """php-fpm's only child is busy: a request with a short deadline fails with the typed
    Timeout (never a hang), and the pool answers again once the child is free."""
    with _fpm(tmp_path, 1) as fpm:
        root = str(fpm.root)
        async with FastCGIClient(fpm.address) as client:
            slow = asyncio.create_task(
                client.request(build_params("GET", "/work.php?i=0&us=2000000", document_root=root))
            )
            # Wait (bounded) until the slow request is sent: the idle child takes it.
            deadline = time.monotonic() + 10
            while not any(c.served for c in client.connections):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            started = time.monotonic()
            with pytest.raises(Timeout) as caught:
                await client.request(
                    build_params("GET", "/work.php?i=1", document_root=root), timeout=0.5
                )
            assert caught.value.phase == "total"
            assert time.monotonic() - started < 5
            assert (await asyncio.wait_for(slow, 20)).body == b"done 0"
            again = await asyncio.wait_for(
                client.request(build_params("GET", "/work.php?i=2", document_root=root)), 20
            )
            assert again.body == b"done 2"
