"""The CGI params a web server sends for an HTTP request (nginx's ``fastcgi_params`` set).

Path rules, as nginx configured for PHP does them:

* The request path is percent-decoded and normalized (``//`` merged, ``.`` and ``..`` resolved
  without climbing above ``/``); a decoded NUL is refused. DOCUMENT_URI is that path;
  REQUEST_URI is the target exactly as sent (still encoded, with its query).
* With ``script_filename`` (a front controller such as ``public/index.php``), every request runs
  that file: SCRIPT_FILENAME is it, SCRIPT_NAME is its path below ``document_root`` (or ``/`` +
  its name), DOCUMENT_ROOT is ``document_root`` (or its directory), and there is no PATH_INFO.
  Frameworks route on REQUEST_URI.
* Otherwise the path is split with ``split_path_info`` (nginx's ``fastcgi_split_path_info``,
  by default ``^(.+?\\.php)(/.*)$``): the first group is SCRIPT_NAME, the second PATH_INFO. No
  match: SCRIPT_NAME is the whole path. SCRIPT_FILENAME is ``document_root`` + SCRIPT_NAME
  (nginx's ``$document_root$fastcgi_script_name``), or SCRIPT_NAME alone without a root, which
  is what php-fpm's ping and status pages expect from ``cgi-fcgi`` health checks.

Headers become ``HTTP_*`` params (``-`` to ``_``, upper case), repeated ones joined with ``, ``
(``; `` for Cookie). As nginx does by default, headers whose names hold ``_`` are dropped (they
would collide with ``-`` spellings) and ``Proxy`` is never passed (httpoxy, CVE-2016-5385).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from typing import Final
from urllib.parse import unquote_to_bytes

from .. import __version__

#: nginx's documented ``fastcgi_split_path_info`` for PHP.
DEFAULT_SPLIT_PATH_INFO: Final = r"^(.+?\.php)(/.*)$"
#: SERVER_SOFTWARE we announce.
SERVER_SOFTWARE: Final = f"fcgi-async/{__version__}"

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def normalize_path(raw_path: bytes) -> bytes:
    """Percent-decode ``raw_path`` and resolve ``//``, ``.`` and ``..`` (never above ``/``).

    Raises:
        ValueError: the decoded path holds a NUL byte.
    """
    return normalize_decoded_path(unquote_to_bytes(raw_path or b"/"))


def normalize_decoded_path(decoded: bytes) -> bytes:
    """Resolve ``//``, ``.`` and ``..`` (never above ``/``) in an already decoded path.

    For paths a server decoded already (an ASGI ``path``, a WSGI ``PATH_INFO``).

    Raises:
        ValueError: the path holds a NUL byte.
    """
    if b"\0" in decoded:
        raise ValueError("request path holds a NUL byte")
    segments: list[bytes] = []
    parts = decoded.split(b"/")
    for part in parts:
        if part in (b"", b"."):
            continue
        if part == b"..":
            if segments:
                segments.pop()
            continue
        segments.append(part)
    path = b"/" + b"/".join(segments)
    if segments and parts[-1] in (b"", b".", b".."):
        path += b"/"
    return path


def _b(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def build_params(
    method: str,
    target: str | bytes,
    *,
    headers: Iterable[tuple[str | bytes, str | bytes]] = (),
    scheme: str = "http",
    server_name: str = "localhost",
    server_port: int | None = None,
    server_addr: str = "127.0.0.1",
    remote_addr: str = "127.0.0.1",
    remote_port: int = 0,
    script_filename: str | None = None,
    document_root: str | None = None,
    split_path_info: str | None = DEFAULT_SPLIT_PATH_INFO,
    server_protocol: str = "HTTP/1.1",
    redirect_status: bool = True,
    extra: Mapping[str, str | bytes | None] | None = None,
) -> dict[str, bytes]:
    """Return the params a web server would send for one HTTP request.

    Args:
        method: the HTTP method.
        target: the request target as sent: ``/path?query``, percent-encoded.
        headers: the request headers; ``Content-Type``/``Content-Length`` also fill
            CONTENT_TYPE/CONTENT_LENGTH.
        scheme: ``http`` or ``https`` (REQUEST_SCHEME; HTTPS=on for https).
        server_name, server_port, server_addr: SERVER_NAME, SERVER_PORT, SERVER_ADDR.
        remote_addr, remote_port: the client's address (REMOTE_ADDR, REMOTE_PORT).
        script_filename, document_root, split_path_info: see the module's path rules.
        server_protocol: SERVER_PROTOCOL.
        redirect_status: send REDIRECT_STATUS=200, which php-cgi's ``cgi.force_redirect``
            requires.
        extra: params to add or override last; a ``None`` value removes a param.

    Raises:
        ValueError: the path holds a NUL byte once decoded.
    """
    raw_target = _b(target) or b"/"
    raw_path, _, query = raw_target.partition(b"?")
    path = normalize_path(raw_path)
    params: dict[str, bytes] = {
        "QUERY_STRING": query,
        "REQUEST_METHOD": method.upper().encode(),
        "CONTENT_TYPE": b"",
        "CONTENT_LENGTH": b"",
    }
    path_info = b""
    if script_filename is not None:
        root = document_root if document_root is not None else posixpath.dirname(script_filename)
        root_slash = root.rstrip("/") + "/"
        if script_filename.startswith(root_slash):
            script_name = "/" + script_filename[len(root_slash) :]
        else:
            script_name = "/" + posixpath.basename(script_filename)
        params["SCRIPT_NAME"] = script_name.encode()
        filename = script_filename.encode()
        document_root = root
    else:
        script = path
        if split_path_info is not None:
            m = re.match(split_path_info.encode(), path, re.DOTALL)
            if m is not None:
                script = m.group(1)
                path_info = m.group(2) or b""
        params["SCRIPT_NAME"] = script
        filename = (document_root.rstrip("/").encode() if document_root else b"") + script
    params["REQUEST_URI"] = raw_target
    params["DOCUMENT_URI"] = path
    if document_root is not None:
        params["DOCUMENT_ROOT"] = document_root.encode()
    params["SERVER_PROTOCOL"] = server_protocol.encode()
    params["REQUEST_SCHEME"] = scheme.encode()
    if scheme == "https":
        params["HTTPS"] = b"on"
    params["GATEWAY_INTERFACE"] = b"CGI/1.1"
    params["SERVER_SOFTWARE"] = SERVER_SOFTWARE.encode()
    params["REMOTE_ADDR"] = remote_addr.encode()
    params["REMOTE_PORT"] = str(remote_port).encode()
    params["SERVER_ADDR"] = server_addr.encode()
    port = server_port if server_port is not None else _DEFAULT_PORTS.get(scheme, 80)
    params["SERVER_PORT"] = str(port).encode()
    params["SERVER_NAME"] = server_name.encode()
    params["SCRIPT_FILENAME"] = filename
    if path_info:
        params["PATH_INFO"] = path_info
    if redirect_status:
        params["REDIRECT_STATUS"] = b"200"
    merged: dict[str, list[bytes]] = {}
    for name, value in headers:
        bname = _b(name).strip()
        if b"_" in bname or not bname:
            continue
        key = "HTTP_" + bname.decode("latin-1").upper().replace("-", "_")
        if key == "HTTP_PROXY":
            continue
        merged.setdefault(key, []).append(_b(value))
        if key == "HTTP_CONTENT_TYPE":
            params["CONTENT_TYPE"] = _b(value)
        elif key == "HTTP_CONTENT_LENGTH":
            params["CONTENT_LENGTH"] = _b(value)
    for key, values in merged.items():
        params[key] = (b"; " if key == "HTTP_COOKIE" else b", ").join(values)
    for name, extra_value in (extra or {}).items():
        if extra_value is None:
            params.pop(name, None)
        else:
            params[name] = _b(extra_value)
    return params
