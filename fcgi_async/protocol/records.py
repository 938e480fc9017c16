"""Record framing and name-value pairs (spec §3.3, §3.4).

Theory of operation: a record is an 8-byte header, ``contentLength`` bytes of content and
``paddingLength`` bytes of padding. Output is padded to a multiple of 8 (the spec's
recommendation, and what nginx and php-fpm do) and split at 65535 bytes per record; large
payloads are sliced with ``memoryview`` rather than copied. Input lengths are never trusted:
every decode checks bounds first and raises :class:`RemoteProtocolError` on a short or
oversized pair, never ``IndexError`` or ``struct.error``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from .constants import (
    BEGIN_REQUEST,
    END_REQUEST,
    FCGI_VERSION_1,
    MAX_CONTENT_LENGTH,
    PARAMS,
    STDIN,
    UNKNOWN_TYPE,
)
from .errors import LocalProtocolError, RemoteProtocolError
from .speedups import load_speedups, speedups_wanted

#: The C accelerator of this module (built by pip when a compiler is present).
SPEEDUPS_MODULE = "fcgi_async.protocol._speedups"

#: version, type, requestId, contentLength, paddingLength, reserved (spec §3.3).
HEADER: Final = struct.Struct(">BBHHBx")
#: role, flags, 5 reserved bytes (spec §5.1).
BEGIN_BODY: Final = struct.Struct(">HB5x")
#: appStatus, protocolStatus, 3 reserved bytes (spec §5.5).
END_BODY: Final = struct.Struct(">IB3x")
_LEN4: Final = struct.Struct(">I")
#: A whole BEGIN_REQUEST record: its header, then role and flags.
_BEGIN_RECORD: Final = struct.Struct(">BBHHBxHB5x")

#: Payloads up to this size are copied into one ``bytes`` with their header (one buffer per
#: record beats a list for small writes); larger ones are passed on as memoryview slices.
JOIN_BELOW: Final = 16 * 1024

#: Zero bytes that pad a record of content length n to a multiple of 8: ``PADDING[-n & 7]``.
PADDING: Final = tuple(b"\x00" * n for n in range(8))

Buffers = list[bytes | memoryview]
"""What the encoders return: buffers for ``transport.writelines``, in order."""


def pack_header(rtype: int, request_id: int, content_length: int, padding_length: int = 0) -> bytes:
    """Return one record header. Raises LocalProtocolError for out-of-range fields."""
    if not 0 <= content_length <= MAX_CONTENT_LENGTH:
        raise LocalProtocolError(f"content length {content_length} out of range")
    if not 0 <= request_id <= 0xFFFF:
        raise LocalProtocolError(f"request id {request_id} out of range")
    return HEADER.pack(FCGI_VERSION_1, rtype, request_id, content_length, padding_length)


def encode_record(rtype: int, request_id: int, content: bytes = b"") -> bytes:
    """Return one whole padded record holding ``content`` (at most 65535 bytes)."""
    n = len(content)
    pad = -n & 7
    return pack_header(rtype, request_id, n, pad) + content + PADDING[pad]


def encode_stream(rtype: int, request_id: int, data: bytes | memoryview) -> Buffers:
    """Frame ``data`` as records of one stream type, split at 65535 bytes, padded to 8.

    An empty ``data`` yields no records: the stream's closing empty record is written
    explicitly with :func:`encode_record`, because an empty record *ends* a stream (spec §3.3).
    A memoryview of any item size is framed by its bytes (``nbytes``), not its items.
    """
    n = data.nbytes if isinstance(data, memoryview) else len(data)
    if n == 0:
        return []
    if n < JOIN_BELOW:
        pad = -n & 7
        return [HEADER.pack(FCGI_VERSION_1, rtype, request_id, n, pad) + bytes(data) + PADDING[pad]]
    view = memoryview(data).cast("B")  # slice by bytes, whatever the exporter's format
    out: Buffers = []
    # 65528 = largest multiple of 8 under 65535: full records then need no padding.
    step = MAX_CONTENT_LENGTH & ~7
    for start in range(0, n, step):
        chunk = view[start : start + step]
        size = len(chunk)
        pad = -size & 7
        out.append(HEADER.pack(FCGI_VERSION_1, rtype, request_id, size, pad))
        out.append(chunk)
        if pad:
            out.append(PADDING[pad])
    return out


def encode_begin_request(request_id: int, role: int, keep_conn: bool) -> bytes:
    """Return a BEGIN_REQUEST record (spec §5.1)."""
    return encode_record(BEGIN_REQUEST, request_id, BEGIN_BODY.pack(role, 1 if keep_conn else 0))


def encode_end_request(request_id: int, app_status: int, protocol_status: int) -> bytes:
    """Return an END_REQUEST record (spec §5.5). app_status is masked to 32 bits."""
    return encode_record(
        END_REQUEST, request_id, END_BODY.pack(app_status & 0xFFFFFFFF, protocol_status)
    )


def encode_unknown_type(rtype: int) -> bytes:
    """Return an UNKNOWN_TYPE management record naming ``rtype`` (spec §4.2)."""
    return encode_record(UNKNOWN_TYPE, 0, bytes((rtype & 0xFF, 0, 0, 0, 0, 0, 0, 0)))


def _encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n > 0x7FFFFFFF:
        raise LocalProtocolError(f"name or value of {n} bytes is too long for FastCGI")
    return _LEN4.pack(n | 0x80000000)


def encode_pairs(pairs: Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]]) -> bytes:
    """Encode name-value pairs (spec §3.4): 1-byte lengths below 128, else 4 bytes."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    parts: list[bytes] = []
    for name, value in items:
        parts.append(_encode_length(len(name)))
        parts.append(_encode_length(len(value)))
        parts.append(name)
        parts.append(value)
    return b"".join(parts)


