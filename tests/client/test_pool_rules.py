"""The pool's timer and concurrency rules against our own server; argument validation."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import pytest

from fcgi_async.client import FastCGIClient, Timeouts
from fcgi_async.client.cli import EXIT_USAGE, main
from fcgi_async.types import Request

from .conftest import serve

pytestmark = pytest.mark.timeout(60)

OK = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n"
#: Seconds a polled condition may take before the test fails.
WAIT_BOUND_S = 10.0


async def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_BOUND_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def echo_uri(request: Request) -> None:
    await asyncio.sleep(0.005)
    await request.end(OK + request.params.get(b"REQUEST_URI", b""))


async def test_idle_connection_closes_on_a_timer_without_more_requests() -> None:
    """The keep-alive expiry used to be checked only when the pool next decided something:
    an unused client held its connections (and php-fpm's children) forever."""
    async with (
        serve(echo_uri, multiplex=False) as (_server, address, _),
        FastCGIClient(address, keepalive_expiry=0.2) as client,
    ):
        response = await client.request({"REQUEST_URI": "/a"})
        assert response.body == b"/a"
        (conn,) = client.connections
        await _wait_until(conn.is_closed)
        assert client.connections == []
        assert client._timer is None  # nothing left to wait for: no timer armed


async def test_closing_the_client_cancels_its_timer() -> None:
    async with serve(echo_uri) as (_, address, _app):
        client = FastCGIClient(address, keepalive_expiry=60)
        await client.request({"REQUEST_URI": "/a"})
        timer = client._timer
        assert timer is not None
        assert not timer.cancelled()
        await client.aclose()
        assert timer.cancelled()
        assert client._timer is None


@pytest.mark.parametrize(
    ("server_multiplex", "client_multiplex"),
    [(True, None), (False, None), (True, False)],
    ids=["mpx", "no-mpx", "client-no-mpx"],
)
async def test_our_server_answers_200_concurrent_requests(
    server_multiplex: bool, client_multiplex: bool | None
) -> None:
    async with (
        serve(echo_uri, multiplex=server_multiplex) as (_, address, _app),
        FastCGIClient(address, multiplex=client_multiplex) as client,
    ):
        started = time.monotonic()
        responses = await asyncio.wait_for(
            asyncio.gather(*(client.request({"REQUEST_URI": f"/{i}"}) for i in range(200))),
            30,
        )
        assert [r.body for r in responses] == [b"/%d" % i for i in range(200)]
        assert time.monotonic() - started < 30
        assert client.multiplexing is (server_multiplex and client_multiplex is None)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, 0.0, -math.inf])
@pytest.mark.parametrize("field", ["connect", "pool", "read", "write", "total"])
def test_timeouts_refuse_values_that_bound_nothing(field: str, bad: float) -> None:
    with pytest.raises(ValueError, match=f"timeout {field} must be"):
        Timeouts(**{field: bad})


async def test_request_timeout_nan_is_refused() -> None:
    client = FastCGIClient("127.0.0.1:9")
    try:
        with pytest.raises(ValueError, match="timeout total"):
            await client.request({}, timeout=math.nan)
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_response_bytes": 0},
        {"max_response_bytes": -5},
        {"max_header_bytes": 0},
        {"keepalive_expiry": math.nan},
        {"keepalive_expiry": -1},
        {"accept_grace": math.inf},
        {"probe_interval": math.nan},
        {"get_values_timeout": -0.5},
    ],
)
def test_client_refuses_bad_limits(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        FastCGIClient("127.0.0.1:9", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "soon"])
@pytest.mark.parametrize("option", ["--timeout", "--read-timeout"])
def test_call_refuses_timeouts_that_bound_nothing(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["127.0.0.1:9", "/", option, value]) == EXIT_USAGE
    assert "expected a number of seconds > 0" in capsys.readouterr().err
