"""A request that only sends can neither outlive its client nor hold the event loop.

On the request seam (:class:`fcgi_async.server.connection.RequestHandle`), driven through a fake
transport that never pushes back (a peer that is alive and fast, or a connection whose writes
the transport drops since it failed): once the transport is closing, sends raise
:class:`ClientDisconnected` and write nothing more; and a run of sends that never wait for the
socket still gives the loop a turn every YIELD_AFTER_BYTES.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from fcgi_async.server.connection import SEND_CALL_COST, YIELD_AFTER_BYTES
from fcgi_async.types import ClientDisconnected, Request
from tests.server.helpers import Harness, wait_until

#: Bounds every loop of these tests: far more sends than any yield interval.
SENDS = 2000
CHUNK = b"x" * 16384


@pytest.fixture(autouse=True)
async def _drop_harnesses() -> AsyncIterator[None]:
    """No connection or application task outlives a test (as tests/server's fixture)."""
    yield
    harnesses, Harness.live[:] = list(Harness.live), []
    for h in harnesses:
        h.transport.lose()
    tasks = [t for h in harnesses for t in h.state.tasks]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=5)
    assert all(t.done() for t in tasks)


def test_client_disconnected_is_an_oserror() -> None:
    """ASGI asks send() on a gone client to raise an OSError: applications catch that."""
    assert issubclass(ClientDisconnected, OSError)


@pytest.mark.parametrize("how", ["send_stdout", "send_stderr", "end", "empty send_stdout"])
async def test_nothing_is_written_once_the_transport_is_closing(how: str) -> None:
    """A write that failed (ECONNRESET) closes the transport at once, but connection_lost comes
    a loop turn later: an application that only sends never gave it that turn, and asyncio
    dropped (and logged) every further write, forever."""
    outcome: list[object] = []

    async def handler(req: Request) -> None:
        await req.send_stdout(b"Status: 200 OK\r\n\r\n")
        h.transport.closed = True  # the transport is closing; connection_lost not yet run
        try:
            for _ in range(SENDS):
                if how == "end":
                    await req.end(b"last")
                elif how == "send_stderr":
                    await req.send_stderr(b"line\n")
                else:
                    await req.send_stdout(b"" if how.startswith("empty") else CHUNK)
        except ClientDisconnected as exc:
            outcome.append(exc)
        outcome.append(req.disconnected)

    h = Harness(handler)
    h.feed(h.request_bytes(1))
    await wait_until(lambda: len(outcome) == 2)
    assert isinstance(outcome[0], ClientDisconnected)
    assert outcome[1] is True  # the application's receive() and listeners see it too
    assert len(h.transport.writes) == 1  # the head, then nothing


async def test_back_to_back_sends_give_the_loop_turns() -> None:
    """The transport takes every write at once (no pause_writing): without a regular yield the
    loop never ran another task, timer or connection_lost until the application stopped."""
    turns = 0
    seen: list[int] = []  # the loop turns counted when each send returned

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    async def handler(req: Request) -> None:
        for i in range(SENDS):
            await req.send_stdout(CHUNK if i % 2 else b"")
            seen.append(turns)
        await req.end()

    tick = asyncio.create_task(ticker())
    try:
        h = Harness(handler)
        h.feed(h.request_bytes(1))
        await wait_until(lambda: len(seen) == SENDS)
    finally:
        tick.cancel()
    # The longest run of sends during which no other task ran.
    longest = run = 0
    for before, after in itertools.pairwise(seen):
        run = run + 1 if after == before else 0
        longest = max(longest, run)
    per_send = (len(CHUNK) + 2 * SEND_CALL_COST) // 2  # a full and an empty send, alternating
    assert longest <= YIELD_AFTER_BYTES // per_send + 1, longest


async def test_sends_that_wait_for_the_socket_do_not_add_yields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The yield budget restarts whenever a send really waited for flow control."""
    sleeps = 0
    real_sleep = asyncio.sleep

    async def counting_sleep(delay: float, *args: object) -> object:
        nonlocal sleeps
        if delay == 0:
            sleeps += 1
        return await real_sleep(delay, *args)

    paused_sends: list[int] = []

    async def handler(req: Request) -> None:
        for _ in range(8):
            h.proto.pause_writing()
            asyncio.get_running_loop().call_soon(h.proto.resume_writing)
            before = sleeps
            await req.send_stdout(CHUNK * 3)
            paused_sends.append(sleeps - before)
        await req.end()

    h = Harness(handler)
    monkeypatch.setattr(asyncio, "sleep", counting_sleep)
    h.feed(h.request_bytes(1))
    await wait_until(lambda: len(paused_sends) == 8)
    monkeypatch.undo()
    assert paused_sends == [0] * 8
