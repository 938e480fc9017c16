"""The protocol layer's errors.

Contract (after h11): ``ServerConnection.next_event`` and ``ClientConnection.next_event`` raise
only :class:`RemoteProtocolError`, whatever bytes arrived. The ``send_*`` methods raise only
:class:`LocalProtocolError`, when the caller asks for something the protocol forbids. Both carry
the END_REQUEST protocol status that best describes the failure, for callers that answer with one.
"""

from __future__ import annotations

from .constants import ProtocolStatus


class ProtocolError(Exception):
    """Base class: the FastCGI protocol was broken.

    Attributes:
        protocol_status: the END_REQUEST protocol status this error maps to.
        request_id: the request the error concerns, or ``None`` for the whole connection.
    """

    def __init__(
        self,
        msg: str,
        *,
        protocol_status: ProtocolStatus = ProtocolStatus.REQUEST_COMPLETE,
        request_id: int | None = None,
    ) -> None:
        super().__init__(msg)
        self.protocol_status = protocol_status
        self.request_id = request_id


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol; the connection cannot be trusted further."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol does not allow (a bug in the caller)."""
