"""The client: a connection pool for one FastCGI server address (after httpcore's pool).

Theory of operation: every request joins a FIFO of waiters and calls
:meth:`FastCGIClient._assign`, a synchronous step that drops closed connections, picks expired
idle ones to close, and hands waiters to connections with a free slot (opening new connections
up to the limit, evicting an idle one when at the limit). It returns what to close; closing
happens right after and is synchronous too, so no ``await`` can be cancelled half-way through a
pool decision. Waiters then connect (if needed) and run their request on the connection they
were given.

Multiplexing: the first request asks the server GET_VALUES on a separate short-lived
connection (php-fpm answers, then closes the connection it was asked on). With
``FCGI_MPXS_CONNS=1`` requests share connections up to ``max_requests_per_connection``; a
server that never answers within ``get_values_timeout`` or does not understand the question is
used one request per connection. ``FCGI_MAX_CONNS`` lowers ``max_connections``,
``FCGI_MAX_REQS`` caps requests in flight, and their quotient caps requests per connection.
A CANT_MPX_CONN answer turns multiplexing off for the pool and the request is retried once on
another connection (when its body is bytes, which can be sent twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from typing import Final, Literal, TypeAlias

from .. import _compat
from ..protocol import (
    FCGI_MAX_CONNS,
    FCGI_MAX_REQS,
    FCGI_MPXS_CONNS,
    NEED_DATA,
    ClientConnection,
    GetValuesResult,
    RemoteProtocolError,
    Role,
    UnknownTypeReceived,
)
from ..protocol.constants import MAX_REQUEST_ID
from ..protocol.errors import LocalProtocolError
from .address import Address, open_stream, parse_address
from .connection import Connection, Exchange, Unavailable
from .errors import (
    CantMultiplex,
    ConnectError,
    ConnectionLost,
    FastCGIError,
    PoolClosed,
    ProtocolError,
    ResponseTooLarge,
    Timeout,
)
from .response import (
    DEFAULT_MAX_RESPONSE_BYTES,
    MAX_HEADER_BLOCK_BYTES,
    Response,
    StreamingResponse,
    find_header_end,
    parse_head,
)
from .timeouts import Budget, Timeouts

logger = logging.getLogger("fcgi_async.client")

#: Connections per pool. php-fpm's default ``pm.max_children`` is 5; FCGI_MAX_CONNS lowers it.
DEFAULT_MAX_CONNECTIONS: Final = 10
#: Requests at once on one multiplexed connection (our server accepts 100 by default).
DEFAULT_MAX_REQUESTS_PER_CONNECTION: Final = 100
#: Seconds an idle connection is kept. Short on purpose: php-fpm pins a worker to each idle
#: kept-alive connection, so a long expiry starves other clients of the pool.
DEFAULT_KEEPALIVE_EXPIRY_S: Final = 5.0
#: Seconds the first request waits for the GET_VALUES answer before assuming no multiplexing.
DEFAULT_GET_VALUES_TIMEOUT_S: Final = 1.0
#: STDERR bytes kept per response; more is passed to ``on_stderr`` but not kept (STDERR as a
#: whole is capped by ``max_response_bytes``).
DEFAULT_MAX_STDERR_BYTES: Final = 1024 * 1024
#: Seconds a request on a fresh connection may go unanswered while the pool keeps idle
#: connections, when the server did not report FCGI_MAX_CONNS (php-fpm). Past it the pool closes
#: its idle connections: each may pin the server process the request waits for. A hello.php
#: answers in about a millisecond; a script slower than this on a fresh connection costs at
#: most some reconnects.
DEFAULT_ACCEPT_GRACE_S: Final = 0.1
#: Seconds between two attempts to raise a learned connection limit by one while requests wait
#: (the server may have gained free processes: other clients left, ``pm = ondemand``).
DEFAULT_PROBE_INTERVAL_S: Final = 1.0
#: Seconds the pool's timer fires late, so that the deadline it waits for has surely passed.
TIMER_SLACK_S: Final = 0.001
#: The names GET_VALUES asks by default (spec §4.1).
DEFAULT_VALUE_NAMES: Final = ("FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS")

ParamValue: TypeAlias = str | bytes
Params: TypeAlias = Mapping[str, ParamValue] | Mapping[bytes, ParamValue]
"""CGI params: names and values as ``str`` (encoded UTF-8) or ``bytes`` (sent as they are)."""
Body: TypeAlias = bytes | bytearray | memoryview | AsyncIterable[bytes] | None
"""A request body: bytes, or an async iterable of bytes chunks (streamed as it is produced)."""


class _ClientDefault(enum.Enum):
    """The type of :data:`USE_CLIENT_DEFAULT` (``None`` already means "no limit")."""

    USE_CLIENT_DEFAULT = enum.auto()


#: A per-request argument left at this value takes the client's setting.
USE_CLIENT_DEFAULT: Final = _ClientDefault.USE_CLIENT_DEFAULT
MaxBytes: TypeAlias = int | Literal[_ClientDefault.USE_CLIENT_DEFAULT] | None
"""A per-request size limit: bytes, ``None`` for no limit, or :data:`USE_CLIENT_DEFAULT`."""


def _check_limit(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive number of bytes or None, not {value!r}")


def _check_seconds(name: str, value: float | None) -> None:
    if value is not None and not (isinstance(value, int | float) and 0 <= value < math.inf):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, not {value!r}")


def encode_params(params: Params) -> list[tuple[bytes, bytes]]:
    """Return ``params`` as the bytes pairs FastCGI carries (``str`` encoded as UTF-8)."""
    return [
        (
            name.encode() if isinstance(name, str) else bytes(name),
            value.encode() if isinstance(value, str) else bytes(value),
        )
        for name, value in params.items()
    ]


class _Waiter:
    """A request waiting for the pool to assign it a connection."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[Connection]) -> None:
        self.future = future


