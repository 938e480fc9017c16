"""A client over several FastCGI servers: choice of server, failover, passive health marks.

Theory of operation: one :class:`~fcgi_async.client.FastCGIClient` pool per address. Each
request picks a server (round-robin, or the least busy pool) among those not marked down; when
connecting to it fails (refused, no socket, connect timeout) the request was never sent, so it
moves on to the next server, and the failed server is marked down for ``retry_after`` seconds
(nginx's ``max_fails=1 fail_timeout``). A server marked down gets requests again once that time
has passed; a success clears the mark. When every server is marked down the request still tries
them all, earliest retry first, rather than fail without trying.

A request that fails after it was sent (the connection broke mid-response, a read timeout) is
not sent again: it may have run. Its error is raised as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final, Literal, TypeVar

from ..protocol import Role
from .address import Address, parse_address
from .errors import ConnectError, FastCGIError, Timeout
from .pool import USE_CLIENT_DEFAULT, Body, FastCGIClient, MaxBytes, Params
from .response import Response, StreamingResponse
from .timeouts import Timeouts

logger = logging.getLogger("fcgi_async.client")

#: Seconds a server that refused a connection is skipped (nginx's ``fail_timeout`` default).
DEFAULT_RETRY_AFTER_S: Final = 10.0

Strategy = Literal["round_robin", "least_busy"]
STRATEGIES: Final = ("round_robin", "least_busy")

T = TypeVar("T")


class FastCGIBalancer:
    """An async FastCGI client over several servers, with the API of :class:`FastCGIClient`.

    Args:
        addresses: the servers (``unix:PATH``, ``HOST:PORT``, ``[V6]:PORT`` or parsed).
        strategy: ``"round_robin"`` (each request the next server) or ``"least_busy"`` (the
            server whose pool has the fewest requests running or waiting; ties in turn).
        retry_after: seconds a server that refused a connection is skipped
            (:data:`DEFAULT_RETRY_AFTER_S`).
        **client_options: passed to every :class:`FastCGIClient` (``max_connections``,
            ``timeouts``...).

    Failover happens only for failures before the request was sent: :class:`ConnectError`
    and a ``connect`` :class:`Timeout`. Each server tried runs with the request's timeouts
    afresh, so the worst case of a request is one connect timeout per server more.
    """

    def __init__(
        self,
        addresses: Sequence[str | Address],
        *,
        strategy: Strategy = "round_robin",
        retry_after: float = DEFAULT_RETRY_AFTER_S,
        **client_options: Any,
    ) -> None:
        if isinstance(addresses, str | Address) or not addresses:
            raise ValueError("FastCGIBalancer needs a non-empty sequence of addresses")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
        if not (isinstance(retry_after, int | float) and 0 <= retry_after < math.inf):
            raise ValueError(
                f"retry_after must be a finite number of seconds >= 0: {retry_after!r}"
            )
        self.clients = [
            FastCGIClient(parse_address(a) if isinstance(a, str) else a, **client_options)
            for a in addresses
        ]
        self.strategy = strategy
        self.retry_after = retry_after
        #: The request time limits (the first pool's; all pools share the options).
        self.timeouts: Timeouts = self.clients[0].timeouts
        self._down_until = [0.0] * len(self.clients)
        self._turn = 0

    def __repr__(self) -> str:
        return f"<FastCGIBalancer {self.strategy} {[str(c.address) for c in self.clients]}>"

    @property
    def addresses(self) -> list[Address]:
        """The servers, in the order given."""
        return [c.address for c in self.clients]

    def is_down(self, index: int) -> bool:
        """True while server ``index`` is skipped after a refused connection."""
        return self._down_until[index] > asyncio.get_running_loop().time()

    # ------------------------------------------------------------------ choice
    def _order(self) -> list[int]:
        """Servers to try, in order: the ones not marked down first (by the strategy), then
        the marked ones, earliest retry first."""
        now = asyncio.get_running_loop().time()
        n = len(self.clients)
        turn = self._turn
        self._turn = (turn + 1) % n
        rotation = [(turn + k) % n for k in range(n)]
        up = [i for i in rotation if self._down_until[i] <= now]
        if self.strategy == "least_busy":
            up.sort(key=lambda i: self.clients[i].load)  # stable: ties keep the rotation
        down = sorted((i for i in rotation if self._down_until[i] > now), key=self._mark_key)
        return up + down

    def _mark_key(self, index: int) -> float:
        return self._down_until[index]

    def _mark_down(self, index: int, exc: FastCGIError) -> None:
        now = asyncio.get_running_loop().time()
        if self._down_until[index] <= now:  # one line per mark, not one per refused request
            logger.warning(
                "%s: %s: marked down for %g s", self.clients[index].address, exc, self.retry_after
            )
        self._down_until[index] = now + self.retry_after

    async def _run(self, call: Callable[[FastCGIClient], Awaitable[T]]) -> T:
        last: FastCGIError | None = None
        for index in self._order():
            client = self.clients[index]
            try:
                result = await call(client)
            except ConnectError as exc:
                last = exc
            except Timeout as exc:
                if exc.phase != "connect":
                    raise
                last = exc
            else:
                if self._down_until[index]:
                    self._down_until[index] = 0.0
                    logger.info("%s: answering again", client.address)
                return result
            self._mark_down(index, last)
        assert last is not None
        raise last

    # ---------------------------------------------------------------- requests
    async def request(
        self,
        params: Params,
        body: Body = None,
        *,
        role: Role = Role.RESPONDER,
        timeout: float | None = None,
        timeouts: Timeouts | None = None,
        max_response_bytes: MaxBytes = USE_CLIENT_DEFAULT,
    ) -> Response:
        """Send one request to one of the servers; as :meth:`FastCGIClient.request`.

        Raises:
            ConnectError: every server refused (the last server's error).
            FastCGIError: see :mod:`fcgi_async.client.errors`.
        """
        return await self._run(
            lambda c: c.request(
                params,
                body,
                role=role,
                timeout=timeout,
                timeouts=timeouts,
                max_response_bytes=max_response_bytes,
            )
        )

    async def send(
        self,
        params: Params,
        body: Body = None,
        *,
        role: Role = Role.RESPONDER,
        timeouts: Timeouts | None = None,
        max_response_bytes: MaxBytes = USE_CLIENT_DEFAULT,
    ) -> StreamingResponse:
        """As :meth:`FastCGIClient.send`: the caller must close the response."""
        return await self._run(
            lambda c: c.send(
                params, body, role=role, timeouts=timeouts, max_response_bytes=max_response_bytes
            )
        )

    @contextlib.asynccontextmanager
    async def stream(
        self,
        params: Params,
        body: Body = None,
        *,
        role: Role = Role.RESPONDER,
        timeout: float | None = None,
        timeouts: Timeouts | None = None,
        max_response_bytes: MaxBytes = USE_CLIENT_DEFAULT,
    ) -> AsyncIterator[StreamingResponse]:
        """As :meth:`FastCGIClient.stream`, on one of the servers."""
        response = await self._run(
            lambda c: c.send(
                params,
                body,
                role=role,
                timeouts=c.limits(timeout, timeouts),
                max_response_bytes=max_response_bytes,
            )
        )
        try:
            yield response
        finally:
            await response.aclose()

    # ----------------------------------------------------------------- closing
    async def aclose(self) -> None:
        """Close every pool; running requests fail with ``ConnectionLost``."""
        await asyncio.gather(*(c.aclose() for c in self.clients))

    async def __aenter__(self) -> FastCGIBalancer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


__all__ = ["DEFAULT_RETRY_AFTER_S", "FastCGIBalancer", "Strategy"]
