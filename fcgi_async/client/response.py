"""The CGI response a FastCGI responder writes on STDOUT (RFC 3875 §6), parsed.

A responder writes a header block (``Status:``, ``Location:``, other headers), a blank line,
then the body. As nginx does: the status comes from ``Status:``; ``Location`` without
``Status`` means 302; otherwise 200. ``Status`` itself is not kept among the headers; every
other header is kept in order, repeats included (several ``Set-Cookie``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Final

from .errors import ProtocolError, ResponseTooLarge

if TYPE_CHECKING:
    from .connection import Exchange
    from .timeouts import Budget

#: Bytes a CGI header block may take (the client's ``max_header_bytes`` default); a larger one,
#: or one that never ends with a blank line, raises :class:`ResponseTooLarge`. nginx reads the
#: header into ``fastcgi_buffer_size`` (4-8 KiB by default); 64 KiB forgives large cookies.
MAX_HEADER_BLOCK_BYTES: Final = 64 * 1024
#: Body bytes :meth:`StreamingResponse.aread` and ``FastCGIClient.request`` buffer for one
#: response (the client's ``max_response_bytes`` default), and STDERR bytes one response may
#: send. Far above any page or API answer worth holding in memory whole, yet a hostile or
#: broken server streaming forever costs at most this much (twice, briefly, while the chunks
#: are joined) per request instead of all the machine's memory. Larger downloads stream with
#: ``aiter_bytes()``, which is not capped.
DEFAULT_MAX_RESPONSE_BYTES: Final = 64 * 1024 * 1024

_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_END: Final = re.compile(rb"\r?\n\r?\n")

Headers = list[tuple[str, str]]
"""Response headers in order as ``(name, value)``, latin-1 decoded, names as sent."""


def find_header_end(buffer: bytes | bytearray, start: int = 0) -> tuple[int, int] | None:
    """Return ``(end of headers, start of body)`` in ``buffer``, or ``None`` if incomplete.

    A body-less header block may also start with a blank line (no headers at all). ``start``
    skips bytes already searched (pass at most 3 before the new bytes, so a blank line split
    across two reads is still found).
    """
    if buffer.startswith(b"\r\n"):
        return 0, 2
    if buffer.startswith(b"\n"):
        return 0, 1
    m = _HEADER_END.search(buffer, start)
    return None if m is None else (m.start(), m.end())


def parse_head(block: bytes) -> tuple[int, str, Headers]:
    """Parse a CGI header block (without its closing blank line).

    Returns:
        ``(status_code, reason, headers)``.

    Raises:
        ProtocolError: a line is not ``Name: value``, or ``Status`` is not ``NNN [reason]``.
    """
    status: int | None = None
    reason = ""
    location = False
    headers: Headers = []
    for raw in block.split(b"\n"):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise ProtocolError(f"malformed CGI header line {bytes(line[:80])!r}")
        value = value.strip(b" \t")
        lname = name.lower()
        if lname == b"status":
            code, _, text = value.partition(b" ")
            if len(code) != 3 or not code.isdigit() or int(code) < 100:
                raise ProtocolError(f"malformed CGI Status header {bytes(value[:80])!r}")
            status = int(code)
            reason = text.strip().decode("latin-1")
            continue
        if lname == b"location":
            location = True
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    if status is None:
        status = 302 if location else 200
    if not reason:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
    return status, reason, headers


class _HeaderAccess:
    """Case-insensitive header look-ups shared by both response types."""

    headers: Headers

    def get_header(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of header ``name`` (case-insensitive), or ``default``."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return default

    def get_headers(self, name: str) -> list[str]:
        """Return every value of header ``name`` (case-insensitive), in order."""
        lname = name.lower()
        return [value for key, value in self.headers if key.lower() == lname]


@dataclass(slots=True)
class Response(_HeaderAccess):
    """A complete response, body read.

    Attributes:
        status_code: the HTTP status (from ``Status:``, 302 for a bare ``Location``, else 200).
        reason: the reason phrase sent with ``Status:``, or the standard one.
        headers: the other headers in order, repeats kept.
        body: the response body.
        stderr: what the application wrote on STDERR (bounded, see ``max_stderr_bytes``).
        app_status: the END_REQUEST application status (the CGI "exit code").
    """

    status_code: int
    reason: str
    headers: Headers
    body: bytes
    stderr: bytes = b""
    app_status: int = 0

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.body.decode("utf-8", "replace")


@dataclass(slots=True, eq=False)
class StreamingResponse(_HeaderAccess):
    """A response whose head arrived and whose body is read on demand.

    Close it (``async with``, :meth:`aclose`, or reading to the end): closing early aborts the
    request (ABORT_REQUEST on a multiplexed connection, otherwise the connection is closed).
    Unread body bytes are buffered up to 1 MiB; past that the connection stops reading, which
    holds back the server and, on a multiplexed connection, the other requests sharing it.

    :meth:`aiter_bytes` is not size-capped (the caller consumes the body as it goes, so memory
    stays bounded); :meth:`aread` buffers at most ``max_response_bytes`` (the request's limit).

    Attributes:
        status_code: the HTTP status.
        reason: the reason phrase.
        headers: the headers in order, repeats kept.
    """

    status_code: int
    reason: str
    headers: Headers
    _exchange: Exchange = field(repr=False)
    _first: bytes = field(repr=False, default=b"")
    _budget: Budget | None = field(repr=False, default=None)
    _consumed: bool = field(repr=False, default=False)
    _max_bytes: int | None = field(repr=False, default=None)

    @property
    def stderr(self) -> bytes:
        """STDERR received so far; complete once the body has been read."""
        return bytes(self._exchange.stderr)

    @property
    def app_status(self) -> int | None:
        """The END_REQUEST application status, ``None`` until the body has been read."""
        return self._exchange.app_status

    @property
    def is_closed(self) -> bool:
        """True once the body was read to its end or the response was closed."""
        return self._consumed

    async def aiter_bytes(self) -> AsyncGenerator[bytes, None]:
        """Yield the body in the chunks it arrived in.

        Raises:
            FastCGIError: the exchange failed (the response is then closed).
            RuntimeError: the body was already consumed.
        """
        if self._consumed:
            raise RuntimeError("the response body was already read or closed")
        try:
            if self._first:
                first, self._first = self._first, b""
                yield first
            while True:
                chunk = await self._exchange.receive(self._budget)
                if not chunk:
                    break
                yield chunk
        finally:
            self._consumed = True
            self._exchange.close()

    async def aread(self) -> bytes:
        """Read and return the whole remaining body, at most ``max_response_bytes`` of it.

        Never buffers more than the limit: the chunk that would pass it is dropped.

        Raises:
            ResponseTooLarge: the body passed the limit (``part == "body"``); the response is
                closed and the request aborted.
            FastCGIError: the exchange failed (the response is then closed).
            RuntimeError: the body was already consumed.
        """
        limit = self._max_bytes
        chunks: list[bytes] = []
        size = 0
        # aclosing: leaving early closes the response (aborting the request) now, not whenever
        # the generator is collected.
        async with contextlib.aclosing(self.aiter_bytes()) as body:
            async for chunk in body:
                size += len(chunk)
                if limit is not None and size > limit:
                    raise ResponseTooLarge(
                        f"{self._exchange.conn.address}: response body exceeds"
                        f" max_response_bytes ({limit} bytes)",
                        "body",
                        limit,
                    )
                chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        """Close the response; if its body is unread, the request is aborted."""
        self._consumed = True
        self._exchange.close()

    async def __aenter__(self) -> StreamingResponse:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
