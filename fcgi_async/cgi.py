"""The CGI/1.1 view of a request, shared by both adapters (RFC 3875; docs/architecture.md).

Web servers disagree on how a URL maps onto SCRIPT_NAME and PATH_INFO:

* nginx with the stock ``fastcgi_params`` sends ``SCRIPT_NAME=$fastcgi_script_name`` (the whole
  path) and no PATH_INFO. With ``fastcgi_split_path_info`` it sends the mount as SCRIPT_NAME and
  the rest as PATH_INFO.
* Apache mod_proxy_fcgi sends no PATH_INFO; lighttpd sends both.

Rule: when PATH_INFO is present and non-empty, SCRIPT_NAME/PATH_INFO are taken as sent (the web
server split them). Otherwise the whole decoded path (from REQUEST_URI, else DOCUMENT_URI, else
SCRIPT_NAME) is PATH_INFO, and SCRIPT_NAME is the configured ``root_path`` when the path lies
under it. ``root_path`` (``--root-path``), when set, always wins as SCRIPT_NAME. No arithmetic
on lengths the peer sent is ever done (CVE-2019-11043 was exactly that).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote_to_bytes

#: Params that must never reach an application: ``Proxy:`` request headers become HTTP_PROXY,
#: which many HTTP libraries read as their proxy setting (httpoxy, CVE-2016-5385).
STRIPPED_PARAMS = frozenset({b"HTTP_PROXY"})

#: A CGI length of more digits than this is taken as unknown: 19 digits always fit a 64-bit
#: field (the status scoreboard's), no real body comes near 10**19 bytes, and ``int()`` of a
#: long digit string costs quadratic time (Python refuses beyond 4300 digits).
MAX_LENGTH_DIGITS = 19

#: What a request gets when its application fails (or returns) before sending anything: the
#: server's answer and both adapters' (docs/architecture.md, Failure rules). nginx would turn
#: a missing header block into a 502 with no hint.
INTERNAL_ERROR_RESPONSE = (
    b"Status: 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 21\r\n\r\nInternal Server Error"
)

#: The adapters send a first body chunk shorter than this with the header block in one buffer
#: (one write); a longer one follows the header block instead of being copied behind it:
#: copying 1 MiB into a fresh buffer costs more than a second write.
COPY_HEAD_BELOW = 64 * 1024


PathInfo = tuple[bytes, bytes, bytes | None, bytes]
"""``(script_name, path_info, raw_path, query_string)`` of a request, from :func:`split_path`.