class FastCGIClient:
    """An async FastCGI client with a connection pool for one server address.

    Args:
        address: ``unix:PATH``, ``HOST:PORT`` or ``[V6]:PORT`` (or a parsed :class:`Address`).
        max_connections: connections open at once (lowered by the server's FCGI_MAX_CONNS).
        max_requests_per_connection: requests at once on one multiplexed connection.
        multiplex: ``None`` asks the server (GET_VALUES); ``True``/``False`` skip the question.
        keepalive_expiry: seconds an idle connection is kept (a timer closes it then); ``0``
            closes connections as soon as they are idle; ``None`` keeps them until closed or
            until a waiting request needs its server process (see below).
        timeouts: default time limits of each request.
        get_values_timeout: how long the first request waits for the GET_VALUES answer.
        max_stderr_bytes: STDERR bytes kept per response (more is passed to ``on_stderr``).
        on_stderr: called with every STDERR chunk as it arrives (e.g. to log it).
        max_response_bytes: the most one response may make the client hold: the body read
            whole by :meth:`request` and :meth:`StreamingResponse.aread`, and all of its
            STDERR (kept or not). Past it :class:`ResponseTooLarge` is raised and the request
            aborted. Streaming with ``aiter_bytes()`` is not capped (the caller consumes as it
            goes). ``None`` disables the cap. Default
            :data:`~fcgi_async.client.response.DEFAULT_MAX_RESPONSE_BYTES` (64 MiB).
        max_header_bytes: the most the CGI header block may take (64 KiB); a longer one, or
            one that never ends, raises :class:`ResponseTooLarge`.
        accept_grace: seconds a request on a fresh connection may go unanswered before the
            pool closes its idle connections (:data:`DEFAULT_ACCEPT_GRACE_S`; see below).
        probe_interval: seconds between attempts to raise a learned connection limit
            (:data:`DEFAULT_PROBE_INTERVAL_S`).

    Use as ``async with FastCGIClient(...) as client:`` or call :meth:`aclose`.

    The concurrency rule (php-fpm): php-fpm does not multiplex, does not report
    FCGI_MAX_CONNS, accepts a connection only when a child is free, and each child stays bound
    to its connection until that connection closes. So when a server answers one request per
    connection and says nothing of FCGI_MAX_CONNS, the pool never keeps an idle connection
    while a request of its own has waited more than ``accept_grace`` unanswered on a fresh
    connection: it closes the idle ones (their children accept the waiting connections) and
    takes the number of connections the server had answered as its limit, so later requests
    queue in the pool (FIFO) and reuse kept-alive connections instead of queuing in php-fpm's
    accept queue. Every ``probe_interval`` with requests waiting it tries one connection more.
    Idle connections also close on a timer after ``keepalive_expiry``, whether or not the
    pool is used again, so other clients of the same php-fpm pool are not starved.
    """

    def __init__(
        self,
        address: str | Address,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_requests_per_connection: int = DEFAULT_MAX_REQUESTS_PER_CONNECTION,
        multiplex: bool | None = None,
        keepalive_expiry: float | None = DEFAULT_KEEPALIVE_EXPIRY_S,
        timeouts: Timeouts | None = None,
        get_values_timeout: float = DEFAULT_GET_VALUES_TIMEOUT_S,
        max_stderr_bytes: int = DEFAULT_MAX_STDERR_BYTES,
        on_stderr: Callable[[bytes], None] | None = None,
        max_response_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES,
        max_header_bytes: int = MAX_HEADER_BLOCK_BYTES,
        accept_grace: float = DEFAULT_ACCEPT_GRACE_S,
        probe_interval: float = DEFAULT_PROBE_INTERVAL_S,
    ) -> None:
        if max_connections < 1 or not 1 <= max_requests_per_connection <= MAX_REQUEST_ID:
            raise ValueError(
                "max_connections must be >= 1 and max_requests_per_connection 1 to 65535"
            )
        _check_limit("max_response_bytes", max_response_bytes)
        _check_limit("max_header_bytes", max_header_bytes)
        _check_seconds("keepalive_expiry", keepalive_expiry)
        _check_seconds("get_values_timeout", get_values_timeout)
        _check_seconds("accept_grace", accept_grace)
        _check_seconds("probe_interval", probe_interval)
        self.address = parse_address(address) if isinstance(address, str) else address
        self._max_connections = max_connections
        self._max_requests_per_connection = max_requests_per_connection
        self._max_requests: int | None = None
        self._multiplex = multiplex
        self._keepalive_expiry = keepalive_expiry
        self.timeouts = timeouts or Timeouts()
        self._get_values_timeout = get_values_timeout
        self._max_stderr_bytes = max_stderr_bytes
        self._on_stderr = on_stderr
        self.max_response_bytes = max_response_bytes
        self.max_header_bytes = max_header_bytes
        self._accept_grace = accept_grace
        self._probe_interval = probe_interval
        #: FCGI_MAX_CONNS was reported: the server's capacity is known.
        self._max_conns_known = False
        #: The learned connection limit (php-fpm) and when it last changed.
        self._cap = max_connections
        self._cap_changed_at = 0.0
        #: The limit the last wave of releases learned, and when it last released.
        self._learned = max_connections
        self._last_release = -math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._connections: list[Connection] = []
        self._waiting: deque[_Waiter] = deque()
        self._probe_task: asyncio.Task[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<FastCGIClient {self.address} multiplex={self._multiplex}"
            f" connections={len(self._connections)} waiting={len(self._waiting)}>"
        )

    # ------------------------------------------------------------------ inspection
    @property
    def multiplexing(self) -> bool | None:
        """Whether requests share connections; ``None`` until the server was asked."""
        return self._multiplex

    @property
    def load(self) -> int:
        """Requests running on or waiting for this pool's connections (least-busy choice)."""
        return sum(c.slots for c in self._connections) + len(self._waiting)

    @property
    def connections(self) -> list[Connection]:
        """The pool's connections (a copy; for tests and diagnostics)."""
        return list(self._connections)

    @property
    def connection_limit(self) -> int:
        """Connections the pool opens at most now: ``max_connections``, lowered by the
        server's FCGI_MAX_CONNS or, when the server does not say, by what it learned."""
        return self._cap if self._adaptive() else self._max_connections

    def _adaptive(self) -> bool:
        # One request per connection and no FCGI_MAX_CONNS: the server's capacity is unknown
        # (php-fpm), so the pool must learn it and never sit on idle connections meanwhile.
        return self._multiplex is False and not self._max_conns_known

    # ------------------------------------------------------------- the sync step
    def _assign(self) -> list[Connection]:
        """Match waiters with connections. Synchronous; returns connections to close."""
        closing: list[Connection] = []
        now = asyncio.get_running_loop().time()
        for conn in list(self._connections):
            if conn.is_closed():
                self._connections.remove(conn)
            elif conn.has_expired(now):
                self._connections.remove(conn)
                closing.append(conn)
        adaptive = self._adaptive()
        if adaptive:
            self._release_pinned(now, closing)
        self._match(self._cap if adaptive else self._max_connections, now, closing)
        if (
            adaptive
            and self._waiting
            and self._cap < self._max_connections
            and now - self._cap_changed_at >= self._probe_interval
        ):
            # Requests wait at the learned limit: try one connection more. If the server has
            # no free process for it, the next release lowers the limit again.
            self._cap += 1
            self._cap_changed_at = now
            self._match(self._cap, now, closing)
        self._schedule(now, adaptive)
        return closing

    def _release_pinned(self, now: float, closing: list[Connection]) -> None:
        """Close idle connections while a request waits to be accepted elsewhere.

        A php-fpm child serves one connection until it closes: an idle kept-alive connection
        holds a child that a request sent on another connection (in php-fpm's accept queue)
        may be waiting for. After ``accept_grace`` seconds unanswered, the pool closes its idle
        connections (as nginx, which keeps no connection to php-fpm by default) and takes the
        number of answered connections as the server's limit for this pool.
        """
        conns = self._connections
        grace = self._accept_grace
        if not any(c.is_pending() and now - c.created_at >= grace for c in conns):
            return
        idle = [c for c in conns if c.is_idle()]
        if not idle:
            return
        answered = sum(1 for c in conns if c.answered)
        if now - self._last_release < self._probe_interval:
            # The same wave of releases: a process freed a moment ago has not yet accepted the
            # connection waiting for it, so the count of the moment is low; keep the wave's
            # highest count.
            answered = max(answered, self._learned)
        self._last_release = now
        cap = min(self._max_connections, max(1, answered))
        if cap != self._learned:
            logger.debug(
                "%s: a request waits to be accepted while %d connection(s) are answered:"
                " limit %d, idle connections close",
                self.address,
                answered,
                cap,
            )
            self._learned = cap
        if cap != self._cap:
            self._cap = cap
            self._cap_changed_at = now
        for conn in idle:
            conns.remove(conn)
            closing.append(conn)

    def _match(self, limit: int, now: float, closing: list[Connection]) -> None:
        in_flight = sum(c.slots for c in self._connections)
        while self._waiting:
            waiter = self._waiting[0]
            if waiter.future.done():  # cancelled while queued
                self._waiting.popleft()
                continue
            if self._max_requests is not None and in_flight >= self._max_requests:
                break
            available = [c for c in self._connections if c.is_available()]
            if available:
                # Fill the busiest connection first: requests share one multiplexed connection.
                conn = max(available, key=lambda c: c.slots)
            else:
                if len(self._connections) >= limit:
                    idle = [c for c in self._connections if c.is_idle()]
                    if not idle:
                        break
                    self._connections.remove(idle[0])
                    closing.append(idle[0])
                conn = Connection(
                    self.address,
                    multiplex=bool(self._multiplex),
                    max_requests=self._max_requests_per_connection,
                    keepalive_expiry=self._keepalive_expiry,
                    on_change=self._reassign,
                    on_cant_multiplex=self._cant_multiplex,
                )
                conn.created_at = now
                self._connections.append(conn)
            self._waiting.popleft()
            conn.slots += 1
            in_flight += 1
            waiter.future.set_result(conn)

    def _schedule(self, now: float, adaptive: bool) -> None:
        """Arm the pool's one timer for its next decision: an idle connection's expiry, the
        end of a pending request's accept grace, or the next probe of a learned limit."""
        wake: float | None = None
        has_idle = False
        for conn in self._connections:
            at = conn.expires_at()
            if conn.is_idle():
                has_idle = True
            if at is not None and (wake is None or at < wake):
                wake = at
        if adaptive:
            if has_idle:
                for conn in self._connections:
                    if conn.is_pending():
                        at = conn.created_at + self._accept_grace
                        if wake is None or at < wake:
                            wake = at
            if self._waiting and self._cap < self._max_connections:
                at = self._cap_changed_at + self._probe_interval
                if wake is None or at < wake:
                    wake = at
        timer = self._timer
        if wake is None:
            if timer is not None:
                timer.cancel()
                self._timer = None
            return
        wake = max(wake, now) + TIMER_SLACK_S
        if timer is not None:
            if timer.when() <= wake:
                return  # an earlier wake-up decides again anyway
            timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(wake, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._reassign()

    def _reassign(self) -> None:
        if self._closed:
            return
        for conn in self._assign():
            conn.close()

    def _cant_multiplex(self) -> None:
        if self._multiplex:
            logger.info("%s answered CANT_MPX_CONN: no more multiplexing", self.address)
        self._multiplex = False
        for conn in self._connections:
            conn.multiplex = False

    # --------------------------------------------------------------- acquisition
    async def _acquire(self, budget: Budget) -> Connection:
        if self._closed:
            raise PoolClosed("the client is closed")
        waiter = _Waiter(asyncio.get_running_loop().create_future())
        self._waiting.append(waiter)
        self._reassign()
        future = waiter.future
        if future.done() and not future.cancelled() and future.exception() is None:
            return future.result()  # a connection at once: nothing to wait for
        try:
            # Cancelling this task cancels the future too; either way the clean-up below
            # sees whether a connection had been assigned.
            return await budget.wait(future, "pool")
        except BaseException:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                future.result().unassign()
            else:
                future.cancel()
                with contextlib.suppress(ValueError):
                    self._waiting.remove(waiter)
            self._reassign()
            raise

    async def _ensure_probed(self, budget: Budget) -> None:
        if self._multiplex is not None:
            return
        task = self._probe_task
        if task is None:
            task = self._probe_task = asyncio.get_running_loop().create_task(self._probe())
            task.add_done_callback(self._probe_done)
        async with budget.phase("connect"):
            await asyncio.shield(task)

    def _probe_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is not None:
            self._probe_task = None  # ask again with the next request

    async def _probe(self) -> None:
        try:
            values = await query_values(
                self.address,
                (FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS),
                connect_timeout=self.timeouts.connect,
                answer_timeout=self._get_values_timeout,
            )
        except (ConnectionLost, ProtocolError) as exc:
            logger.debug("%s: no GET_VALUES answer (%s): no multiplexing", self.address, exc)
            values = {}
        except Timeout as exc:
            if exc.phase == "connect":
                raise
            logger.debug("%s: GET_VALUES unanswered: no multiplexing", self.address)
            values = {}
        if self._multiplex is None:
            self._multiplex = values.get(FCGI_MPXS_CONNS, b"").strip() == b"1"
        max_conns = _positive(values.get(FCGI_MAX_CONNS))
        if max_conns is not None:
            self._max_conns_known = True
            self._max_connections = min(self._max_connections, max_conns)
        max_reqs = self._max_requests = _positive(values.get(FCGI_MAX_REQS))
        if max_reqs is not None and max_conns is not None:
            # The spec gives no per-connection figure; a server spreading FCGI_MAX_REQS evenly
            # over FCGI_MAX_CONNS (ours does) accepts this many per connection.
            per_conn = max(1, max_reqs // max_conns)
            self._max_requests_per_connection = min(self._max_requests_per_connection, per_conn)
        logger.debug(
            "%s: multiplex=%s max_connections=%d max_requests=%s",
            self.address,
            self._multiplex,
            self._max_connections,
            self._max_requests,
        )

    # ------------------------------------------------------------------ requests
    async def _open(
        self,
        params: Params,
        body: Body,
        role: Role,
        timeouts: Timeouts,
        max_bytes: MaxBytes,
    ) -> StreamingResponse:
        if self._closed:
            raise PoolClosed("the client is closed")
        if max_bytes is USE_CLIENT_DEFAULT:
            max_bytes = self.max_response_bytes
        else:
            _check_limit("max_response_bytes", max_bytes)
        budget = Budget(timeouts)
        pairs = encode_params(params)
        payload: bytes | AsyncIterator[bytes]
        if body is None:
            payload = b""
        elif isinstance(body, bytes | bytearray | memoryview):
            payload = bytes(body)
        else:
            payload = aiter(body)
        await self._ensure_probed(budget)
        retried = False
        unavailable = 0
        while True:
            conn = await self._acquire(budget)
            try:
                ex = await conn.start_request(
                    pairs,
                    payload,
                    role,
                    budget,
                    stderr_limit=self._max_stderr_bytes,
                    on_stderr=self._on_stderr,
                    stderr_cap=max_bytes,
                )
            except Unavailable:
                unavailable += 1
                if unavailable > 3:
                    raise ConnectionLost(f"no usable connection to {self.address}") from None
                continue
            try:
                return await _read_head(ex, budget, self.max_header_bytes, max_bytes)
            except BaseException as exc:
                ex.close()
                if not retried and isinstance(payload, bytes) and _retryable(exc, ex):
                    retried = True
                    logger.debug("%s: retrying request after %r", self.address, exc)
                    continue
                raise

    async def request(
        self,
        params: Params,
        body: Body = None,
        *,
        role: Role = Role.RESPONDER,
        timeout: float | None = None,  # a per-request deadline is the API
        timeouts: Timeouts | None = None,
        max_response_bytes: MaxBytes = USE_CLIENT_DEFAULT,
    ) -> Response:
        """Send one request and read the whole response.

        Args:
            params: the CGI params (see :func:`fcgi_async.client.build_params`).
            body: the request body (STDIN): bytes or an async iterable of bytes.
            role: the FastCGI role (RESPONDER by default).
            timeout: total seconds for the whole exchange (overrides ``timeouts.total``).
            timeouts: all time limits for this request (default: the client's).
            max_response_bytes: the body (and STDERR) size limit for this request (default:
                the client's ``max_response_bytes``; ``None``: no limit).

        Raises:
            ResponseTooLarge: the head, body or STDERR passed its limit (request aborted).
            FastCGIError: see :mod:`fcgi_async.client.errors`.
        """
        limits = self.limits(timeout, timeouts)
        streaming = await self._open(params, body, role, limits, max_response_bytes)
        async with streaming as response:
            data = await response.aread()
            return Response(
                status_code=response.status_code,
                reason=response.reason,
                headers=response.headers,
                body=data,
                stderr=response.stderr,
                app_status=response.app_status or 0,
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
        """Send one request; yield the response once its head arrived, body unread.

        ``async with client.stream(params) as response:`` then ``response.aiter_bytes()``.
        Leaving the block before the end of the body aborts the request. Arguments and errors
        as for :meth:`request`; ``max_response_bytes`` caps STDERR and ``response.aread()``,
        not ``aiter_bytes()``.
        """
        response = await self._open(
            params, body, role, self.limits(timeout, timeouts), max_response_bytes
        )
        try:
            yield response
        finally:
            await response.aclose()

    async def send(
        self,
        params: Params,
        body: Body = None,
        *,
        role: Role = Role.RESPONDER,
        timeouts: Timeouts | None = None,
        max_response_bytes: MaxBytes = USE_CLIENT_DEFAULT,
    ) -> StreamingResponse:
        """Like :meth:`stream` without the context manager: the caller must close the response.

        Used by the httpx transports, whose response objects own closing. ``timeouts`` and
        ``max_response_bytes`` as for :meth:`request` (default: the client's).
        """
        return await self._open(params, body, role, timeouts or self.timeouts, max_response_bytes)

    def limits(self, timeout: float | None, timeouts: Timeouts | None) -> Timeouts:
        """The time limits of one request: ``timeouts`` (or the client's) with ``timeout``
        as the total deadline when given."""
        base = timeouts or self.timeouts
        if timeout is None:
            return base
        return Timeouts(base.connect, base.pool, base.read, base.write, timeout)

    async def get_values(
        self,
        names: Iterable[str] = DEFAULT_VALUE_NAMES,
        *,
        timeout: float = 5.0,
    ) -> dict[str, str]:
        """Ask the server GET_VALUES on a fresh connection (spec §4.1); see :func:`get_values`."""
        return await get_values(self.address, names, timeout=timeout)

    # ------------------------------------------------------------------- closing
    async def aclose(self) -> None:
        """Close every connection; running requests fail with ``ConnectionLost``."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(PoolClosed("the client was closed"))
                waiter.future.exception()  # retrieved by its awaiter, or by nobody
        if self._probe_task is not None and not self._probe_task.done():
            self._probe_task.cancel()
        conns, self._connections = self._connections, []
        for conn in conns:
            conn.close(ConnectionLost("the client was closed"))
        await asyncio.gather(*(conn.wait_closed() for conn in conns))

    async def __aenter__(self) -> FastCGIClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _read_head(
    ex: Exchange, budget: Budget, max_header_bytes: int, max_bytes: int | None
) -> StreamingResponse:
    """Read the CGI header block (at most ``max_header_bytes``); the body stays unread."""
    buffer = bytearray()
    searched = 0
    while True:
        chunk = await ex.receive(budget)
        if not chunk:
            excerpt = bytes(ex.stderr[:200]).decode("utf-8", "replace").strip()
            raise ProtocolError(
                "the response ended before its header block was complete"
                + (f" (stderr: {excerpt})" if excerpt else "")
            )
        buffer += chunk
        # Search only the new bytes (and the 3 before them, where a blank line may start):
        # a server sending its head one byte per record must not cost quadratic time.
        found = find_header_end(buffer, searched)
        searched = max(0, len(buffer) - 3)
        head_end = len(buffer) if found is None else found[0]
        if head_end > max_header_bytes:
            raise ResponseTooLarge(
                f"{ex.conn.address}: response header block exceeds max_header_bytes"
                f" ({max_header_bytes} bytes)",
                "head",
                max_header_bytes,
            )
        if found is None:
            continue
        status, reason, headers = parse_head(bytes(buffer[:head_end]))
        return StreamingResponse(
            status_code=status,
            reason=reason,
            headers=headers,
            _exchange=ex,
            _first=bytes(buffer[found[1] :]),
            _budget=budget,
            _max_bytes=max_bytes,
        )


def _retryable(exc: BaseException, ex: Exchange) -> bool:
    """A request may be sent again: refused for multiplexing, or its reused connection was
    stale (closed by the server before any answer, e.g. a recycled php-fpm worker)."""
    if isinstance(exc, CantMultiplex):
        return True
    return isinstance(exc, ConnectionLost) and ex.reused and not ex.received_any


def _positive(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        n = int(value.strip())
    except ValueError:
        return None
    return n if n > 0 else None


async def query_values(
    address: Address,
    names: Iterable[bytes],
    *,
    connect_timeout: float | None,
    answer_timeout: float | None,
) -> dict[bytes, bytes]:
    """Ask GET_VALUES on a new connection, return the answer, close the connection.

    Raises:
        ConnectError: connecting failed.
        Timeout: connecting (phase ``connect``) or the answer (phase ``read``) took too long.
        ConnectionLost: the server closed the connection without answering.
        ProtocolError: the server answered UNKNOWN_TYPE or broke the protocol.
    """
    codec = ClientConnection()
    try:
        question = codec.get_values(names)
    except LocalProtocolError as exc:
        raise ValueError(str(exc)) from None
    try:
        async with _compat.timeout(connect_timeout):
            reader, writer = await open_stream(address)
    except TimeoutError:
        raise Timeout(f"connect to {address} timed out", "connect") from None
    except OSError as exc:
        raise ConnectError(f"cannot connect to {address}: {exc.strerror or exc}") from exc
    try:
        writer.write(question)
        async with _compat.timeout(answer_timeout):
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionLost(f"{address} closed the connection without answering")
                codec.receive_data(data)
                event = codec.next_event()
                if isinstance(event, GetValuesResult):
                    return event.values
                if isinstance(event, UnknownTypeReceived):
                    raise ProtocolError(f"{address} does not understand GET_VALUES")
                if event is not NEED_DATA:
                    raise ProtocolError(f"{address} answered GET_VALUES with {event!r}")
    except TimeoutError:
        raise Timeout(f"{address} did not answer GET_VALUES", "read") from None
    except RemoteProtocolError as exc:
        raise ProtocolError(f"{address} broke the FastCGI protocol: {exc}") from None
    except OSError as exc:
        raise ConnectionLost(f"connection to {address} failed: {exc.strerror or exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            async with _compat.timeout(1.0):
                await writer.wait_closed()


async def get_values(
    address: str | Address,
    names: Iterable[str] = DEFAULT_VALUE_NAMES,
    *,
    timeout: float = 5.0,
) -> dict[str, str]:
    """Ask a FastCGI server for its management values (spec §4.1).

    Args:
        address: the server address.
        names: the variable names (``FCGI_MAX_CONNS``, ``FCGI_MAX_REQS``, ``FCGI_MPXS_CONNS``).
        timeout: seconds for connecting and for the answer, each.

    Returns:
        The names the server knows, mapped to their values (latin-1 decoded).

    Raises:
        FastCGIError: connecting failed, no answer in time, or the answer was malformed.
        ValueError: the names do not fit in one record.
    """
    addr = parse_address(address) if isinstance(address, str) else address
    values = await query_values(
        addr,
        [n.encode("latin-1") for n in names],
        connect_timeout=timeout,
        answer_timeout=timeout,
    )
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in values.items()}


__all__ = [
    "USE_CLIENT_DEFAULT",
    "Body",
    "FastCGIClient",
    "FastCGIError",
    "MaxBytes",
    "Params",
    "get_values",
    "query_values",
]
