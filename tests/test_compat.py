"""fcgi_async._compat: the 3.11+ standard library names the package uses, on every Python.

tests/run.sh runs this on 3.10 (the backports) as well as 3.11+ (the standard library's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import pytest

from fcgi_async import _compat


async def test_timeout_raises_the_builtin_timeout_error_and_says_it_expired() -> None:
    # On 3.10 asyncio.TimeoutError is not the builtin; every `except TimeoutError` relies on it.
    with pytest.raises(TimeoutError) as info:
        async with _compat.timeout(0.01) as cm:
            await asyncio.sleep(30)
    assert type(info.value) is TimeoutError
    assert cm.expired()


async def test_timeout_that_does_not_expire_leaves_the_block_alone() -> None:
    async with _compat.timeout(30) as cm:
        await asyncio.sleep(0)
    assert not cm.expired()


async def test_timeout_does_not_swallow_an_outside_cancellation() -> None:
    entered = asyncio.Event()

    async def body() -> None:
        async with _compat.timeout(30):
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.ensure_future(body())
    async with _compat.timeout(10):
        await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_run_with_loop_runs_on_the_factory_loop_and_cleans_up() -> None:
    made: list[asyncio.AbstractEventLoop] = []
    leftover: list[asyncio.Task[None]] = []

    def factory() -> asyncio.AbstractEventLoop:
        made.append(asyncio.new_event_loop())
        return made[0]

    async def main() -> int:
        assert asyncio.get_running_loop() is made[0]
        leftover.append(asyncio.ensure_future(asyncio.sleep(3600)))
        return 7

    assert _compat.run_with_loop(main(), factory) == 7
    assert made[0].is_closed()
    assert leftover[0].cancelled()


def test_run_with_loop_defaults_to_a_fresh_asyncio_loop() -> None:
    async def main() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    loop = _compat.run_with_loop(main(), None)
    assert loop.is_closed()


async def test_uncancel_withdraws_a_cancellation_request() -> None:
    counts: list[int] = []

    async def child() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        _compat.uncancel(task)
        counts.append(task.cancelling() if sys.version_info >= (3, 11) else 0)
        # Whether the request still arrives differs (3.13 drops it with the count): either way
        # the task goes on.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)

    await asyncio.ensure_future(child())
    assert counts == [0]


def test_tomllib_parses_toml() -> None:
    assert _compat.tomllib.loads('threads = 8\nbind = ["a"]') == {"threads": 8, "bind": ["a"]}
