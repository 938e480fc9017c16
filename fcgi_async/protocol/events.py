"""Events the protocol layer hands to its user: slotted, each naming its request id.

They are read-only by convention, not frozen: a frozen dataclass costs four times more to
build (``object.__setattr__`` per field), and two are built for nearly every request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .constants import ProtocolStatus, Role


class _NeedData:
    """Sentinel type of :data:`NEED_DATA`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by ``next_event()`` when the buffered bytes hold no complete event.
NEED_DATA: Final = _NeedData()


@dataclass(slots=True)
class RequestReceived:
    """BEGIN_REQUEST and the whole PARAMS stream arrived: the request can be dispatched.

    ``params`` maps raw bytes names to raw bytes values; a repeated name keeps its last value.
    For the AUTHORIZER role the request has no body, and no ``StdinEnded`` follows.
    """

    request_id: int
    role: Role
    keep_conn: bool
    params: dict[bytes, bytes]


@dataclass(slots=True)
class StdinReceived:
    """A non-empty chunk of the request body (STDIN stream)."""

    request_id: int
    data: bytes


@dataclass(slots=True)
class StdinEnded:
    """The request body is complete (the empty STDIN record)."""

    request_id: int


@dataclass(slots=True)
class DataReceived:
    """A non-empty chunk of the FILTER role's DATA stream (the file to filter)."""

    request_id: int
    data: bytes


@dataclass(slots=True)
class DataEnded:
    """The FILTER role's DATA stream is complete."""

    request_id: int


@dataclass(slots=True)
class RequestAborted:
    """The web server sent ABORT_REQUEST. The request stays active until we end it.

    Sent at most once per request, and only after its :class:`RequestReceived`: an abort that
    arrives while the PARAMS stream is still incomplete is answered by the connection itself
    (END_REQUEST queued in ``data_to_send``), without an event.
    """

    request_id: int


@dataclass(slots=True)
class RequestRejected:
    """A BEGIN_REQUEST was answered at once with END_REQUEST; the answer is queued to send.

    Informational, for logs: ``protocol_status`` says why (UNKNOWN_ROLE, OVERLOADED,
    CANT_MPX_CONN).
    """

    request_id: int
    protocol_status: ProtocolStatus


@dataclass(slots=True)
class StdoutReceived:
    """Client side: a chunk of the response (STDOUT stream)."""

    request_id: int
    data: bytes


@dataclass(slots=True)
class StderrReceived:
    """Client side: a chunk of the application's STDERR stream."""

    request_id: int
    data: bytes


@dataclass(slots=True)
class RequestEnded:
    """Client side: END_REQUEST arrived; the request id is free again."""

    request_id: int
    app_status: int
    protocol_status: ProtocolStatus


@dataclass(slots=True)
class GetValuesResult:
    """Client side: the answer to GET_VALUES, names mapped to values (both bytes)."""

    request_id: int
    values: dict[bytes, bytes]


@dataclass(slots=True)
class UnknownTypeReceived:
    """Client side: the peer did not understand a management record of ``record_type``."""

    request_id: int
    record_type: int


ServerEvent = (
    RequestReceived
    | StdinReceived
    | StdinEnded
    | DataReceived
    | DataEnded
    | RequestAborted
    | RequestRejected
)
"""Events ``ServerConnection.next_event`` returns."""

ClientEvent = StdoutReceived | StderrReceived | RequestEnded | GetValuesResult | UnknownTypeReceived
"""Events ``ClientConnection.next_event`` returns."""