``script_name`` (the application's mount) and ``path_info`` (its own part) are the *decoded*
path as bytes (``%2F`` decodes to ``/``), as CGI defines them. ``raw_path`` is the path part of
REQUEST_URI still %-encoded, or ``None`` when not sent. A plain tuple: it is built for every
request, and a named tuple costs ten times more.
"""


def split_path(params: Mapping[bytes, bytes], root_path: bytes | None = None) -> PathInfo:
    """Compute SCRIPT_NAME, PATH_INFO, the raw path and the query string of a request.

    Args:
        params: the request's params (a mapping of bytes to bytes).
        root_path: the mount point configured with ``--root-path``, or ``None`` to trust the
            web server's split when it made one.
    """
    get = params.get
    request_uri = get(b"REQUEST_URI")
    query = get(b"QUERY_STRING") or b""
    raw_path: bytes | None = None
    if request_uri:
        raw_path, sep, q = request_uri.partition(b"?")
        if not query and sep:
            query = q
    sent_script = get(b"SCRIPT_NAME") or b""
    sent_info = get(b"PATH_INFO") or b""
    if sent_info and root_path is None:
        return sent_script.rstrip(b"/"), sent_info, raw_path, query
    if raw_path is not None:
        full = unquote_to_bytes(raw_path) if b"%" in raw_path else raw_path
    else:
        full = get(b"DOCUMENT_URI") or (sent_script + sent_info) or b"/"
    if not root_path:
        return b"", full, raw_path, query
    root = root_path.rstrip(b"/")
    if root and (full == root or full.startswith(root + b"/")):
        return root, full[len(root) :], raw_path, query
    return b"", full, raw_path, query


def request_path(params: Mapping[bytes, bytes]) -> bytes:
    """The path of a request: DOCUMENT_URI, else SCRIPT_NAME + PATH_INFO, else REQUEST_URI's.

    Used where a request is named without the adapters' full CGI split (the status page, the
    access log's ``%U``); the path is as the web server sent it (not %-decoded).
    """
    get = params.get
    path = get(b"DOCUMENT_URI")
    if path:
        return path
    joined = (get(b"SCRIPT_NAME") or b"") + (get(b"PATH_INFO") or b"")
    if joined:
        return joined
    uri = get(b"REQUEST_URI") or b""
    return uri.partition(b"?")[0]


def is_https(params: Mapping[bytes, bytes]) -> bool:
    """True when the web server says the client used TLS (HTTPS=on or REQUEST_SCHEME=https)."""
    get = params.get
    https = (get(b"HTTPS") or b"").lower()
    if https in (b"on", b"1", b"yes"):
        return True
    return bool((get(b"REQUEST_SCHEME") or b"").lower() == b"https")


def has_forbidden_chars(value: bytes | str) -> bool:
    """True when a header name, value or status holds CR, LF or NUL (response splitting)."""
    if isinstance(value, str):
        return "\r" in value or "\n" in value or "\0" in value
    return b"\r" in value or b"\n" in value or b"\0" in value


def parse_length(value: bytes | str | None) -> int | None:
    """A CGI length (CONTENT_LENGTH, FCGI_DATA_LENGTH): its value, or ``None`` when unknown.

    The one parser every adapter and the status page use, so they never disagree on how long
    a body is. Only ASCII digits are a length (``int()`` would also take ``" 5"``, ``"+5"`` and
    ``"1_0"``, and ``isdigit()`` takes ``"²"``). Absent, empty, ``-1`` (what Caddy sends for a
    chunked upload) and any other value that is not digits mean "unknown": the body is read to
    the end of its stream, which the web server delimits. No value is ever negative, and none
    has more than :data:`MAX_LENGTH_DIGITS` digits (a longer one is unknown too).
    """
    if not value or len(value) > MAX_LENGTH_DIGITS:
        return None
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()):
            return None
    elif not value.isdigit():  # bytes.isdigit() is ASCII-only
        return None
    return int(value)


def _escape_char(c: str) -> str:
    o = ord(c)
    if 0xDC80 <= o <= 0xDCFF:  # an invalid UTF-8 byte, kept by surrogateescape
        return f"\\x{o - 0xDC00:02x}"
    if o < 0x100:
        return f"\\x{o:02x}"
    return f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def printable(value: bytes | str) -> str:
    """Request data (a param, a path, a method) made safe to quote in a log line.

    The one escaping rule of every log line that quotes request data, so a request can never
    forge a line: bytes are decoded as UTF-8, and every character that is not printable
    (control characters such as CR and LF, DEL, U+2028, the bytes that are not UTF-8) becomes
    ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``. ``\\`` and ``"`` are escaped with a backslash, so
    the result is unambiguous and can stand inside double quotes. Printable text (the usual
    case) is returned as is, at the cost of two scans.
    """
    text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
    if text.isprintable() and "\\" not in text and '"' not in text:
        return text
    return "".join(
        c
        if c.isprintable() and c != "\\" and c != '"'
        else ("\\" + c if c == "\\" or c == '"' else _escape_char(c))
        for c in text
    )


def describe_request(params: Mapping[bytes, bytes]) -> str:
    """``METHOD URI`` of a request for a log line, both passed through :func:`printable`.

    The URI is REQUEST_URI (as the client sent it), else SCRIPT_NAME; ``-`` for a missing one.
    """
    get = params.get
    method = get(b"REQUEST_METHOD") or b"-"
    uri = get(b"REQUEST_URI") or get(b"SCRIPT_NAME") or b"-"
    return f"{printable(method)} {printable(uri)}"
