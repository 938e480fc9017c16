"""Every bound the protocol layer enforces, each a named constant with its reason.

The server's :class:`fcgi_async.config.Config` carries a :class:`Limits`; each field is also a
command-line flag and an ``FCGI_ASYNC_*`` environment variable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: Total bytes of the PARAMS stream of one request. nginx refuses to send more than 64 KiB
#: (one record); Apache splits larger sets over 16 KiB records. 256 KiB leaves room for huge
#: cookies without letting one request pin megabytes of memory before the app even runs.
DEFAULT_MAX_PARAMS_BYTES: Final = 256 * 1024

#: Name-value pairs in one PARAMS stream. A real web server sends ~20 plus one per header;
#: browsers send fewer than 100 headers. Bounds per-request dict size.
DEFAULT_MAX_PARAMS_PAIRS: Final = 1000

#: Concurrent requests on one connection (advertised as part of FCGI_MAX_REQS). nginx, Apache
#: and lighttpd use one; this only matters for multiplexing clients such as ours.
DEFAULT_MAX_REQUESTS_PER_CONNECTION: Final = 100

#: Connections one process holds at once (advertised as FCGI_MAX_CONNS). Each idle keep-alive
#: connection costs a few KiB; 1024 also stays under the common `ulimit -n` of 1024 + listeners.
DEFAULT_MAX_CONNECTIONS: Final = 1000

#: Request body bytes buffered per connection before reading from it pauses; reading resumes
#: below half of it. Bounds memory when an app reads its upload slower than nginx sends it.
DEFAULT_MAX_BODY_BUFFER_BYTES: Final = 1024 * 1024

#: Bytes one connection may hold at once: the unfinished params of all its requests and its
#: half-read record, its buffered request bodies (each chunk charged with its bookkeeping, see
#: ``BODY_CHUNK_OVERHEAD_BYTES`` in :mod:`fcgi_async.server.connection`) and its unsent output.
#: Worst-case memory per process is ``max_connections`` times this: 1000 x 2 MiB = 2 GiB is a
#: ceiling only a hostile peer approaches (an idle keep-alive connection costs a few KiB). It
#: holds the default body buffer (1 MiB) plus four requests' worth of params at their maximum.
DEFAULT_MAX_CONNECTION_BUFFER_BYTES: Final = 2 * 1024 * 1024

#: Bytes of GET_VALUES content we are willing to parse (a handful of names is normal).
DEFAULT_MAX_MANAGEMENT_BYTES: Final = 4096

#: Seconds an idle keep-alive connection may wait for its next request. nginx's upstream
#: keepalive_timeout defaults to 60 s; we must outlive it so nginx closes first (no race where
#: nginx sends a request on a connection we are closing).
DEFAULT_KEEPALIVE_TIMEOUT_S: Final = 75.0

#: Seconds a connection's output may stay unsent (writing paused, or a close waiting to flush)
#: before the connection is aborted: a peer that stops reading must not hold its slot and its
#: buffers forever. A web server reads its upstream as fast as its client allows, and nginx's
#: own fastcgi_send_timeout/fastcgi_read_timeout default to 60 s; 30 s is long for one
#: high-water mark (64 KiB) to drain.
DEFAULT_SEND_TIMEOUT_S: Final = 30.0

#: Seconds a half-received record may stay incomplete before the connection is closed
#: (slowloris). Web servers send whole records in one write; 30 s forgives slow links.
DEFAULT_RECORD_TIMEOUT_S: Final = 30.0


#: Upper bounds of the fields above (absurd values are refused where they are set, never
#: passed on to the C parser, whose sizes are ``Py_ssize_t``). A PARAMS stream past 64 MiB is
#: no HTTP request any web server sends; request ids are 16-bit (id 0 is for management
#: records), so a connection cannot carry more than 65535 requests; GET_VALUES is one record.
CEILING_MAX_PARAMS_BYTES: Final = 64 * 1024 * 1024
CEILING_MAX_PARAMS_PAIRS: Final = 1_000_000
CEILING_MAX_REQUESTS_PER_CONNECTION: Final = 0xFFFF
CEILING_MAX_MANAGEMENT_BYTES: Final = 0xFFFF

_CEILINGS: Final = {
    "max_params_bytes": CEILING_MAX_PARAMS_BYTES,
    "max_params_pairs": CEILING_MAX_PARAMS_PAIRS,
    "max_requests_per_connection": CEILING_MAX_REQUESTS_PER_CONNECTION,
    "max_management_bytes": CEILING_MAX_MANAGEMENT_BYTES,
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds for one connection's protocol state. See the module constants for the reasons."""

    max_params_bytes: int = DEFAULT_MAX_PARAMS_BYTES
    max_params_pairs: int = DEFAULT_MAX_PARAMS_PAIRS
    max_requests_per_connection: int = DEFAULT_MAX_REQUESTS_PER_CONNECTION
    max_management_bytes: int = DEFAULT_MAX_MANAGEMENT_BYTES

    def __post_init__(self) -> None:
        for name, ceiling in _CEILINGS.items():
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= ceiling:
                raise ValueError(
                    f"{name} must be a whole number from 1 to {ceiling}, got {value!r}"
                )
