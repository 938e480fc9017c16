"""The application (server) side of one FastCGI connection, sans-IO (spec §3-§6).

Theory of operation: feed received bytes with :meth:`ServerConnection.receive_data`, then call
:meth:`ServerConnection.next_event` until it returns :data:`NEED_DATA`. Management records
(GET_VALUES, unknown types), BEGIN_REQUESTs that must be refused and ABORT_REQUESTs that
arrive before a request's params are complete are answered by the connection itself; those
answers wait in :meth:`ServerConnection.data_to_send`, which the I/O layer drains after each
batch of events. The response of a request is framed by
:meth:`send_stdout`, :meth:`send_stderr` and :meth:`end_request`, which return buffers for
``transport.writelines``. The request id becomes free when we end the request (spec §5.5).

Contract: ``next_event`` raises only :class:`RemoteProtocolError`; after it raises, the
connection is dead and raises again. The ``send`` methods raise only
:class:`LocalProtocolError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from ._buffer import RecordBuffer
from ._state import TRANSITIONS, Phase
from .constants import (
    ABORT_REQUEST,
    BEGIN_REQUEST,
    DATA,
    END_REQUEST,
    FCGI_KEEP_CONN,
    FCGI_VERSION_1,
    GET_VALUES,
    GET_VALUES_RESULT,
    MAX_CONTENT_LENGTH,
    NULL_REQUEST_ID,
    PARAMS,
    STDERR,
    STDIN,
    STDOUT,
    UNKNOWN_TYPE,
    ProtocolStatus,
    Role,
)
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    NEED_DATA,
    DataEnded,
    DataReceived,
    RequestAborted,
    RequestReceived,
    RequestRejected,
    ServerEvent,
    StdinEnded,
    StdinReceived,
    _NeedData,
)
from .limits import Limits
from .records import (
    BEGIN_BODY,
    HEADER,
    JOIN_BELOW,
    PADDING,
    Buffers,
    decode_pairs,
    encode_end_request,
    encode_pairs,
    encode_record,
    encode_stream,
    encode_unknown_type,
    parse_request_head,
)

#: Record types a web server never sends with a request id: an application's output, or
#: management records (which carry id 0). Receiving one means a broken peer.
_WRONG_DIRECTION = frozenset(
    {END_REQUEST, STDOUT, STDERR, GET_VALUES_RESULT, UNKNOWN_TYPE, GET_VALUES}
)
_STREAM_INPUT = frozenset({PARAMS, STDIN, DATA})
_ALL_ROLES = frozenset(Role)
# Enum attribute lookups cost more than a global per record; these are read on the hot path.
_PHASE_PARAMS: Final = Phase.PARAMS
_PHASE_INPUT_DONE: Final = Phase.INPUT_DONE
_PHASE_STDIN: Final = Phase.STDIN
_RESPONDER: Final = Role.RESPONDER

#: How many request ids keep their usual response tail (end of STDOUT, then END_REQUEST with
#: status 0 and REQUEST_COMPLETE) ready-made. Web servers reuse a few low ids (nginx: 1).
MAX_CACHED_TAILS: Final = 256
_CLEAN_TAILS: dict[int, bytes] = {}
_REQUEST_COMPLETE: Final = ProtocolStatus.REQUEST_COMPLETE

#: Bytes that every FastCGI peer rejects as a record header (version 0): nginx answers
#: "upstream sent unsupported FastCGI protocol version" and drops the client connection
#: without a final chunk, which is how a response that failed after its headers is made visible.
_POISON = b"\x00" * 8


class _Request:
    """Input state of one active request."""

    __slots__ = ("aborted", "keep_conn", "params", "phase", "role", "stderr_used")

    def __init__(self, role: Role, keep_conn: bool) -> None:
        self.role = role
        self.keep_conn = keep_conn
        self.phase = Phase.PARAMS
        self.params = bytearray()
        self.aborted = False
        self.stderr_used = False


class ServerConnection:
    """Protocol state of one connection, as seen by the application.

    Args:
        limits: the bounds to enforce on input.
        roles: the roles this application serves; others are refused with UNKNOWN_ROLE.
        multiplex: serve several requests at once on this connection (FCGI_MPXS_CONNS=1).
            When false, a second BEGIN_REQUEST while one runs is refused with CANT_MPX_CONN.
        management_values: the values GET_VALUES answers with (FCGI_MAX_CONNS, FCGI_MAX_REQS,
            FCGI_MPXS_CONNS), as the running configuration makes them true.

    Raises:
        ValueError: a role FastCGI 1.0 does not define, or ``management_values`` too large to
            answer in one record.
    """

    __slots__ = (
        "_buf",
        "_buffer",
        "_dead",
        "_limits",
        "_multiplex",
        "_outgoing",
        "_parse_head",
        "_pending",
        "_requests",
        "_roles",
        "_values",
        "accepting",
        "close_requested",
        "params_buffered",
    )

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        roles: Iterable[Role] = (Role.RESPONDER, Role.AUTHORIZER, Role.FILTER),
        multiplex: bool = True,
        management_values: Mapping[bytes, bytes] | None = None,
    ) -> None:
        self._limits = limits or Limits()
        # One connection is built per request behind nginx's default config, so these checks
        # are kept to set operations and len() calls.
        self._roles = frozenset(roles)
        if not self._roles <= _ALL_ROLES:
            raise ValueError(f"roles must be FastCGI roles, not {list(self._roles - _ALL_ROLES)}")
        self._multiplex = multiplex
        self._values = dict(management_values or {})
        values = self._values
        # 8 bytes bounds the two length fields of a pair. Answers name each value at most
        # once, so this bounds every GET_VALUES_RESULT we can send.
        if sum(map(len, values)) + sum(map(len, values.values())) + 8 * len(values) > (
            MAX_CONTENT_LENGTH
        ):
            raise ValueError("management_values do not fit in one GET_VALUES_RESULT record")
        self._buffer = RecordBuffer()
        # The buffer's bytes, for the request-head fast path (see _next_head).
        self._buf = self._buffer.data
        # Only RESPONDER requests take the fast path; the other roles are rare.
        self._parse_head = parse_request_head if Role.RESPONDER in self._roles else None
        # The StdinEnded that the fast path read along with its RequestReceived.
        self._pending: StdinEnded | None = None
        self._requests: dict[int, _Request] = {}
        self._outgoing: list[bytes] = []
        self._dead = False
        #: Set to False to refuse new requests with OVERLOADED (graceful shutdown).
        self.accepting = True
        #: True once a request without FCGI_KEEP_CONN was answered: close when idle (spec §5.1).
        self.close_requested = False
        #: Bytes of params held for requests whose PARAMS stream has not ended (all of them
        #: together): memory the peer can grow and only finishing the params releases.
        self.params_buffered = 0

    def __repr__(self) -> str:
        return (
            f"<ServerConnection active={sorted(self._requests)} pending={self._buffer.pending}"
            f" close_requested={self.close_requested}>"
        )

    # ----------------------------------------------------------------------------- input

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes received from the peer; events come out of :meth:`next_event`."""
        self._buf += data  # what RecordBuffer.feed does, without the call

    @property
    def has_partial_record(self) -> bool:
        """True when received bytes wait for the rest of their record (slowloris timer)."""
        return len(self._buf) > 0

    @property
    def buffered_bytes(self) -> int:
        """Input held by the codec: unfinished params of every request plus the partial record."""
        return len(self._buf) + self.params_buffered

    @property
    def active_requests(self) -> int:
        """Requests begun and not yet ended by us."""
        return len(self._requests)

    def is_active(self, request_id: int) -> bool:
        """True while ``request_id`` is begun and not yet ended by us."""
        return request_id in self._requests

    def next_event(self) -> ServerEvent | _NeedData:
        """Return the next event, or :data:`NEED_DATA` when the buffered bytes hold none.

        Raises:
            RemoteProtocolError: the peer broke the protocol. The connection is dead.
        """
        if self._dead:
            raise RemoteProtocolError("connection already failed")
        pending = self._pending
        if pending is not None:
            self._pending = None
            return pending
        if not self._buf:
            return NEED_DATA
        try:
            while True:
                buf = self._buf
                if self._parse_head is not None and len(buf) >= 24 and buf[1] == BEGIN_REQUEST:
                    head = self._next_head()  # BEGIN_REQUEST first: maybe a whole head
                    if head is not None:
                        return head
                record = self._buffer.next_record()
                if record is None:
                    return NEED_DATA
                event = self._handle_record(*record)
                if event is not None:
                    return event
        except RemoteProtocolError:
            self._dead = True
            raise

    def _next_head(self) -> RequestReceived | None:
        """The fast path: BEGIN_REQUEST, PARAMS and an empty STDIN read in one go.

        Taken only when the record-by-record path would accept the request and give the
        same events (see :func:`~fcgi_async.protocol.records.parse_request_head`); anything
        unusual returns ``None`` and goes that way instead.
        """
        limits = self._limits
        assert self._parse_head is not None
        head = self._parse_head(self._buf, limits.max_params_bytes, limits.max_params_pairs)
        if head is None:
            return None
        rid, role, flags, params, consumed, stdin_ended = head
        requests = self._requests
        if (
            role != _RESPONDER
            or rid in requests
            or not self.accepting
            or (requests and not self._multiplex)
            or len(requests) >= limits.max_requests_per_connection
        ):
            return None  # a refusal or an error: the record-by-record path gives it
        buf = self._buf
        if consumed == len(buf):
            buf.clear()
        else:
            del buf[:consumed]
        keep_conn = bool(flags & FCGI_KEEP_CONN)
        req = _Request(_RESPONDER, keep_conn)
        if stdin_ended:
            req.phase = _PHASE_INPUT_DONE
            self._pending = StdinEnded(rid)
        else:
            req.phase = _PHASE_STDIN
        requests[rid] = req
        return RequestReceived(rid, _RESPONDER, keep_conn, params)

    def _handle_record(self, rtype: int, rid: int, content: bytes) -> ServerEvent | None:
        if rid == NULL_REQUEST_ID:
            self._handle_management(rtype, content)
            return None
        if rtype == BEGIN_REQUEST:
            return self._handle_begin(rid, content)
        if rtype in _WRONG_DIRECTION:
            raise RemoteProtocolError(f"record type {rtype} is not valid from a web server")
        req = self._requests.get(rid)
        if req is None:
            # Inactive ids (never begun, refused, or already ended by us) are ignored (spec §3.3).
            return None
        if rtype == ABORT_REQUEST:
            if req.phase == _PHASE_PARAMS:
                # The application never saw this request: end it here, so RequestAborted
                # only ever follows RequestReceived and no request id is left hanging.
                del self._requests[rid]
                self.params_buffered -= len(req.params)
                self._outgoing.append(encode_end_request(rid, 0, ProtocolStatus.REQUEST_COMPLETE))
                if not req.keep_conn:
                    self.close_requested = True
                return None
            if req.aborted:
                return None
            req.aborted = True
            return RequestAborted(rid)
        if rtype not in _STREAM_INPUT:
            return None  # A type newer than FastCGI 1.0 on a request: ignore it.
        is_end = not content
        phase = TRANSITIONS.get((req.role, req.phase, rtype, is_end))
        if phase is None:
            raise RemoteProtocolError(
                f"record type {rtype} not allowed in phase {req.phase.name} "
                f"for role {req.role.name}",
                request_id=rid,
            )
        prev = req.phase
        req.phase = phase
        if rtype == PARAMS:
            if not is_end:
                if len(req.params) + len(content) > self._limits.max_params_bytes:
                    raise RemoteProtocolError(
                        f"params exceed {self._limits.max_params_bytes} bytes", request_id=rid
                    )
                req.params += content
                self.params_buffered += len(content)
                return None
            pairs = decode_pairs(req.params, self._limits.max_params_pairs)
            self.params_buffered -= len(req.params)
            req.params = bytearray()
            return RequestReceived(rid, req.role, req.keep_conn, dict(pairs))
        if prev == _PHASE_INPUT_DONE:
            return None  # An authorizer's tolerated STDIN.
        if rtype == STDIN:
            return StdinEnded(rid) if is_end else StdinReceived(rid, content)
        return DataEnded(rid) if is_end else DataReceived(rid, content)

    def _handle_begin(self, rid: int, content: bytes) -> RequestRejected | None:
        if rid in self._requests:
            raise RemoteProtocolError(f"BEGIN_REQUEST for active request {rid}", request_id=rid)
        if len(content) != BEGIN_BODY.size:
            raise RemoteProtocolError(
                f"BEGIN_REQUEST body of {len(content)} bytes, expected 8", request_id=rid
            )
        role, flags = BEGIN_BODY.unpack(content)
        keep_conn = bool(flags & FCGI_KEEP_CONN)
        status: ProtocolStatus | None = None
        if role not in self._roles:
            status = ProtocolStatus.UNKNOWN_ROLE
        elif self._requests and not self._multiplex:
            status = ProtocolStatus.CANT_MPX_CONN
        elif not self.accepting or len(self._requests) >= self._limits.max_requests_per_connection:
            status = ProtocolStatus.OVERLOADED
        if status is None:
            self._requests[rid] = _Request(Role(role), keep_conn)
            return None
        self._outgoing.append(encode_end_request(rid, 0, status))
        if not keep_conn:
            self.close_requested = True
        return RequestRejected(rid, status)

    def _handle_management(self, rtype: int, content: bytes) -> None:
        if rtype != GET_VALUES:
            self._outgoing.append(encode_unknown_type(rtype))
            return
        if len(content) > self._limits.max_management_bytes:
            raise RemoteProtocolError(f"GET_VALUES of {len(content)} bytes is too large")
        names = decode_pairs(content, self._limits.max_params_pairs)
        # A dict drops repeated names: the answer can never outgrow one record (see __init__).
        answer = {name: self._values[name] for name, _ in names if name in self._values}
        self._outgoing.append(encode_record(GET_VALUES_RESULT, 0, encode_pairs(answer)))

    def data_to_send(self) -> bytes:
        """Return (and forget) the answers queued by the connection itself."""
        if not self._outgoing:
            return b""
        out = b"".join(self._outgoing)
        self._outgoing.clear()
        return out

    # ---------------------------------------------------------------------------- output

    def _active(self, rid: int) -> _Request:
        req = self._requests.get(rid)
        if req is None:
            raise LocalProtocolError(f"request {rid} is not active", request_id=rid)
        return req

    def send_stdout(self, request_id: int, data: bytes | memoryview) -> Buffers:
        """Frame response bytes as STDOUT records. Empty ``data`` frames nothing."""
        self._active(request_id)
        return encode_stream(STDOUT, request_id, data)

    def send_stderr(self, request_id: int, data: bytes | memoryview) -> Buffers:
        """Frame error-stream bytes as STDERR records. Empty ``data`` frames nothing."""
        self._active(request_id).stderr_used = True
        return encode_stream(STDERR, request_id, data)

    def end_request(
        self,
        request_id: int,
        stdout: bytes | memoryview = b"",
        *,
        app_status: int = 0,
        protocol_status: ProtocolStatus = ProtocolStatus.REQUEST_COMPLETE,
    ) -> Buffers:
        """Frame the last STDOUT bytes, close the streams and END_REQUEST, in one list.

        The common small response comes back as a single buffer, so it leaves in one write.
        The request id is free when this returns.
        """
        req = self._requests.pop(request_id, None)
        if req is None:
            raise LocalProtocolError(f"request {request_id} is not active", request_id=request_id)
        if not req.keep_conn:
            self.close_requested = True
        if req.params:  # ended before its params did (the I/O layer never does this)
            self.params_buffered -= len(req.params)
        n = stdout.nbytes if isinstance(stdout, memoryview) else len(stdout)
        if (
            app_status == 0
            and protocol_status is _REQUEST_COMPLETE
            and not req.stderr_used
            and request_id in _CLEAN_TAILS
        ):
            tail = _CLEAN_TAILS[request_id]
        else:
            tail = HEADER.pack(FCGI_VERSION_1, STDOUT, request_id, 0, 0)
            if req.stderr_used:
                tail += HEADER.pack(FCGI_VERSION_1, STDERR, request_id, 0, 0)
            tail += encode_end_request(request_id, app_status, protocol_status)
            if (
                app_status == 0
                and protocol_status is _REQUEST_COMPLETE
                and not req.stderr_used
                and len(_CLEAN_TAILS) < MAX_CACHED_TAILS
            ):
                _CLEAN_TAILS[request_id] = tail
        if 0 < n < JOIN_BELOW:
            pad = -n & 7
            head = HEADER.pack(FCGI_VERSION_1, STDOUT, request_id, n, pad)
            return [b"".join((head, stdout, PADDING[pad], tail))]
        out = encode_stream(STDOUT, request_id, stdout)
        out.append(tail)
        return out

    def break_connection(self) -> bytes:
        """Return bytes that make the peer fail every request on this connection, visibly.

        Used when a response fails after its headers left: closing alone looks like a normal
        end to nginx without ``fastcgi_keep_conn``, but an invalid record header is an upstream
        error to every web server. The caller must close the transport after writing them.
        """
        self._requests.clear()
        self.params_buffered = 0
        self._dead = True
        self.close_requested = True
        return _POISON
