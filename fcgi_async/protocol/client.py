"""The web-server (client) side of one FastCGI connection, sans-IO (spec §3-§6).

Theory of operation: the caller chooses request ids (:meth:`ClientConnection.free_request_id`
gives the lowest free one), frames a request with :meth:`begin_request`, :meth:`send_params`,
:meth:`send_stdin` and friends, writes the returned bytes, feeds what the application answers
into :meth:`receive_data`, and reads :class:`StdoutReceived`, :class:`StderrReceived` and
:class:`RequestEnded` from :meth:`next_event`. A request id is free again once its
END_REQUEST arrived (spec §5.5).

Contract: ``next_event`` raises only :class:`RemoteProtocolError`; the ``send`` methods raise
only :class:`LocalProtocolError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ._buffer import RecordBuffer
from .constants import (
    ABORT_REQUEST,
    BEGIN_REQUEST,
    DATA,
    END_REQUEST,
    GET_VALUES,
    GET_VALUES_RESULT,
    MAX_CONTENT_LENGTH,
    MAX_REQUEST_ID,
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
    ClientEvent,
    GetValuesResult,
    RequestEnded,
    StderrReceived,
    StdoutReceived,
    UnknownTypeReceived,
    _NeedData,
)
from .limits import DEFAULT_MAX_PARAMS_PAIRS
from .records import (
    END_BODY,
    Buffers,
    decode_pairs,
    encode_begin_request,
    encode_pairs,
    encode_record,
    encode_stream,
)

#: Record types only a web server sends; receiving one from an application is a broken peer.
_WRONG_DIRECTION = frozenset({BEGIN_REQUEST, ABORT_REQUEST, PARAMS, STDIN, DATA, GET_VALUES})


class ClientConnection:
    """Protocol state of one connection, as seen by the web server (or our client)."""

    __slots__ = ("_buffer", "_dead", "_requests")

    def __init__(self) -> None:
        self._buffer = RecordBuffer()
        self._requests: set[int] = set()
        self._dead = False

    def __repr__(self) -> str:
        return f"<ClientConnection active={sorted(self._requests)} pending={self._buffer.pending}>"

    @property
    def active_requests(self) -> int:
        """Requests begun whose END_REQUEST has not arrived."""
        return len(self._requests)

    def is_active(self, request_id: int) -> bool:
        """True while ``request_id`` waits for its END_REQUEST."""
        return request_id in self._requests

    def free_request_id(self) -> int:
        """Return the lowest request id not in use (1-based, as web servers do)."""
        rid = 1
        while rid in self._requests:
            rid += 1
        if rid > MAX_REQUEST_ID:
            raise LocalProtocolError("all 65535 request ids are in use")
        return rid

    # ---------------------------------------------------------------------------- output

    def begin_request(
        self, request_id: int, *, role: Role = Role.RESPONDER, keep_conn: bool = True
    ) -> bytes:
        """Frame BEGIN_REQUEST and mark ``request_id`` active (spec §5.1)."""
        if not 1 <= request_id <= MAX_REQUEST_ID:
            raise LocalProtocolError(f"request id {request_id} out of range")
        if request_id in self._requests:
            raise LocalProtocolError(f"request {request_id} is already active")
        self._requests.add(request_id)
        return encode_begin_request(request_id, int(role), keep_conn)

    def _check(self, request_id: int) -> None:
        if request_id not in self._requests:
            raise LocalProtocolError(f"request {request_id} is not active", request_id=request_id)

    def send_params(
        self, request_id: int, params: Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]]
    ) -> Buffers:
        """Frame the whole PARAMS stream, closing empty record included."""
        self._check(request_id)
        out = encode_stream(PARAMS, request_id, encode_pairs(params))
        out.append(encode_record(PARAMS, request_id))
        return out

    def send_stdin(self, request_id: int, data: bytes | memoryview) -> Buffers:
        """Frame body bytes as STDIN records; empty data frames nothing (see end_stdin)."""
        self._check(request_id)
        return encode_stream(STDIN, request_id, data)

    def end_stdin(self, request_id: int) -> bytes:
        """Frame the empty STDIN record that ends the body."""
        self._check(request_id)
        return encode_record(STDIN, request_id)

    def send_data(self, request_id: int, data: bytes | memoryview) -> Buffers:
        """Frame FILTER-role DATA records."""
        self._check(request_id)
        return encode_stream(DATA, request_id, data)

    def end_data(self, request_id: int) -> bytes:
        """Frame the empty DATA record that ends the FILTER role's file."""
        self._check(request_id)
        return encode_record(DATA, request_id)

    def abort_request(self, request_id: int) -> bytes:
        """Frame ABORT_REQUEST; the request stays active until END_REQUEST arrives."""
        self._check(request_id)
        return encode_record(ABORT_REQUEST, request_id)

    def forget_request(self, request_id: int) -> None:
        """Drop ``request_id`` without waiting for END_REQUEST (its connection is closing)."""
        self._requests.discard(request_id)

    @staticmethod
    def get_values(names: Iterable[bytes]) -> bytes:
        """Frame a GET_VALUES management record asking for ``names`` (spec §4.1)."""
        content = encode_pairs((name, b"") for name in names)
        if len(content) > MAX_CONTENT_LENGTH:
            raise LocalProtocolError("GET_VALUES names do not fit in one record")
        return encode_record(GET_VALUES, NULL_REQUEST_ID, content)

    # ----------------------------------------------------------------------------- input

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes received from the application."""
        self._buffer.feed(data)

    @property
    def has_partial_record(self) -> bool:
        """True when received bytes wait for the rest of their record."""
        return self._buffer.pending > 0

    def next_event(self) -> ClientEvent | _NeedData:
        """Return the next event, or :data:`NEED_DATA`.

        Raises:
            RemoteProtocolError: the application broke the protocol. The connection is dead.
        """
        if self._dead:
            raise RemoteProtocolError("connection already failed")
        try:
            while True:
                record = self._buffer.next_record()
                if record is None:
                    return NEED_DATA
                event = self._handle_record(*record)
                if event is not None:
                    return event
        except RemoteProtocolError:
            self._dead = True
            raise

    def _handle_record(self, rtype: int, rid: int, content: bytes) -> ClientEvent | None:
        if rid == NULL_REQUEST_ID:
            if rtype == GET_VALUES_RESULT:
                pairs = decode_pairs(content, DEFAULT_MAX_PARAMS_PAIRS)
                return GetValuesResult(0, dict(pairs))
            if rtype == UNKNOWN_TYPE:
                if len(content) != 8:
                    raise RemoteProtocolError(f"UNKNOWN_TYPE body of {len(content)} bytes")
                return UnknownTypeReceived(0, content[0])
            raise RemoteProtocolError(f"unexpected management record type {rtype}")
        if rtype in _WRONG_DIRECTION:
            raise RemoteProtocolError(f"record type {rtype} is not valid from an application")
        if rid not in self._requests:
            return None
        if rtype == STDOUT:
            return StdoutReceived(rid, content) if content else None
        if rtype == STDERR:
            return StderrReceived(rid, content) if content else None
        if rtype == END_REQUEST:
            if len(content) != END_BODY.size:
                raise RemoteProtocolError(f"END_REQUEST body of {len(content)} bytes, expected 8")
            app_status, proto = END_BODY.unpack(content)
            try:
                status = ProtocolStatus(proto)
            except ValueError:
                raise RemoteProtocolError(f"unknown protocol status {proto}") from None
            self._requests.discard(rid)
            return RequestEnded(rid, app_status, status)
        return None  # A record type newer than FastCGI 1.0: ignore it.
