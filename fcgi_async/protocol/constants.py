"""Wire constants of FastCGI 1.0 (spec §8).

Plain ``int`` module constants are what the parser compares against on the hot path; the
``IntEnum`` classes give the same values readable names in events, logs and reprs.
"""

from __future__ import annotations

import enum
from typing import Final

#: The only protocol version in existence (spec §3.3).
FCGI_VERSION_1: Final = 1
#: Every record starts with an 8-byte header (spec §3.3).
HEADER_LEN: Final = 8
#: contentLength is a 16-bit field, so one record carries at most this many bytes.
MAX_CONTENT_LENGTH: Final = 0xFFFF
#: Management records use request id 0 (spec §3.3).
NULL_REQUEST_ID: Final = 0
#: BEGIN_REQUEST flag: keep the connection open after the request (spec §5.1).
FCGI_KEEP_CONN: Final = 1
#: Largest request id the 16-bit field can carry.
MAX_REQUEST_ID: Final = 0xFFFF


class RecordType(enum.IntEnum):
    """Record types (spec §8)."""

    BEGIN_REQUEST = 1
    ABORT_REQUEST = 2
    END_REQUEST = 3
    PARAMS = 4
    STDIN = 5
    STDOUT = 6
    STDERR = 7
    DATA = 8
    GET_VALUES = 9
    GET_VALUES_RESULT = 10
    UNKNOWN_TYPE = 11


class Role(enum.IntEnum):
    """Application roles (spec §6)."""

    RESPONDER = 1
    AUTHORIZER = 2
    FILTER = 3


class ProtocolStatus(enum.IntEnum):
    """protocolStatus values of END_REQUEST (spec §5.5)."""

    REQUEST_COMPLETE = 0
    CANT_MPX_CONN = 1
    OVERLOADED = 2
    UNKNOWN_ROLE = 3


# Hot-path aliases: comparing against plain ints avoids enum attribute lookups per record.
BEGIN_REQUEST: Final = 1
ABORT_REQUEST: Final = 2
END_REQUEST: Final = 3
PARAMS: Final = 4
STDIN: Final = 5
STDOUT: Final = 6
STDERR: Final = 7
DATA: Final = 8
GET_VALUES: Final = 9
GET_VALUES_RESULT: Final = 10
UNKNOWN_TYPE: Final = 11

#: Names a peer may ask for in GET_VALUES (spec §4.1).
FCGI_MAX_CONNS: Final = b"FCGI_MAX_CONNS"
FCGI_MAX_REQS: Final = b"FCGI_MAX_REQS"
FCGI_MPXS_CONNS: Final = b"FCGI_MPXS_CONNS"