def _decode_pairs_py(data: bytes | bytearray, max_pairs: int) -> list[tuple[bytes, bytes]]:
    """Decode a complete name-value stream into ``(name, value)`` pairs, in order.

    This runs once per request over ~20-40 pairs, so it is written for speed: lengths are
    read byte by byte (no struct call for the common 1-byte form) and ``bytes`` input is
    sliced directly.

    Raises:
        RemoteProtocolError: a length runs past the end of ``data``, or more than
            ``max_pairs`` pairs are present.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    out: list[tuple[bytes, bytes]] = []
    append = out.append
    pos = 0
    end = len(data)
    while pos < end:
        if len(out) >= max_pairs:
            raise RemoteProtocolError(f"more than {max_pairs} name-value pairs")
        nlen = data[pos]
        if nlen < 0x80:
            pos += 1
        elif pos + 4 <= end:
            nlen = _LEN4.unpack_from(data, pos)[0] & 0x7FFFFFFF
            pos += 4
        else:
            raise RemoteProtocolError("name-value pair truncated in a 4-byte length")
        if pos >= end:
            raise RemoteProtocolError("name-value pair truncated in its lengths")
        vlen = data[pos]
        if vlen < 0x80:
            pos += 1
        elif pos + 4 <= end:
            vlen = _LEN4.unpack_from(data, pos)[0] & 0x7FFFFFFF
            pos += 4
        else:
            raise RemoteProtocolError("name-value pair truncated in a 4-byte length")
        nend = pos + nlen
        vend = nend + vlen
        if vend > end:
            raise RemoteProtocolError("name-value pair longer than the stream that holds it")
        append((data[pos:nend], data[nend:vend]))
        pos = vend
    return out


DecodePairs = Callable[[bytes | bytearray, int], list[tuple[bytes, bytes]]]


def select_decode_pairs(use_speedups: bool) -> DecodePairs:
    """Return the C pair decoder when asked for and built, else the pure-Python reference.

    The accelerator (``_speedups``, built by pip when a compiler is present) must behave
    exactly like :func:`_decode_pairs_py`, error messages included.
    """
    speedups = load_speedups(SPEEDUPS_MODULE, use_speedups)
    if speedups is None:
        return _decode_pairs_py
    c_decode: Callable[[bytes | bytearray, int, type[Exception]], list[tuple[bytes, bytes]]] = (
        speedups.decode_pairs
    )

    def decode_pairs_c(data: bytes | bytearray, max_pairs: int) -> list[tuple[bytes, bytes]]:
        return c_decode(data, max_pairs, RemoteProtocolError)

    decode_pairs_c.__doc__ = _decode_pairs_py.__doc__
    return decode_pairs_c


#: ``FCGI_ASYNC_NO_SPEEDUPS=1`` forces the pure-Python decoder (to test or debug it).
decode_pairs: DecodePairs = select_decode_pairs(speedups_wanted())


RequestHead = tuple[int, int, int, dict[bytes, bytes], int, bool]
"""``(request_id, role, flags, params, consumed, stdin_ended)``: see :func:`parse_request_head`."""


def _parse_request_head_py(
    buf: bytes | bytearray, max_params_bytes: int, max_pairs: int
) -> RequestHead | None:
    """Parse the head of a request at the start of ``buf`` in one go, or return ``None``.

    The head is a BEGIN_REQUEST record (version 1, content length 8, a request id other
    than 0), then PARAMS records of the same id, whose contents total at most
    ``max_params_bytes`` and hold at most ``max_pairs`` valid pairs, closed by an empty
    PARAMS record; all of it complete in ``buf``. An empty STDIN record of that id right
    after it (a request without a body) is taken too, and reported as ``stdin_ended``.
    ``consumed`` counts the bytes of every record taken, padding included.

    This is the fast path for what a web server sends for nearly every request. It never
    raises for bad input: anything else (a split record, another record type in between,
    an error) gives ``None``, and the record-by-record path reads the same bytes, with the
    same result, errors included. Checks that need connection state (the role served, an
    active id, capacity) are the caller's.
    """
    end = len(buf)
    if end < 24:
        return None
    version, rtype, request_id, clen, plen, role, flags = _BEGIN_RECORD.unpack_from(buf)
    if version != FCGI_VERSION_1 or rtype != BEGIN_REQUEST or clen != 8 or request_id == 0:
        return None
    pos = 16 + plen
    chunks: list[bytes | bytearray] = []
    size = 0
    while True:
        if pos + 8 > end:
            return None
        version, rtype, rid, clen, plen = HEADER.unpack_from(buf, pos)
        if version != FCGI_VERSION_1 or rtype != PARAMS or rid != request_id:
            return None
        start = pos + 8
        pos = start + clen + plen
        if pos > end:
            return None
        if clen == 0:
            break
        size += clen
        if size > max_params_bytes:
            return None
        chunks.append(buf[start : start + clen])
    try:
        params = dict(_decode_pairs_py(b"".join(chunks), max_pairs))
    except RemoteProtocolError:
        return None
    stdin_ended = False
    if pos + 8 <= end:
        version, rtype, rid, clen, plen = HEADER.unpack_from(buf, pos)
        if (
            version == FCGI_VERSION_1
            and rtype == STDIN
            and rid == request_id
            and clen == 0
            and pos + 8 + plen <= end
        ):
            pos += 8 + plen
            stdin_ended = True
    return request_id, role, flags, params, pos, stdin_ended


ParseRequestHead = Callable[[bytes | bytearray, int, int], RequestHead | None]


def select_parse_request_head(use_speedups: bool) -> ParseRequestHead:
    """Return the C request-head parser when asked for and built, else the Python reference.

    The accelerator must behave exactly like :func:`_parse_request_head_py`.
    """
    speedups = load_speedups(SPEEDUPS_MODULE, use_speedups)
    if speedups is None:
        return _parse_request_head_py
    parse: ParseRequestHead = speedups.parse_request_head
    return parse


#: The request-head fast path the server side uses; ``FCGI_ASYNC_NO_SPEEDUPS=1`` forces the
#: pure-Python reference.
parse_request_head: ParseRequestHead = select_parse_request_head(speedups_wanted())
