"""Workers: distribution, replacement, recycling, ondemand, crash loops, hung workers."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .helpers import Load, RequestFailed, Supervised, wait_for


def pid_of(body: bytes) -> int:
    return int(body.split()[0])


def test_every_worker_receives_requests(supervised: Callable[..., Supervised]) -> None:
    server = supervised("--workers", "3")
    server.wait_serving(workers=3)
    workers = server.workers()
    seen: set[int] = set()

    def batch() -> bool:
        with ThreadPoolExecutor(6) as pool:
            for status, body in pool.map(lambda _: server.get("/slow?0.2"), range(6)):
                assert status == 200
                seen.add(pid_of(body))
        return seen == workers

    wait_for(batch, what=f"answers from all of {workers}, seen {seen}")
