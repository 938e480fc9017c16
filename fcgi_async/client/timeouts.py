"""Per-request time limits: one per phase, plus a total deadline over the whole exchange."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final, Literal

from .errors import Timeout

#: Seconds to wait for a TCP or unix-socket connect. A local php-fpm accepts in microseconds;
#: a full listen queue makes connect hang, and five seconds says "down" to a health check.
DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0

Phase = Literal["connect", "pool", "read", "write"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Time limits in seconds; ``None`` means no limit.

    Attributes:
        connect: opening a connection.
        pool: waiting for a free connection when ``max_connections`` are busy.
        read: each wait for the next bytes of the response (inactivity, not the whole body).
        write: each wait for the server to accept request bytes (flow control).
        total: the whole exchange, from the call until the end of the response.
    """

    connect: float | None = DEFAULT_CONNECT_TIMEOUT_S
    pool: float | None = None
    read: float | None = None
    write: float | None = None
    total: float | None = None


class Budget:
    """The time limits of one running request: phase limits bounded by the total deadline."""

    __slots__ = ("_deadline", "timeouts")

    def __init__(self, timeouts: Timeouts) -> None:
        self.timeouts = timeouts
        total = timeouts.total
        self._deadline = None if total is None else asyncio.get_running_loop().time() + total

    def _limit(self, phase: Phase) -> tuple[float | None, str]:
        limit: float | None = getattr(self.timeouts, phase)
        if self._deadline is None:
            return limit, phase
        remaining = self._deadline - asyncio.get_running_loop().time()
        if limit is None or remaining < limit:
            return remaining, "total"
        return limit, phase

    @contextlib.asynccontextmanager
    async def phase(self, phase: Phase) -> AsyncIterator[None]:
        """Bound the awaits inside the block by ``phase``'s limit and the total deadline.

        Raises:
            Timeout: a limit passed (``Timeout.phase`` names which).
        """
        seconds, which = self._limit(phase)
        if seconds is None:
            yield
            return
        configured = self.timeouts.total if which == "total" else seconds
        if seconds <= 0:
            raise Timeout(f"{which} timeout of {configured:g} s expired", which)
        cm = asyncio.timeout(seconds)
        try:
            async with cm:
                yield
        except TimeoutError:
            if cm.expired():
                raise Timeout(f"{which} timeout of {configured:g} s expired", which) from None
            raise
