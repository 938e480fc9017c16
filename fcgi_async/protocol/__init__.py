"""Sans-IO FastCGI 1.0: records, name-value pairs and both sides' connection state.

Imports no asyncio and no socket. Bytes in, events out; calls in, bytes out.
"""

from .client import ClientConnection
from .constants import (
    FCGI_KEEP_CONN,
    FCGI_MAX_CONNS,
    FCGI_MAX_REQS,
    FCGI_MPXS_CONNS,
    FCGI_VERSION_1,
    MAX_CONTENT_LENGTH,
    ProtocolStatus,
    RecordType,
    Role,
)
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .events import (
    NEED_DATA,
    ClientEvent,
    DataEnded,
    DataReceived,
    GetValuesResult,
    RequestAborted,
    RequestEnded,
    RequestReceived,
    RequestRejected,
    ServerEvent,
    StderrReceived,
    StdinEnded,
    StdinReceived,
    StdoutReceived,
    UnknownTypeReceived,
)
from .limits import Limits
from .records import decode_pairs, encode_pairs, encode_record
from .server import ServerConnection

__all__ = [
    "FCGI_KEEP_CONN",
    "FCGI_MAX_CONNS",
    "FCGI_MAX_REQS",
    "FCGI_MPXS_CONNS",
    "FCGI_VERSION_1",
    "MAX_CONTENT_LENGTH",
    "NEED_DATA",
    "ClientConnection",
    "ClientEvent",
    "DataEnded",
    "DataReceived",
    "GetValuesResult",
    "Limits",
    "LocalProtocolError",
    "ProtocolError",
    "ProtocolStatus",
    "RecordType",
    "RemoteProtocolError",
    "RequestAborted",
    "RequestEnded",
    "RequestReceived",
    "RequestRejected",
    "Role",
    "ServerConnection",
    "ServerEvent",
    "StderrReceived",
    "StdinEnded",
    "StdinReceived",
    "StdoutReceived",
    "UnknownTypeReceived",
    "decode_pairs",
    "encode_pairs",
    "encode_record",
]
