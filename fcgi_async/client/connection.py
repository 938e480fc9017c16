"""One client connection: socket, sans-IO codec, a reader task and the running exchanges.

Theory of operation: a :class:`Connection` is created by the pool without I/O and opened by the
first request assigned to it (later ones wait on the same connect). A reader task feeds the
:class:`~fcgi_async.protocol.ClientConnection` codec and routes STDOUT, STDERR and END_REQUEST to
the :class:`Exchange` of each request id. Each request with a body gets a sender task that
writes STDIN in records of at most 64 KiB and waits for flow control between them, so several
requests on one multiplexed connection interleave at record boundaries.

Every record is written with one synchronous ``writelines`` call, so a cancelled task never
leaves half a record on the wire; every clean-up path (abort, close, release) is synchronous,
so cancellation cannot interrupt it.

A request id is reused only when its END_REQUEST arrived *and* its sender stopped: stray STDIN
records for an ended id are ignored by servers (spec §3.3), but never after the id is reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final

from .. import _compat
from ..protocol import (
    NEED_DATA,
    ClientConnection,
    ProtocolStatus,
    RemoteProtocolError,
    RequestEnded,
    Role,
    StderrReceived,
    StdoutReceived,
)
from ..protocol.errors import LocalProtocolError
from .address import Address, open_stream
from .errors import (
    ConnectError,
    ConnectionLost,
    FastCGIError,
    ProtocolError,
    ResponseTooLarge,
    Timeout,
    rejection,
)
from .timeouts import Budget

logger = logging.getLogger("fcgi_async.client")

#: Bytes asked of the socket per read.
READ_CHUNK: Final = 256 * 1024
#: STDIN bytes written between two flow-control waits: one record's worth, so requests that
#: share a connection take turns at this granularity.
WRITE_CHUNK: Final = 64 * 1024
#: Response bytes buffered per request before the connection stops reading (a caller that
#: streams a response and reads it slowly holds the server back instead of growing memory).
#: Reading resumes below half of it.
MAX_BUFFERED_RESPONSE_BYTES: Final = 1024 * 1024
#: Seconds a server may take to answer ABORT_REQUEST with END_REQUEST. Past it the connection
#: takes no new requests and closes once its other requests are done.
ABORT_GRACE_S: Final = 5.0
#: SO_LINGER on, 0 seconds: close() resets the connection instead of flushing it.
_LINGER_RESET: Final = struct.pack("ii", 1, 0)


class Unavailable(Exception):
    """Internal: the connection closed between assignment and use; the pool retries."""


class State(enum.IntEnum):
    """Life of a connection."""

    NEW = 0
    CONNECTING = 1
    READY = 2
    CLOSED = 3


class Exchange:
    """One request on one connection: buffered response chunks, STDERR, the body sender.

    The reader task calls the ``feed_*`` methods; the caller awaits :meth:`receive` and calls
    :meth:`close` when done (early close aborts the request).

    Args:
        stderr_limit: STDERR bytes kept in :attr:`stderr` (more is dropped, still counted).
        stderr_cap: STDERR bytes the server may send at all (``None``: no cap); past it the
            exchange fails with :class:`ResponseTooLarge` and the request is aborted.
        on_stderr: called with every STDERR chunk within the cap.
    """

    __slots__ = (
        "_chunks",
        "_drained",
        "_waiter",
        "app_status",
        "body_done",
        "body_error",
        "buffered",
        "closed",
        "conn",
        "ended",
        "error",
        "on_stderr",
        "received_any",
        "released",
        "request_id",
        "reused",
        "sender",
        "stderr",
        "stderr_cap",
        "stderr_limit",
        "stderr_received",
    )

    def __init__(
        self,
        conn: Connection,
        request_id: int,
        stderr_limit: int,
        on_stderr: Callable[[bytes], None] | None,
        stderr_cap: int | None = None,
    ) -> None:
        self.conn = conn
        self.request_id = request_id
        self.stderr = bytearray()
        self.stderr_limit = stderr_limit
        self.stderr_cap = stderr_cap
        self.stderr_received = 0
        self.on_stderr = on_stderr
        self._chunks: deque[bytes] = deque()
        self.buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        #: END_REQUEST arrived, or the connection failed (then ``error`` says how).
        self.ended = False
        self.error: FastCGIError | None = None
        #: An exception raised by the caller's body iterable, re-raised to the caller.
        self.body_error: BaseException | None = None
        self.app_status: int | None = None
        self.received_any = False
        self.body_done = False
        self.sender: asyncio.Task[None] | None = None
        self.closed = False
        self.released = False
        self.reused = False

    def __repr__(self) -> str:
        return (
            f"<Exchange id={self.request_id} ended={self.ended} closed={self.closed}"
            f" buffered={self.buffered} error={self.error!r}>"
        )

    # ------------------------------------------------------------------ reader side
    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_reader(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def feed_stdout(self, data: bytes) -> None:
        """A STDOUT chunk arrived."""
        self.received_any = True
        if self.closed:
            return
        self._chunks.append(data)
        self.buffered += len(data)
        self._wake()

    def feed_stderr(self, data: bytes) -> None:
        """A STDERR chunk arrived: keep it (bounded) and pass it to the callback.

        Past ``stderr_cap`` the exchange fails with :class:`ResponseTooLarge` and the request
        is aborted: a server flooding STDERR must not keep both sides working forever.
        """
        self.received_any = True
        self.stderr_received += len(data)
        cap = self.stderr_cap
        if cap is not None and self.stderr_received > cap:
            if not self.ended:
                self.fail(
                    ResponseTooLarge(
                        f"{self.conn.address}: request {self.request_id}: STDERR exceeds"
                        f" max_response_bytes ({cap} bytes)",
                        "stderr",
                        cap,
                    )
                )
                self.conn.abandon(self)
            return
        room = self.stderr_limit - len(self.stderr)
        if room > 0:
            self.stderr += data[:room]
        if self.on_stderr is not None:
            try:
                self.on_stderr(data)
            except Exception:  # a caller's callback must not kill the connection's reader
                logger.exception("on_stderr callback failed")

    def feed_end(self, app_status: int, status: ProtocolStatus) -> None:
        """END_REQUEST arrived."""
        self.received_any = True
        self.ended = True
        self.app_status = app_status
        if status != ProtocolStatus.REQUEST_COMPLETE:
            self.error = rejection(status, self.request_id)
        self._wake()

    def fail(self, error: FastCGIError) -> None:
        """The exchange cannot complete (connection lost, protocol error, write timeout)."""
        if not self.ended:
            self.ended = True
            self.error = error
        self._wake()
        self._wake_reader()

    @property
    def needs_drain(self) -> bool:
        """True when the caller holds too many unread response bytes."""
        return self.buffered > MAX_BUFFERED_RESPONSE_BYTES and not self.closed

    async def wait_drained(self) -> None:
        """Reader side: wait until the caller read the buffer down (or closed)."""
        while self.needs_drain and not self.ended:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    # ---------------------------------------------------------------- caller side
    async def receive(self, budget: Budget | None) -> bytes:
        """Return the next STDOUT chunk, ``b""`` at the end of the response.

        Raises:
            FastCGIError: the request was rejected or its connection failed.
            Exception: what the caller's body iterable raised.
        """
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self.buffered -= len(chunk)
                if self.buffered <= MAX_BUFFERED_RESPONSE_BYTES // 2:
                    self._wake_reader()
                return chunk
            if self.body_error is not None:
                raise self.body_error
            if self.error is not None:
                raise self.error
            if self.ended:
                return b""
            if self.closed:
                raise RuntimeError("the exchange was closed")
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            if budget is None:
                await waiter
            else:
                await budget.wait(waiter, "read")

    def close(self) -> None:
        """The caller is done: drop buffered data; abort the request if it is still running.

        Synchronous, hence safe in ``finally`` blocks of cancelled tasks.
        """
        if self.closed:
            return
        self.closed = True
        self._chunks.clear()
        self.buffered = 0
        self._wake_reader()
        sender = self.sender
        if sender is not None and not sender.done():
            sender.cancel()
        if not self.ended:
            self.conn.abandon(self)
        self.conn.maybe_release(self)


class Connection:
    """A connection to one FastCGI server, owned by a pool.

    Args:
        address: where to connect.
        multiplex: whether to run several requests at once on it.
        max_requests: concurrent requests when multiplexing.
        keepalive_expiry: seconds an idle connection is kept (``None``: forever).
        on_change: called (synchronously) when a slot frees or the connection closes.
        on_cant_multiplex: called when the server answers CANT_MPX_CONN.
    """

    def __init__(
        self,
        address: Address,
        *,
        multiplex: bool,
        max_requests: int,
        keepalive_expiry: float | None,
        on_change: Callable[[], None],
        on_cant_multiplex: Callable[[], None],
    ) -> None:
        self.address = address
        self.multiplex = multiplex
        self.max_requests = max_requests
        self.keepalive_expiry = keepalive_expiry
        self._on_change = on_change
        self._on_cant_multiplex = on_cant_multiplex
        self.state = State.NEW
        self.codec = ClientConnection()
        #: Requests assigned by the pool and not yet released (the pool's unit of capacity).
        self.slots = 0
        self.exchanges: dict[int, Exchange] = {}
        #: False once the connection must not take new requests (it closes when idle).
        self.reusable = True
        self.served = 0
        self.idle_since = 0.0
        #: Loop time the pool created this connection for its first request.
        self.created_at = 0.0
        #: True once the server sent anything on it: a server process accepted it (php-fpm's
        #: child then stays pinned to it until it closes).
        self.answered = False
        self._connect_task: asyncio.Task[None] | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def __repr__(self) -> str:
        return (
            f"<Connection {self.address} {self.state.name} multiplex={self.multiplex}"
            f" slots={self.slots} ids={sorted(self.exchanges)} served={self.served}>"
        )

    # ------------------------------------------------------------ pool's questions
    @property
    def capacity(self) -> int:
        """Requests this connection may run at once."""
        return self.max_requests if self.multiplex else 1

    def _peer_closed(self) -> bool:
        # The server's EOF may be buffered before the reader task has run to notice it.
        return self._reader is not None and self._reader.at_eof()

    def is_available(self) -> bool:
        """True when the pool may assign one more request to this connection."""
        return (
            self.state != State.CLOSED
            and self.reusable
            and self.slots < self.capacity
            and not self._peer_closed()
        )

    def is_idle(self) -> bool:
        """True when no request is assigned to or running on this connection."""
        return self.slots == 0 and not self.exchanges

    def is_pending(self) -> bool:
        """True while a request waits on it and the server never answered on it (it may
        still sit in the server's accept queue)."""
        return self.slots > 0 and not self.answered and self.state != State.CLOSED

    def expires_at(self) -> float | None:
        """Loop time at which this idle connection expires (``None``: busy or never)."""
        if self.state != State.READY or self.keepalive_expiry is None or not self.is_idle():
            return None
        return self.idle_since + self.keepalive_expiry

    def is_closed(self) -> bool:
        """True once closed (by us or the server)."""
        return self.state == State.CLOSED

    def has_expired(self, now: float) -> bool:
        """True for an idle connection past its keep-alive expiry, or one not reusable."""
        if self.state == State.CLOSED or not self.is_idle():
            return False
        if not self.reusable or self._peer_closed():
            return True
        return (
            self.state == State.READY
            and self.keepalive_expiry is not None
            and now - self.idle_since >= self.keepalive_expiry
        )

    def unassign(self) -> None:
        """Give back a slot the pool assigned but that never started a request."""
        self.slots -= 1
        if self.slots == 0 and not self.exchanges:
            self.idle_since = asyncio.get_running_loop().time()

    # ------------------------------------------------------------------ connecting
    async def connect(self, budget: Budget) -> None:
        """Open the connection (once; concurrent callers share the attempt).

        Raises:
            ConnectError: connecting failed.
            Timeout: the connect (or total) limit passed.
            Unavailable: the connection closed meanwhile.
        """
        if self.state == State.READY:
            return
        if self.state == State.CLOSED:
            raise Unavailable
        task = self._connect_task
        if task is None:
            self.state = State.CONNECTING
            task = self._connect_task = asyncio.get_running_loop().create_task(
                self._open(budget.timeouts.connect)
            )
            task.add_done_callback(_retrieve)
        async with budget.phase("connect"):
            await asyncio.shield(task)
        if self.state != State.READY:
            raise Unavailable

    async def _open(self, connect_timeout: float | None) -> None:
        try:
            async with _compat.timeout(connect_timeout):
                reader, writer = await open_stream(self.address)
        except TimeoutError:
            self._set_closed()
            raise Timeout(f"connect to {self.address} timed out", "connect") from None
        except OSError as exc:
            self._set_closed()
            raise ConnectError(f"cannot connect to {self.address}: {_describe(exc)}") from exc
        if self.state == State.CLOSED:  # closed by the pool while connecting
            writer.close()
            return
        self._reader, self._writer = reader, writer
        self.state = State.READY
        self.idle_since = asyncio.get_running_loop().time()
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())

    # -------------------------------------------------------------------- requests
    def _write(self, buffers: Sequence[bytes | memoryview]) -> None:
        writer = self._writer
        if self.state != State.READY or writer is None or writer.is_closing():
            raise ConnectionLost(f"connection to {self.address} is closed")
        writer.writelines(buffers)
        if _compat.WRITELINES_MAY_NOT_PAUSE:  # else drain() never waits for a slow server
            _compat.pause_if_full(writer.transport)

    def _free_id(self) -> int:
        rid = 1
        while rid in self.exchanges:
            rid += 1
        return rid

    async def start_request(
        self,
        params: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterator[bytes],
        role: Role,
        budget: Budget,
        *,
        stderr_limit: int,
        on_stderr: Callable[[bytes], None] | None,
        stderr_cap: int | None = None,
    ) -> Exchange:
        """Connect if needed, then send BEGIN_REQUEST and PARAMS and start the body.

        The slot the pool assigned belongs to the returned exchange; on failure it is given
        back here.

        Raises:
            ConnectError, Timeout, ConnectionLost: connecting or writing failed.
            Unavailable: the connection closed between assignment and use (retry elsewhere).
            ValueError: a param cannot be encoded (longer than 2**31 - 1 bytes).
        """
        try:
            await self.connect(budget)
            if not self.reusable:
                raise Unavailable
            rid = self._free_id()
            ex = Exchange(self, rid, stderr_limit, on_stderr, stderr_cap)
            ex.reused = self.served > 0
            try:
                out: list[bytes | memoryview] = [
                    self.codec.begin_request(rid, role=role, keep_conn=True),
                    *self.codec.send_params(rid, params),
                ]
            except LocalProtocolError as exc:  # a param longer than FastCGI can carry
                self.codec.forget_request(rid)
                raise ValueError(str(exc)) from None
        except BaseException:
            self.unassign()
            self._on_change()
            raise
        self.exchanges[rid] = ex
        self.served += 1
        has_body = not isinstance(body, bytes) or body != b""
        if not has_body and role != Role.AUTHORIZER:
            out.extend(self._end_input(rid, role))
        if not has_body:
            ex.body_done = True
        try:
            self._write(out)
        except ConnectionLost as exc:
            ex.fail(exc)
            ex.close()
            raise
        if has_body:
            sender = self._send_body(ex, body, role, budget)
            ex.sender = asyncio.get_running_loop().create_task(sender)
        return ex

    def _end_input(self, rid: int, role: Role) -> list[bytes | memoryview]:
        out: list[bytes | memoryview] = [self.codec.end_stdin(rid)]
        if role == Role.FILTER:
            out.append(self.codec.end_data(rid))  # no file to filter: an empty DATA stream
        return out

    async def _send_body(
        self, ex: Exchange, body: bytes | AsyncIterator[bytes], role: Role, budget: Budget
    ) -> None:
        rid = ex.request_id
        try:
            if isinstance(body, bytes):
                await self._send_chunk(ex, body, budget)
            else:
                async for chunk in body:
                    if ex.ended or ex.closed:
                        break
                    if chunk:
                        await self._send_chunk(ex, chunk, budget)
            if not ex.ended and not ex.closed:
                self._write(self._end_input(rid, role))
                ex.body_done = True
        except FastCGIError as exc:
            ex.fail(exc)
            self.abandon(ex)
        except (OSError, LocalProtocolError) as exc:
            ex.fail(ConnectionLost(f"writing to {self.address} failed: {exc}"))
            self.abandon(ex)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the caller's body iterable failed: abort, tell the caller
            ex.body_error = exc
            ex.fail(ConnectionLost("the request body failed"))
            self.abandon(ex)
        finally:
            if not ex.body_done and not self.multiplex:
                # Stray STDIN after END_REQUEST would confuse a one-request server (php-fpm).
                self.reusable = False
            self.maybe_release(ex, sender_done=True)

    async def _send_chunk(self, ex: Exchange, data: bytes, budget: Budget) -> None:
        view = memoryview(data)
        writer = self._writer
        assert writer is not None
        for start in range(0, len(view), WRITE_CHUNK):
            if ex.ended or ex.closed:
                return
            self._write(self.codec.send_stdin(ex.request_id, view[start : start + WRITE_CHUNK]))
            async with budget.phase("write"):
                await writer.drain()

    def abandon(self, ex: Exchange) -> None:
        """Stop a request before its END_REQUEST: ABORT_REQUEST if multiplexing, else close."""
        if ex.ended and ex.error is None:
            return
        writer = self._writer
        if (
            self.multiplex
            and self.state == State.READY
            and writer is not None
            and not writer.is_closing()
            and self.codec.is_active(ex.request_id)
        ):
            writer.write(self.codec.abort_request(ex.request_id))
            asyncio.get_running_loop().call_later(ABORT_GRACE_S, self._abort_overdue, ex)
            return
        if self.codec.is_active(ex.request_id) or not ex.ended:
            self.close(ConnectionLost(f"request {ex.request_id} was abandoned"))

    def _abort_overdue(self, ex: Exchange) -> None:
        if ex.released or self.state == State.CLOSED:
            return
        logger.debug("%s: no END_REQUEST after ABORT_REQUEST of %d", self.address, ex.request_id)
        self.reusable = False
        if all(e.closed for e in self.exchanges.values()):
            self.close(ConnectionLost("the server ignored ABORT_REQUEST"))

    def maybe_release(self, ex: Exchange, *, sender_done: bool = False) -> None:
        """Free the request id and the pool slot once the exchange is over on the wire."""
        if ex.released or not ex.ended:
            return
        if not sender_done and ex.sender is not None and not ex.sender.done():
            return
        if self.codec.is_active(ex.request_id):
            return  # aborted: the id stays taken until END_REQUEST (or the connection closes)
        ex.released = True
        if self.exchanges.get(ex.request_id) is ex:
            del self.exchanges[ex.request_id]
        self.slots -= 1
        if not self.exchanges:
            self.idle_since = asyncio.get_running_loop().time()
        self._on_change()

    # ----------------------------------------------------------------------- input
    async def _read_loop(self) -> None:
        reader = self._reader
        assert reader is not None
        error: FastCGIError
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    error = ConnectionLost(
                        f"{self.address} closed the connection before the response ended"
                    )
                    break
                self.codec.receive_data(data)
                while True:
                    event = self.codec.next_event()
                    if event is NEED_DATA:
                        break
                    self._dispatch(event)
                    if self.state == State.CLOSED:
                        return  # an exchange gave up the connection (see Exchange.feed_stderr)
                for ex in list(self.exchanges.values()):
                    if ex.needs_drain:
                        await ex.wait_drained()
        except RemoteProtocolError as exc:
            error = ProtocolError(f"{self.address} broke the FastCGI protocol: {exc}")
        except OSError as exc:
            error = ConnectionLost(f"connection to {self.address} failed: {_describe(exc)}")
        except Exception as exc:  # a bug: fail the requests rather than leave them hanging
            logger.exception("%s: reader failed", self.address)
            error = ConnectionLost(f"connection to {self.address} failed: {exc!r}")
        self._reader_task = None
        self.close(error)

    def _dispatch(self, event: object) -> None:
        self.answered = True
        if isinstance(event, StdoutReceived):
            ex = self.exchanges.get(event.request_id)
            if ex is not None:
                ex.feed_stdout(event.data)
        elif isinstance(event, StderrReceived):
            ex = self.exchanges.get(event.request_id)
            if ex is not None:
                ex.feed_stderr(event.data)
        elif isinstance(event, RequestEnded):
            ex = self.exchanges.get(event.request_id)
            if event.protocol_status == ProtocolStatus.CANT_MPX_CONN:
                self.multiplex = False
                self._on_cant_multiplex()
            if ex is not None:
                ex.feed_end(event.app_status, event.protocol_status)
                self.maybe_release(ex)
        # GET_VALUES_RESULT / UNKNOWN_TYPE on a request connection: nothing asked, ignore.

    # --------------------------------------------------------------------- closing
    def _set_closed(self) -> None:
        self.state = State.CLOSED

    def close(self, error: FastCGIError | None = None) -> None:
        """Close now (synchronously): running exchanges fail with ``error``."""
        if self.state == State.CLOSED and not self.exchanges:
            return
        self.state = State.CLOSED
        reader_task, self._reader_task = self._reader_task, None
        if reader_task is not None and reader_task is not asyncio.current_task():
            reader_task.cancel()
        writer = self._writer
        if writer is not None:
            transport = writer.transport
            if transport.get_write_buffer_size():
                # close() would keep the socket open until the server reads what is still
                # buffered: never, from a server that stopped reading (a write timeout). Abort
                # with a reset (linger 0), or the FIN would wait behind the unread bytes too.
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                transport.abort()
            else:
                writer.close()
        lost = error or ConnectionLost(f"connection to {self.address} was closed")
        for ex in list(self.exchanges.values()):
            self.codec.forget_request(ex.request_id)
            ex.fail(lost)
            if ex.sender is not None and not ex.sender.done():
                ex.sender.cancel()
            self.maybe_release(ex)
        self._on_change()

    async def wait_closed(self) -> None:
        """Wait until the socket is closed (bounded; errors ignored)."""
        writer = self._writer
        if writer is None:
            return
        with contextlib.suppress(Exception):
            async with _compat.timeout(1.0):
                await writer.wait_closed()


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a shared task's exception as retrieved (its awaiters re-raise it themselves)."""
    if not task.cancelled():
        task.exception()


def _describe(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
