"""One asyncio Protocol per FastCGI connection (after uvicorn's ``httptools_impl``).

The Protocol owns the transport, the sans-IO codec, flow control both ways, and the table of
running requests. Each request runs as its own task; its :class:`RequestHandle` is the
:class:`fcgi_async.types.Request` the application sees.

Flow control (the Protocol is its one owner; ``read_paused`` holds *why* reading is paused,
one bit per reason, so lifting one reason never undoes another):
* Writes: the transport calls ``pause_writing`` above its high-water mark; a request's sends
  then wait in :meth:`FastCGIProtocol.drain` until ``resume_writing`` (or fail with
  :class:`ClientDisconnected` when the connection is lost or that request is aborted), and
  reading pauses too (:data:`PAUSED_FOR_OUTPUT`): the connection's own answers (UNKNOWN_TYPE,
  refusals, END_REQUEST after an abort) are written while input is read, so a web server that
  reads nothing must not be read either. Memory then stays below the write buffer limit plus
  one read's answers plus one chunk per request.
* Send deadline: a connection whose output does not drain (writing paused, or a close waiting
  to flush) for ``send_timeout_s`` is aborted by the ticker, logged once, and its slot freed.
* Reads: request body bytes wait in per-request queues, each chunk charged with
  :data:`BODY_CHUNK_OVERHEAD_BYTES`; when the connection's total exceeds
  ``max_body_buffer_bytes`` reading pauses (:data:`PAUSED_FOR_BUFFER`), and it resumes below
  half of it. FastCGI has no per-request window, so on a multiplexed connection one request
  that does not read its body stalls the bodies of the others once the bound is reached:
  bounded memory wins over fairness.
* Budget: ``max_connection_buffer_bytes`` bounds params of unfinished requests, the partial
  record, buffered bodies and unsent output together. Only params can push a connection over
  it (bodies and output pause reading first), and nothing but more input releases them, so a
  connection whose params do is closed, logged.

Timers are not armed per request: the server's one-second ticker looks at ``idle_since``,
``partial_since``, ``lingering_since`` and ``send_stalled_since`` of every connection (see
:meth:`FastCGIProtocol.check_timeouts`), which keeps the per-request path free of
``call_later``/``cancel`` pairs. The record timer restarts whenever a record completes and
does not run while *we* paused reading.

Closing: KEEP_CONN=0 closes after the last END_REQUEST; if input may still be arriving, our
side is shut down first and the rest is read and dropped (see :data:`LINGER_TIMEOUT_S`), so
the kernel never answers unread input with a reset. A request id is free once its END_REQUEST
is written, but the request counts in :class:`ServerState` until its task ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from ..cgi import INTERNAL_ERROR_RESPONSE, printable
from ..netaddr import Network, host_allowed
from ..protocol import (
    NEED_DATA,
    DataEnded,
    DataReceived,
    RemoteProtocolError,
    RequestAborted,
    RequestReceived,
    RequestRejected,
    Role,
    ServerConnection,
    StdinEnded,
    StdinReceived,
)
from ..types import ClientDisconnected

if TYPE_CHECKING:
    from .state import ServerState

logger = logging.getLogger("fcgi_async.server")
_app_logger = logging.getLogger("fcgi_async.app")

#: Seconds of silence after which a connection that must close after END_REQUEST (KEEP_CONN=0)
#: stops reading and dropping what the web server still sends (the rest of a body the app did
#: not read) once our side is shut down. Closing with unread input makes the kernel reset the
#: connection, which fails the web server's pending writes (nginx: 502) and can destroy the
#: answer in flight.
LINGER_TIMEOUT_S = 5.0
#: The most seconds such a connection is drained, however steadily input keeps coming (an
#: upload streamed at the client's pace, nginx ``fastcgi_request_buffering off``).
LINGER_MAX_S = 60.0

#: Bytes charged per buffered body (or DATA) chunk on top of its length: the ``bytes`` object's
#: header (33 bytes; a small one takes 48 after the allocator rounds it up) and its deque slot,
#: rounded up. Counting payload alone let 1-byte STDIN records hold ~56 bytes each against a
#: bound that counted one.
BODY_CHUNK_OVERHEAD_BYTES = 64

#: Reasons reading is paused (bits of :attr:`FastCGIProtocol.read_paused`): the transport's
#: write buffer is above its high-water mark ...
PAUSED_FOR_OUTPUT = 1
#: ... or the buffered request bodies are above ``max_body_buffer_bytes``.
PAUSED_FOR_BUFFER = 2


#: What a request gets when ``--request-timeout`` ends it before it sent anything.
GATEWAY_TIMEOUT_RESPONSE = (
    b"Status: 504 Gateway Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 15\r\n\r\nGateway Timeout"
)


class RequestHandle:
    """The :class:`fcgi_async.types.Request` of one running request."""

    __slots__ = (
        "_body",
        "_body_eof",
        "_data",
        "_data_eof",
        "_disconnect_event",
        "_drain_waiters",
        "_proto",
        "_unyielded",
        "_waiters",
        "disconnected",
        "done",
        "keep_conn",
        "params",
        "request_id",
        "response_started",
        "role",
        "started_at",
        "task",
        "thread_ident",
    )

    def __init__(self, proto: FastCGIProtocol, event: RequestReceived) -> None:
        self._proto = proto
        self.request_id = event.request_id
        self.role = event.role
        self.keep_conn = event.keep_conn
        self.params = event.params
        self._body: deque[bytes] = deque()
        # An authorizer has no body at all (spec §6.3).
        self._body_eof = event.role == Role.AUTHORIZER
        self._data: deque[bytes] = deque()
        self._data_eof = event.role != Role.FILTER
        # Lists: an app may wait in two tasks at once (a body reader and a disconnect
        # listener, two senders); every one of them must be woken.
        self._waiters: list[asyncio.Future[None]] = []
        self._disconnect_event: asyncio.Event | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        #: Send cost since this request last gave the loop a turn (see YIELD_AFTER_BYTES).
        self._unyielded = 0
        self.disconnected = False
        self.done = False
        self.response_started = False
        self.task: asyncio.Task[None] | None = None
        #: Loop time the request began; stamped only while request timeouts or the slow log
        #: are on (see :mod:`fcgi_async.server.timeouts`), 0.0 otherwise.
        self.started_at = 0.0
        #: The thread running this request's code, set by adapters that use one (see
        #: :attr:`fcgi_async.types.Request.thread_ident`).
        self.thread_ident: int | None = None

    def __repr__(self) -> str:
        return (
            f"<RequestHandle id={self.request_id} role={self.role.name} done={self.done}"
            f" disconnected={self.disconnected} started={self.response_started}>"
        )

    @property
    def logger(self) -> logging.Logger:
        """Logger for the application's own messages."""
        return _app_logger

    @property
    def peer(self) -> str:
        """The web server's address, for log lines."""
        return self._proto.peer

    # ----------------------------------------------------------- called by the Protocol
    def _wake(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _feed_body(self, data: bytes) -> None:
        self._body.append(data)
        self._wake()

    def _feed_body_eof(self) -> None:
        self._body_eof = True
        self._wake()

    def _feed_data(self, data: bytes) -> None:
        self._data.append(data)
        self._wake()

    def _feed_data_eof(self) -> None:
        self._data_eof = True
        self._wake()

    def _disconnect(self) -> None:
        if self.disconnected:
            return
        self.disconnected = True
        self._wake()
        if self._disconnect_event is not None:
            self._disconnect_event.set()
        if self._drain_waiters:
            # An abort must reach senders waiting on flow control now, not at resume_writing.
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(
                        ClientDisconnected(f"request {self.request_id} from {self.peer} went away")
                    )

    def _discard_input(self) -> int:
        """Drop unread input; returns the bytes it was charged (see ``body_consumed``)."""
        if not (self._body or self._data):
            return 0
        size = sum(map(len, self._body)) + sum(map(len, self._data))
        size += BODY_CHUNK_OVERHEAD_BYTES * (len(self._body) + len(self._data))
        self._body.clear()
        self._data.clear()
        return size

    # --------------------------------------------------------------- Request protocol
    async def _wait_input(self) -> None:
        if self.disconnected or self.done:
            # Once the request is ended its unread input is dropped and nothing more is fed:
            # waiting would never return (ASGI: receive() after the response -> disconnect).
            raise ClientDisconnected(f"request {self.request_id} from {self.peer} went away")
        waiter = self._proto.loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter.cancelled():  # woken waiters were already taken off the list
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    async def receive(self) -> bytes:
        """Return the next body chunk, ``b""`` at its end (see the Request protocol)."""
        while True:
            if self._body:
                chunk = self._body.popleft()
                self._proto.body_consumed(len(chunk) + BODY_CHUNK_OVERHEAD_BYTES)
                return chunk
            if self._body_eof:
                return b""
            await self._wait_input()

    async def receive_data(self) -> bytes:
        """FILTER role: the next chunk of the DATA stream, ``b""`` at its end."""
        while not self._body_eof or self._body:
            await self.receive()
        while True:
            if self._data:
                chunk = self._data.popleft()
                self._proto.body_consumed(len(chunk) + BODY_CHUNK_OVERHEAD_BYTES)
                return chunk
            if self._data_eof:
                return b""
            await self._wait_input()

    async def wait_disconnected(self) -> None:
        """Return once the request is aborted or its connection lost."""
        if self.disconnected:
            return
        if self._disconnect_event is None:
            self._disconnect_event = asyncio.Event()
        await self._disconnect_event.wait()

    def _check_writable(self) -> FastCGIProtocol:
        if self.done or self.disconnected:
            raise ClientDisconnected(f"request {self.request_id} from {self.peer} went away")
        proto = self._proto
        if proto.closed or proto.transport.is_closing():
            # The connection is lost or closing, perhaps without connection_lost having run
            # yet (a write failed with ECONNRESET a moment ago). Nothing more is written: the
            # transport would drop it (asyncio logs every such write), and an application
            # that only sends would never learn the client is gone.
            self._disconnect()
            raise ClientDisconnected(f"connection from {self.peer} lost")
        return proto

    async def _writable(self) -> FastCGIProtocol:
        proto = self._check_writable()
        if proto.write_paused:
            await proto.drain(self)
            self._unyielded = 0  # the loop ran while we waited
            proto = self._check_writable()
        return proto

    async def send_stdout(self, data: bytes) -> None:
        """Send response bytes, waiting for flow control (see the Request protocol).

        An empty ``data`` writes nothing but still raises once the connection is gone and
        counts towards the regular yield to the loop (see :data:`YIELD_AFTER_BYTES`).
        """
        proto = self._check_writable()
        if proto.write_paused:
            proto = await self._writable()
        if data:
            self.response_started = True
            proto.transport.writelines(proto.codec.send_stdout(self.request_id, data))
            if _WRITELINES_MAY_NOT_PAUSE:
                _pause_if_full(proto.transport)
        # Inline rather than a helper coroutine: this runs on every send.
        unyielded = self._unyielded + len(data) + SEND_CALL_COST
        if unyielded < YIELD_AFTER_BYTES:
            self._unyielded = unyielded
        else:  # YIELD_AFTER_BYTES sent without a wait: give the others a turn
            self._unyielded = 0
            await asyncio.sleep(0)

    async def send_stderr(self, data: bytes) -> None:
        """Send bytes on the STDERR stream; each line is also logged with this request."""
        proto = await self._writable()
        if data:
            _log_stderr(self, data)
            proto.transport.writelines(proto.codec.send_stderr(self.request_id, data))
            if _WRITELINES_MAY_NOT_PAUSE:
                _pause_if_full(proto.transport)
        unyielded = self._unyielded + len(data) + SEND_CALL_COST
        if unyielded < YIELD_AFTER_BYTES:
            self._unyielded = unyielded
        else:  # as in send_stdout
            self._unyielded = 0
            await asyncio.sleep(0)

    async def end(self, stdout: bytes = b"", app_status: int = 0) -> None:
        """Send the last bytes, close the streams and END_REQUEST in one write."""
        proto = self._check_writable()
        if proto.write_paused:
            proto = await self._writable()
        if stdout:
            self.response_started = True
        self.done = True
        buffers = proto.codec.end_request(self.request_id, stdout, app_status=app_status)
        if len(buffers) == 1:
            proto.transport.write(buffers[0])
        else:
            proto.transport.writelines(buffers)
            if _WRITELINES_MAY_NOT_PAUSE:
                _pause_if_full(proto.transport)
        proto.request_finished(self)

    def fail(self) -> None:
        """Break the connection visibly: the response failed after it started."""
        if self.done:
            return
        self.done = True
        self._proto.break_connection(f"request {self.request_id} failed after its response began")

    def time_out(self) -> str:
        """End a request that ran past ``--request-timeout`` and tell its application.

        Nothing sent yet: a 504 and END_REQUEST (the id is freed, the web server gets its
        answer). The response already started: :meth:`fail` (the connection breaks visibly).
        Either way the request counts as disconnected from now on (waiting receives end, sends
        raise :class:`ClientDisconnected`), and its task is cancelled unless its code runs in a
        thread (:attr:`thread_ident` set), which nothing can interrupt.

        Returns:
            What was done, for the log line.
        """
        proto = self._proto
        if self.done:
            outcome = "its response was already complete"
        elif self.disconnected or proto.closed:
            outcome = "its client was already gone"
        elif self.response_started:
            self.fail()
            outcome = "response already started: connection broken"
        else:
            # Written even while writing is paused, as _finish_abandoned's 500 is.
            self.done = True
            proto.transport.writelines(
                proto.codec.end_request(self.request_id, GATEWAY_TIMEOUT_RESPONSE)
            )
            proto.request_finished(self)
            outcome = "answered 504"
        self._disconnect()
        task = self.task
        if task is None or task.done():
            return outcome
        if self.thread_ident is not None:
            return outcome + "; its thread cannot be interrupted, its writes fail from now on"
        task.cancel()
        return outcome + "; task cancelled"


class FastCGIProtocol(asyncio.Protocol):
    """The asyncio side of one FastCGI connection."""

    # Built in connection_made; declared here for the type checker.
    transport: asyncio.Transport
    codec: ServerConnection
    loop: asyncio.AbstractEventLoop
    peer: str

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.requests: dict[int, RequestHandle] = {}
        #: Body and DATA bytes waiting for the app, each chunk charged with its overhead.
        self.buffered = 0
        #: 0 while reading; else why it is paused (PAUSED_FOR_OUTPUT, PAUSED_FOR_BUFFER bits).
        self.read_paused = 0
        self.write_paused = False
        self.closed = False
        #: True once the peer shut down its sending side while answers were still owed.
        self.input_closed = False
        #: Loop time since when output has waited to drain (writing paused, or a close
        #: waiting to flush); None while it drains. The send deadline counts from here.
        self.send_stalled_since: float | None = None
        #: Refused BEGIN_REQUESTs by status name, for the one summary line at close.
        self.refused: dict[str, int] | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        #: Loop time since when the connection has had no request (None while busy).
        self.idle_since: float | None = None
        #: Loop time since when a record has been half-received (None when none is).
        self.partial_since: float | None = None
        #: Loop time since when we only drain input before closing (see LINGER_TIMEOUT_S).
        self.lingering_since: float | None = None
        #: Loop time of the last input dropped while lingering.
        self.lingering_input_at = 0.0

    def __repr__(self) -> str:
        return f"<FastCGIProtocol peer={getattr(self, 'peer', '?')} requests={len(self.requests)}>"

    # ----------------------------------------------------------------- connection
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        state = self.state
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.loop = state.loop
        self.codec = ServerConnection(
            limits=state.limits,
            roles=state.roles,
            multiplex=state.config.multiplex,
            management_values=state.management_values,
        )
        self.codec.accepting = state.accepting
        self.peer = _peer_name(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # The socket may already be dead; the first write will tell.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.idle_since = self.loop.time()
        if state.allowed_networks and not _peer_allowed(transport, state.allowed_networks):
            logger.warning(
                "refusing connection from %s: not an allowed client (--allowed-clients)",
                self.peer,
            )
            self.closed = True
            self.transport.abort()
            return
        if not state.connection_opened(self):
            logger.warning(
                "refusing connection from %s: %d connections open (--max-connections)",
                self.peer,
                state.config.max_connections,
            )
            self.closed = True
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.send_stalled_since = None
        self.state.connection_closed(self)
        if self.refused is not None:
            self._log_refusals()
        for handle in self.requests.values():
            handle._disconnect()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(ClientDisconnected(f"connection from {self.peer} lost"))
        self._drain_waiters.clear()

    def eof_received(self) -> bool:
        """The peer shut down its sending side: a half-close (``shutdown(SHUT_WR)`` after the
        request, as socat does) or a full close; nothing on the wire tells them apart.

        Requests whose input is complete and whose response has not begun are still answered,
        as php-fpm does, and the connection closes after the last of them. Requests still
        reading their input, and responses already under way (nginx closes its upstream
        connection when its client aborts mid-response), see a disconnect, as when the
        connection is lost. Returns True (keep our side open for the answers) when there are
        any to send, else False (close now).
        """
        if self.input_closed:
            return True  # asyncio reads EOF again when reading resumes after it
        if self.closed or self.lingering_since is not None:
            return False
        owed = False
        for handle in list(self.requests.values()):
            if (
                handle._body_eof
                and handle._data_eof
                and not handle.disconnected
                and not handle.response_started
            ):
                owed = True
            else:
                handle._disconnect()
        if not owed:
            return False
        self.input_closed = True
        self.partial_since = None  # nothing more can arrive: no record is pending
        return True

    # ---------------------------------------------------------------------- input
    def data_received(self, data: bytes) -> None:
        if self.lingering_since is not None:
            self.lingering_input_at = self.loop.time()
            return  # the rest of a request we already answered: dropped
        codec = self.codec
        codec.receive_data(data)
        requests = self.requests
        progressed = False
        try:
            while True:
                event = codec.next_event()
                if event is NEED_DATA:
                    break
                progressed = True
                cls = type(event)
                if cls is RequestReceived:
                    self._start_request(event)  # type: ignore[arg-type]
                elif cls is StdinEnded:
                    handle = requests.get(event.request_id)  # type: ignore[union-attr]
                    if handle is not None:
                        handle._body_eof = True  # _feed_body_eof, inlined: once per request
                        if handle._waiters:
                            handle._wake()
                elif cls is StdinReceived or cls is DataReceived:
                    handle = requests.get(event.request_id)  # type: ignore[union-attr]
                    if handle is not None and not handle.done:
                        chunk: bytes = event.data  # type: ignore[union-attr]
                        if cls is StdinReceived:
                            handle._feed_body(chunk)
                        else:
                            handle._feed_data(chunk)
                        self.buffered += len(chunk) + BODY_CHUNK_OVERHEAD_BYTES
                        if self.buffered > self.state.config.max_body_buffer_bytes:
                            self._pause_reading(PAUSED_FOR_BUFFER)
                elif cls is DataEnded:
                    handle = requests.get(event.request_id)  # type: ignore[union-attr]
                    if handle is not None:
                        handle._feed_data_eof()
                elif cls is RequestAborted:
                    self._abort_request(event.request_id)  # type: ignore[union-attr]
                elif cls is RequestRejected:
                    self._refuse(event)  # type: ignore[arg-type]
        except RemoteProtocolError as exc:
            logger.warning("closing connection from %s: protocol error: %s", self.peer, exc)
            self._close_now()
            return
        if codec.params_buffered and self._params_over_budget():
            return
        out = codec.data_to_send()
        if out:
            progressed = True
            self.transport.write(out)
            if codec.close_requested and not requests:
                # A refusal (or an abort before the params ended) of a KEEP_CONN=0 request:
                # the rest of that request may still be on its way.
                self._close_after_end(input_complete=False)
                return
        if not codec.has_partial_record:
            self.partial_since = None
        elif progressed or self.partial_since is None:
            # A record completed: the half one is new. A long upload whose reads end mid-record
            # is progress, not a slowloris; only a record that stays incomplete is.
            self.partial_since = self.loop.time()

    def _refuse(self, event: RequestRejected) -> None:
        """Log the first refused BEGIN_REQUEST of a connection; count the rest for its close.

        One line per refusal let a peer write 50 MB of log in seconds.
        """
        status = event.protocol_status.name
        refused = self.refused
        if refused is None:
            self.refused = {status: 1}
            logger.warning(
                "refused request %d from %s: %s (more refusals on this connection are counted"
                " and logged when it closes)",
                event.request_id,
                self.peer,
                status,
            )
        else:
            refused[status] = refused.get(status, 0) + 1

    def _log_refusals(self) -> None:
        """The summary line of a closed connection's refusals, when there was more than one."""
        refused = self.refused or {}
        total = sum(refused.values())
        if total > 1:
            logger.warning(
                "connection from %s closed after %d refused requests (%s)",
                self.peer,
                total,
                ", ".join(f"{name}: {count}" for name, count in sorted(refused.items())),
            )
        self.refused = None

    def _params_over_budget(self) -> bool:
        """Close the connection if it holds more than its budget while params are unfinished.

        Params can only grow until their stream ends, and pausing would wait for input that
        cannot arrive: the connection is closed, logged. Returns True when it was.
        """
        codec = self.codec
        budget = self.state.config.max_connection_buffer_bytes
        output = self.transport.get_write_buffer_size()
        held = codec.buffered_bytes + self.buffered + output
        if held <= budget:
            return False
        logger.warning(
            "closing connection from %s: holds %d bytes (params of unfinished requests %d,"
            " bodies %d, output %d), over --max-connection-buffer-bytes %d",
            self.peer,
            held,
            codec.params_buffered,
            self.buffered,
            output,
            budget,
        )
        self._close_now()
        return True

    def _start_request(self, event: RequestReceived) -> None:
        handle = self.state.handle_class(self, event)
        self.requests[event.request_id] = handle
        self.idle_since = None
        handle.task = task = self.loop.create_task(self._run(handle))
        # Counted until the task ends, not until END_REQUEST: shutdown must wait for (or
        # cancel) application code that outlives its response, an abort or a broken connection.
        state = self.state
        state.request_started(task)
        if state.watch is not None:
            state.watch.add(handle, task)

    async def _run(self, handle: RequestHandle) -> None:
        try:
            await self.state.app(handle)
        except ClientDisconnected:
            logger.debug("request %d from %s: client went away", handle.request_id, self.peer)
        except asyncio.CancelledError:
            logger.debug("request %d from %s: cancelled", handle.request_id, self.peer)
            if not handle.done:
                handle.fail()
            raise
        except Exception:
            if handle.disconnected:
                logger.debug(
                    "request %d from %s failed after a disconnect",
                    handle.request_id,
                    self.peer,
                    exc_info=True,
                )
            else:
                logger.exception(
                    "request %d from %s: application error", handle.request_id, self.peer
                )
        finally:
            if not handle.done:
                self._finish_abandoned(handle)

    def _finish_abandoned(self, handle: RequestHandle) -> None:
        """The application returned without ending its request: end it for them."""
        if handle.disconnected:
            handle.done = True
            self.request_finished(handle)
        elif not handle.response_started:
            # Written even while writing is paused: a 500 costs ~150 bytes over the high-water
            # mark, where fail() would break every other request on this connection.
            logger.error(
                "request %d from %s: application finished without a response; sent 500",
                handle.request_id,
                self.peer,
            )
            handle.done = True
            self.transport.writelines(
                self.codec.end_request(handle.request_id, INTERNAL_ERROR_RESPONSE)
            )
            self.request_finished(handle)
        else:
            handle.fail()

    def _abort_request(self, request_id: int) -> None:
        """ABORT_REQUEST: tell the app, answer END_REQUEST at once, free the id."""
        handle = self.requests.get(request_id)
        if handle is None:
            return
        handle._disconnect()
        if not handle.done:
            handle.done = True
            self.transport.writelines(self.codec.end_request(request_id))
            self.request_finished(handle)

    def request_finished(self, handle: RequestHandle) -> None:
        """Forget a request (free its id) once its END_REQUEST (or failure) is written."""
        if self.requests.pop(handle.request_id, None) is None:
            return
        if handle._body or handle._data:
            self.body_consumed(handle._discard_input())
        if handle._waiters:
            handle._wake()  # a receive() still waiting (another task of the app) must not hang
        if not self.requests:
            self.idle_since = self.loop.time()
            if self.input_closed:
                self._close_when_flushed()  # the peer half-closed: its last answer is out
            elif self.codec.close_requested:
                self._close_after_end(
                    input_complete=handle._body_eof
                    and handle._data_eof
                    and not self.codec.has_partial_record
                )

    # --------------------------------------------------------------- flow control
    def body_consumed(self, size: int) -> None:
        """The app took ``size`` charged body bytes out of its buffer: maybe resume reading."""
        self.buffered -= size
        if (
            self.read_paused & PAUSED_FOR_BUFFER
            and self.buffered <= self.state.config.max_body_buffer_bytes // 2
        ):
            self._resume_reading(PAUSED_FOR_BUFFER)

    def _pause_reading(self, reason: int) -> None:
        """Stop reading for ``reason`` (a PAUSED_FOR_* bit) until it is lifted."""
        if self.closed or self.lingering_since is not None:
            return  # a lingering connection reads and drops what comes, whatever else
        if not self.read_paused:
            self.transport.pause_reading()
        self.read_paused |= reason

    def _resume_reading(self, reason: int) -> None:
        """Lift ``reason``; reading resumes when no other reason is left."""
        if not self.read_paused & reason:
            return
        self.read_paused &= ~reason
        if self.read_paused:
            return
        if self.partial_since is not None:
            # The half record waited on us, not on the peer: its timer starts again.
            self.partial_since = self.loop.time()
        if not self.closed:
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        """The transport's buffer is above its high-water mark: stop reading, start the deadline."""
        self.write_paused = True
        if self.send_stalled_since is None:
            self.send_stalled_since = self.loop.time()
        self._pause_reading(PAUSED_FOR_OUTPUT)

    def resume_writing(self) -> None:
        """The transport's buffer drained below its low-water mark: wake senders, read again."""
        self.write_paused = False
        if not self.closed:
            self.send_stalled_since = None  # a close keeps its deadline until fully flushed
        self._resume_reading(PAUSED_FOR_OUTPUT)
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self, handle: RequestHandle | None = None) -> None:
        """Wait until the transport's write buffer is below its low-water mark.

        Args:
            handle: the request waiting; its abort or disconnect ends the wait too.

        Raises:
            ClientDisconnected: the connection was lost (or ``handle`` aborted) while waiting.
        """
        if self.closed:
            raise ClientDisconnected(f"connection from {self.peer} lost")
        if not self.write_paused:
            return
        waiter = self.loop.create_future()
        self._drain_waiters.append(waiter)
        if handle is not None:
            handle._drain_waiters.append(waiter)
        try:
            await waiter
        finally:
            if handle is not None:
                with contextlib.suppress(ValueError):
                    handle._drain_waiters.remove(waiter)

    # ------------------------------------------------------------------- closing
    def break_connection(self, reason: str) -> None:
        """Write bytes every web server rejects, then close: the response fails visibly."""
        logger.warning("breaking connection from %s: %s", self.peer, reason)
        if not self.closed:
            self.transport.write(self.codec.break_connection())
        self._close_now()

    def _close_when_flushed(self) -> None:
        if not self.closed:
            self.closed = True
            self._stamp_unsent()
            self.transport.close()  # asyncio flushes the write buffer before closing

    def _stamp_unsent(self) -> None:
        """Start the send deadline if output is still waiting while we close our side."""
        if self.send_stalled_since is None and self.transport.get_write_buffer_size():
            self.send_stalled_since = self.loop.time()

    def _close_after_end(self, *, input_complete: bool) -> None:
        """Close once the last END_REQUEST is flushed, because the web server asked (KEEP_CONN=0).

        When input may still arrive, shut down our side only (the peer sees EOF right after
        END_REQUEST) and drop what comes until the peer closes, stays silent for
        LINGER_TIMEOUT_S, or LINGER_MAX_S have passed.
        """
        if self.closed or self.lingering_since is not None:
            return
        if input_complete or not self.transport.can_write_eof():
            self._close_when_flushed()
            return
        self.lingering_since = self.lingering_input_at = self.loop.time()
        self.partial_since = None
        self._stamp_unsent()
        self.transport.write_eof()
        if self.read_paused:
            self.read_paused = 0
            self.transport.resume_reading()

    def _close_now(self) -> None:
        self._close_when_flushed()
        for handle in list(self.requests.values()):
            handle._disconnect()
            handle.done = True
            self.request_finished(handle)

    def close_idle(self) -> bool:
        """Close the connection if no request runs on it. Returns True if it did."""
        if self.requests or self.closed:
            return False
        self._close_when_flushed()
        return True

    def stop_accepting(self) -> None:
        """Graceful shutdown: close when idle; new requests are refused with OVERLOADED."""
        self.codec.accepting = False
        self.codec.close_requested = True
        self.close_idle()

    def check_timeouts(self, now: float) -> None:
        """Abort the connection if its output stalled, close it if it idled or left a record
        half-sent for too long. Called by the server's ticker, closing connections included."""
        stalled = self.send_stalled_since
        if stalled is not None and now - stalled > self.state.config.send_timeout_s:
            self._send_timed_out(now - stalled)
            return
        if self.closed:
            return
        if self.lingering_since is not None:
            if (
                now - self.lingering_input_at > LINGER_TIMEOUT_S
                or now - self.lingering_since > LINGER_MAX_S
            ):
                self._close_when_flushed()
            return
        config = self.state.config
        if (
            self.partial_since is not None
            and not self.read_paused  # we stopped reading: the peer cannot finish the record
            and now - self.partial_since > config.record_timeout_s
        ):
            logger.warning(
                "closing connection from %s: record incomplete after %g s (--record-timeout)",
                self.peer,
                config.record_timeout_s,
            )
            self._close_now()
        elif self.idle_since is not None and now - self.idle_since > config.keepalive_timeout_s:
            logger.debug("closing idle connection from %s", self.peer)
            self._close_when_flushed()

    def _send_timed_out(self, stalled_s: float) -> None:
        """The peer left our output unread past ``send_timeout_s``: abort, free the slot."""
        logger.warning(
            "aborting connection from %s: %d bytes of output unread for %.1f s (--send-timeout %g)",
            self.peer,
            self.transport.get_write_buffer_size(),
            stalled_s,
            self.state.config.send_timeout_s,
        )
        self.send_stalled_since = None
        self.abort()
        # connection_lost will discard it again (harmless): the slot must not wait for it.
        self.state.connection_closed(self)

    def abort(self) -> None:
        """Drop the connection now (end of the graceful timeout, or the send deadline)."""
        for handle in self.requests.values():
            handle._disconnect()
        self.closed = True
        self.transport.abort()


#: A request that sends this many bytes without ever waiting for the socket gives the loop
#: a turn (``sleep(0)``). Sends that the kernel takes at once never wait, so without it an
#: application that only sends (an endless event stream, a large generated body) holds the
#: loop: no other request, timer or connection_lost runs until it stops. At 1 MiB the others
#: wait about a millisecond at most, and the yield (one loop iteration, a few µs) is lost in
#: the noise of a 4 KiB-chunk stream (~1.5 µs of process CPU time per send either way; at
#: 256 KiB it showed). Not a setting: it bounds our own loop's latency, not a peer's use.
YIELD_AFTER_BYTES = 1024 * 1024
#: What one send counts for, towards YIELD_AFTER_BYTES, besides its bytes (the per-call cost
#: of framing and the write): empty or tiny sends yield too, after at most
#: YIELD_AFTER_BYTES // SEND_CALL_COST (64) of them.
SEND_CALL_COST = 16 * 1024


#: asyncio's selector transport on CPython 3.12.0-3.12.8 and 3.13.0-3.13.1 never pauses its
#: protocol from ``writelines()`` (CPython gh-127655): a web server that reads slowly would
#: make us buffer a whole response (the 100 MB slow-reader test buffered 99.8 MB on 3.13.0).
#: On those versions each send asks the transport to pause us if its buffer is over the mark.
_WRITELINES_MAY_NOT_PAUSE = (3, 12) <= sys.version_info < (3, 12, 9) or (
    3,
    13,
) <= sys.version_info < (3, 13, 2)


def _pause_if_full(transport: asyncio.Transport) -> None:
    """What ``writelines()`` should have done (see :data:`_WRITELINES_MAY_NOT_PAUSE`): pause
    the protocol when the write buffer is over its high-water mark. Only asyncio's own
    transports have the (private, stable since 3.4) method; uvloop's pause by themselves."""
    pause = getattr(transport, "_maybe_pause_protocol", None)
    if pause is not None:
        pause()


def _log_stderr(handle: RequestHandle, data: bytes) -> None:
    """Log what an application sends on STDERR, one record per line, with its request.

    Level WARNING, as php-fpm logs what its children say into stderr; the record carries
    ``request_id``, ``request_method`` and ``request_uri`` attributes for structured handlers.
    The method and URI are escaped (:func:`fcgi_async.cgi.printable`): a request cannot forge
    a log line.
    """
    params = handle.params
    method = printable(params.get(b"REQUEST_METHOD") or b"-")
    uri = printable(params.get(b"REQUEST_URI") or params.get(b"SCRIPT_NAME") or b"-")
    extra = {"request_id": handle.request_id, "request_method": method, "request_uri": uri}
    log = handle.logger
    for line in data.decode("utf-8", "backslashreplace").splitlines():
        if line:
            log.warning(
                "request %d (%s %s) stderr: %s", handle.request_id, method, uri, line, extra=extra
            )


def _peer_allowed(transport: asyncio.BaseTransport, networks: tuple[Network, ...]) -> bool:
    """True when the peer is a unix socket or its IP is in one of ``networks``."""
    peer: Any = transport.get_extra_info("peername")
    if not (isinstance(peer, tuple) and len(peer) >= 2):
        return True  # unix socket: its file mode decides who connects
    return host_allowed(str(peer[0]), networks)


def _peer_name(transport: asyncio.BaseTransport) -> str:
    peer: Any = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    sockname: Any = transport.get_extra_info("sockname")
    return f"unix:{sockname}" if sockname else "unix-peer"
