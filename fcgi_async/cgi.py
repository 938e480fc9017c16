"""The CGI/1.1 view of a request, shared by both adapters (RFC 3875, DESIGN.md §4).

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
