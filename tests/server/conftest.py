"""Fixtures for the fake-transport tests: no connection or application task outlives a test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from .helpers import Harness


@pytest.fixture(autouse=True)
async def _drop_harnesses() -> AsyncIterator[None]:
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
