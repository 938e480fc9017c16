"""The client's exceptions: one shallow tree, mapped at the boundary (after httpcore).

Everything the client raises for a failed exchange is a :class:`FastCGIError`; ``OSError``,
``asyncio.TimeoutError`` and the protocol layer's errors never leak out of it. Exceptions raised
by the caller's own request-body iterable pass through unchanged.

::

    FastCGIError
    +-- ConnectError        could not open a connection (refused, no such socket, DNS)
    +-- ConnectionLost      the connection broke while a request was running on it
    +-- ProtocolError       the server broke FastCGI, or sent a malformed CGI response
    +-- RequestRejected     END_REQUEST refused the request (spec §5.5)
    |   +-- Overloaded      OVERLOADED
    |   +-- CantMultiplex   CANT_MPX_CONN (bytes bodies are retried once on another
    |                       connection first; streamed bodies cannot be sent twice)
    |   +-- UnknownRole     UNKNOWN_ROLE
    +-- Timeout             a connect, pool, read, write or total deadline passed
    +-- ResponseTooLarge    the response head, buffered body or STDERR passed its size limit
    +-- PoolClosed          the client was closed
"""

from __future__ import annotations

from ..protocol import ProtocolStatus


class FastCGIError(Exception):
    """Base class of every error the client raises."""


class ConnectError(FastCGIError):
    """A connection to the FastCGI server could not be opened."""


class ConnectionLost(FastCGIError):
    """The connection closed or failed while a request was running on it.

    The request may or may not have run on the server. The pool drops the connection; later
    requests use a fresh one. A request with a bytes body whose *reused* connection closed
    before any answer (a keep-alive connection the server had just given up) is retried once
    on a new connection instead.
    """


class ProtocolError(FastCGIError):
    """The server sent bytes that break FastCGI, or a response that is not valid CGI."""


class RequestRejected(FastCGIError):
    """The server answered BEGIN_REQUEST with an END_REQUEST refusing it.

    Attributes:
        protocol_status: the END_REQUEST protocol status (spec §5.5).
    """

    protocol_status: ProtocolStatus = ProtocolStatus.REQUEST_COMPLETE

    def __init__(self, msg: str) -> None:
        super().__init__(msg)


class Overloaded(RequestRejected):
    """OVERLOADED: the application is out of a resource (e.g. database connections)."""

    protocol_status = ProtocolStatus.OVERLOADED


class CantMultiplex(RequestRejected):
    """CANT_MPX_CONN: the connection already runs a request and cannot take another."""

    protocol_status = ProtocolStatus.CANT_MPX_CONN


class UnknownRole(RequestRejected):
    """UNKNOWN_ROLE: the application does not serve the requested role."""

    protocol_status = ProtocolStatus.UNKNOWN_ROLE


class Timeout(FastCGIError):
    """A deadline passed. The request was aborted (or its connection closed).

    Attributes:
        phase: which limit expired: ``"connect"``, ``"pool"``, ``"read"``, ``"write"`` or
            ``"total"``.
    """

    def __init__(self, msg: str, phase: str) -> None:
        super().__init__(msg)
        self.phase = phase


class ResponseTooLarge(FastCGIError):
    """The server sent more than the client accepts for one response; the request was aborted.

    Raised when the CGI header block passes ``max_header_bytes``, when a body read whole
    (:meth:`FastCGIClient.request`, :meth:`StreamingResponse.aread`) passes
    ``max_response_bytes``, or when STDERR passes ``max_response_bytes``. The request is then
    aborted (ABORT_REQUEST on a multiplexed connection, otherwise its connection is closed), so
    neither side keeps working on it.

    Attributes:
        part: what was too large: ``"head"``, ``"body"`` or ``"stderr"``.
        limit: the limit in bytes that was passed.
    """

    def __init__(self, msg: str, part: str, limit: int) -> None:
        super().__init__(msg)
        self.part = part
        self.limit = limit


class PoolClosed(FastCGIError):
    """The client was closed; no more requests can be sent through it."""


def rejection(status: ProtocolStatus, request_id: int) -> RequestRejected:
    """Return the exception for an END_REQUEST ``status`` other than REQUEST_COMPLETE."""
    if status == ProtocolStatus.OVERLOADED:
        return Overloaded(f"request {request_id} refused: the server is overloaded")
    if status == ProtocolStatus.CANT_MPX_CONN:
        return CantMultiplex(f"request {request_id} refused: the connection cannot multiplex")
    return UnknownRole(f"request {request_id} refused: the server does not serve this role")
