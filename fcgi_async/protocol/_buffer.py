"""Incremental record reader shared by both sides of a connection (spec §3.3)."""

from __future__ import annotations

from .constants import FCGI_VERSION_1, HEADER_LEN
from .errors import RemoteProtocolError
from .records import HEADER


class RecordBuffer:
    """Accumulates bytes and cuts them into whole records, whatever the split of the input.

    ``bytearray`` deletes from its front in amortized O(1), so consumed records are dropped
    with ``del`` instead of tracking an offset.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def data(self) -> bytearray:
        """The buffered bytes themselves, for a caller that parses several records at once.

        The object stays the same for the buffer's life; a caller that takes whole records
        from its front deletes them (``del data[:n]``), as :meth:`next_record` does.
        """
        return self._buf

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        self._buf += data

    @property
    def pending(self) -> int:
        """Bytes received but not yet consumed as a whole record."""
        return len(self._buf)

    def next_record(self) -> tuple[int, int, bytes] | None:
        """Return ``(type, request_id, content)`` of the next whole record, or ``None``.

        Raises:
            RemoteProtocolError: the header's version byte is not 1.
        """
        buf = self._buf
        avail = len(buf)
        if avail < HEADER_LEN:
            return None
        version, rtype, request_id, clen, plen = HEADER.unpack_from(buf)
        if version != FCGI_VERSION_1:
            raise RemoteProtocolError(f"unsupported FastCGI version {version} in record header")
        total = HEADER_LEN + clen + plen
        if avail < total:
            return None
        content = bytes(buf[HEADER_LEN : HEADER_LEN + clen])
        if avail == total:
            buf.clear()
        else:
            del buf[:total]
        return rtype, request_id, content
