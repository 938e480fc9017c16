"""Per-request time limits: one per phase, plus a total deadline over the whole exchange."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

from .. import _compat
from .errors import Timeout

#: Seconds to wait for a TCP or unix-socket connect. A local php-fpm accepts in microseconds;
#: a full listen queue makes connect hang, and five seconds says "down" to a health check.
DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0
#: Seconds of silence allowed while waiting for the next response bytes (inactivity, not the
#: whole body). nginx's ``fastcgi_read_timeout`` default: a FastCGI backend may legitimately
#: think for a while before its first byte (a report, a slow query), but a server that accepts
#: and never answers must not hold the caller forever.
DEFAULT_READ_TIMEOUT_S: Final = 60.0
#: Seconds allowed for the server to accept the next request-body bytes (flow control).
#: nginx's ``fastcgi_send_timeout`` default, for the same reason as the read timeout.
DEFAULT_WRITE_TIMEOUT_S: Final = 60.0
#: Seconds for the whole exchange, from the call to the end of the response (streamed bodies
#: included). Five read timeouts: above php-fpm's usual ``request_terminate_timeout`` (30-60 s)
#: and ``max_execution_time``, so a working backend never hits it, while a server that trickles
#: one byte a minute cannot hold a request forever. Long downloads or event streams pass
#: ``total=None`` (or a larger value) explicitly.
DEFAULT_TOTAL_TIMEOUT_S: Final = 300.0

Phase = Literal["connect", "pool", "read", "write"]
_NUMBER: Final = (int, float)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Time limits in seconds; ``None`` means no limit (only when passed explicitly).

    Every limit that expires raises :class:`~fcgi_async.client.Timeout` (its ``phase`` names
    which) and aborts the request. The defaults (``Timeouts()``) are bounded on purpose, so a
    server that accepts and never answers cannot hang the caller.

    Attributes:
        connect: opening a connection (:data:`DEFAULT_CONNECT_TIMEOUT_S`, 5 s).
        pool: waiting for a free connection when ``max_connections`` are busy (no limit of its
            own by default; the total deadline bounds it).
        read: each wait for the next bytes of the response: inactivity, not the whole body
            (:data:`DEFAULT_READ_TIMEOUT_S`, 60 s).
        write: each wait for the server to accept request bytes: flow control
            (:data:`DEFAULT_WRITE_TIMEOUT_S`, 60 s).
        total: the whole exchange, from the call until the end of the response, a streamed
            body included (:data:`DEFAULT_TOTAL_TIMEOUT_S`, 300 s).
    """

    connect: float | None = DEFAULT_CONNECT_TIMEOUT_S
    pool: float | None = None
    read: float | None = DEFAULT_READ_TIMEOUT_S
    write: float | None = DEFAULT_WRITE_TIMEOUT_S
    total: float | None = DEFAULT_TOTAL_TIMEOUT_S

    def __post_init__(self) -> None:
        """Refuse limits that cannot bound anything: NaN, infinite or not above zero.

        Raises:
            ValueError: naming the field and the value (``None`` is how to say "no limit").
        """
        for name in ("connect", "pool", "read", "write", "total"):
            value = getattr(self, name)
            if value is not None and not (type(value) in _NUMBER and 0 < value < math.inf):
                raise ValueError(
                    f"timeout {name} must be a finite number of seconds > 0 or None, not {value!r}"
                )


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

    async def wait(self, future: asyncio.Future[T], phase: Phase) -> T:
        """Await ``future``, a private one of the caller's, within ``phase``'s limit.

        The per-request hot path (waiting for a connection, for response bytes): one timer
        that fails the future, instead of a cancel scope around the task.

        Raises:
            Timeout: a limit passed (``Timeout.phase`` names which); ``future`` then holds it.
        """
        seconds, which = self._limit(phase)
        if seconds is None:
            return await future
        configured = self.timeouts.total if which == "total" else seconds
        if seconds <= 0:
            raise Timeout(f"{which} timeout of {configured:g} s expired", which)
        handle = asyncio.get_running_loop().call_later(seconds, _expire, future, which, configured)
        try:
            return await future
        finally:
            handle.cancel()
            if future.done() and not future.cancelled():
                future.exception()  # a Timeout set just as this task was cancelled: seen

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
        cm = _compat.timeout(seconds)
        try:
            async with cm:
                yield
        except TimeoutError:
            if cm.expired():
                raise Timeout(f"{which} timeout of {configured:g} s expired", which) from None
            raise


def _expire(future: asyncio.Future[Any], which: str, configured: float | None) -> None:
    if not future.done():
        future.set_exception(Timeout(f"{which} timeout of {configured:g} s expired", which))
