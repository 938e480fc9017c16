"""The access log's format: its codes and their compiler (no server import: the
configuration checks a format with it).

Access log format codes (php-fpm's ``access.format`` and gunicorn's ``access_log_format``
where they agree; where they differ the choice is noted):

=================  ==========================================================================
``%h`` ``%R``      remote address: the REMOTE_ADDR param, else the web server's address
``%l``             ``-`` (Apache's identd field, for the combined format)
``%u``             REMOTE_USER, or ``-``
``%t``             request start, ``[22/Nov/2026:05:31:20 +0000]`` (Apache and gunicorn
                   style, with brackets; php-fpm prints it without)
``%{FMT}t``        request start in ``strftime`` format FMT, without brackets
``%m``             request method
``%r``             request line: ``METHOD REQUEST_URI PROTOCOL`` (gunicorn; php-fpm's ``%r``
                   is the URI, which is ``%U%Q%q`` here)
``%U``             URI path, without the query (REQUEST_URI up to ``?``; else DOCUMENT_URI,
                   else SCRIPT_NAME + PATH_INFO)
``%q``             query string, without ``?``
``%Q``             ``?`` when there is a query string, else nothing
``%H``             protocol (SERVER_PROTOCOL)
``%s``             status of the response
``%b``             response body bytes, ``-`` for none
``%B``             response body bytes, ``0`` for none
``%d``             duration in seconds with 3 decimals; ``%{milliseconds}d`` (or ``mili``)
                   and ``%{microseconds}d`` (or ``micro``) as php-fpm
``%D``             duration in microseconds (gunicorn)
``%M``             duration in milliseconds (gunicorn)
``%T``             duration in whole seconds (gunicorn)
``%p``             pid of the process that served the request
``%i``             FastCGI request id
``%{Header}i``     request header, from its ``HTTP_*`` param (``%{User-Agent}i``)
``%a``             user agent (gunicorn; same as ``%{User-Agent}i``)
``%{NAME}e``       any FastCGI param (``%{SCRIPT_FILENAME}e``)
``%n``             pool name (php-fpm)
``%%``             a ``%``
=================  ==========================================================================

Values that come from the request are escaped (``"`` and ``\\`` with a backslash, control
characters and bytes that are not UTF-8 as ``\\xNN``, other unprintable characters as
``\\uNNNN``; :func:`fcgi_async.cgi.printable`, the rule of every log line) so that one request
is always one line a parser can split.

Statuses without an answer from the application: ``499`` when the web server aborted the
request before a response began (nginx's code for it), ``500`` when the server answered for
a failed application.

A compiled format is a list of literals and functions of a finished request
(:class:`LoggedRequest`; the server's ``LoggedRequestHandle`` in :mod:`fcgi_async.logs`).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from .cgi import printable, request_path


class LoggedRequest(Protocol):
    """What a format reads of a finished request (a ``fcgi_async.logs.LoggedRequestHandle``)."""

    @property
    def params(self) -> Mapping[bytes, bytes]:
        """The request's FastCGI params."""

    @property
    def peer(self) -> str:
        """The web server's address (the connection's peer)."""

    @property
    def request_id(self) -> int:
        """The FastCGI request id."""

    @property
    def log_started(self) -> float:
        """Wall-clock time the request arrived."""

    @property
    def body_bytes(self) -> int:
        """Response body bytes sent."""

    @property
    def pool_name(self) -> str:
        """The pool name (php-fpm's ``%n``)."""

    def duration_s(self) -> float:
        """Seconds since the request arrived."""

    def final_status(self) -> int:
        """The status to log."""


#: One compiled piece of a format: a literal, or a function of the finished request.
Piece = str | Callable[["LoggedRequest"], str]

_CODE = re.compile(r"%(?:\{([^}]*)\})?(.)", re.DOTALL)
_DURATION_UNITS: dict[str, Callable[[float], str]] = {
    "seconds": lambda s: f"{s:.3f}",
    "milliseconds": lambda s: f"{s * 1e3:.3f}",
    "mili": lambda s: f"{s * 1e3:.3f}",
    "microseconds": lambda s: f"{s * 1e6:.0f}",
    "micro": lambda s: f"{s * 1e6:.0f}",
}


def _param(handle: LoggedRequest, name: bytes, default: str = "-") -> str:
    value = handle.params.get(name)
    if not value:
        return default
    return printable(value)


def _uri_path(handle: LoggedRequest) -> str:
    uri = handle.params.get(b"REQUEST_URI")
    path = uri.partition(b"?")[0] if uri else request_path(handle.params)
    return printable(path) if path else "-"


def _query(handle: LoggedRequest) -> str:
    return _param(handle, b"QUERY_STRING", "")


def _request_line(handle: LoggedRequest) -> str:
    uri = handle.params.get(b"REQUEST_URI")
    target = printable(uri) if uri else _uri_path(handle)
    return f"{_param(handle, b'REQUEST_METHOD')} {target} {_param(handle, b'SERVER_PROTOCOL')}"


def _remote(handle: LoggedRequest) -> str:
    addr = handle.params.get(b"REMOTE_ADDR")
    return printable(addr) if addr else handle.peer


def _time(fmt: str | None) -> Callable[[LoggedRequest], str]:
    fmt = fmt or "[%d/%b/%Y:%H:%M:%S %z]"
    cache: list[object] = [-1, ""]  # the last second formatted, and its text

    def when(h: LoggedRequest) -> str:
        second = int(h.log_started)
        if cache[0] != second:
            cache[:] = [second, time.strftime(fmt, time.localtime(second))]
        return cache[1]  # type: ignore[return-value]

    return when


_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


def _header(name: str) -> Callable[[LoggedRequest], str]:
    key = b"HTTP_" + name.upper().replace("-", "_").encode("latin-1")
    return lambda h: _param(h, key)


def _env(name: str) -> Callable[[LoggedRequest], str]:
    key = name.encode("latin-1")
    return lambda h: _param(h, key)


def _duration(unit: Callable[[float], str]) -> Callable[[LoggedRequest], str]:
    return lambda h: unit(h.duration_s())


def _bytes_or_dash(h: LoggedRequest) -> str:
    size = h.body_bytes
    return str(size) if size else "-"


_SIMPLE: dict[str, Callable[[LoggedRequest], str]] = {
    "h": _remote,
    "R": _remote,
    "l": lambda h: "-",
    "u": lambda h: _param(h, b"REMOTE_USER"),
    "m": lambda h: _param(h, b"REQUEST_METHOD"),
    "r": _request_line,
    "U": _uri_path,
    "q": _query,
    "Q": lambda h: "?" if h.params.get(b"QUERY_STRING") else "",
    "H": lambda h: _param(h, b"SERVER_PROTOCOL"),
    "s": lambda h: str(h.final_status()),
    "b": _bytes_or_dash,
    "B": lambda h: str(h.body_bytes),
    "D": lambda h: str(round(h.duration_s() * 1e6)),
    "M": lambda h: str(round(h.duration_s() * 1e3)),
    "T": lambda h: str(int(h.duration_s())),
    "p": lambda h: str(_pid[0]),
    "i": lambda h: str(h.request_id),
    "a": lambda h: _param(h, b"HTTP_USER_AGENT"),
    "n": lambda h: h.pool_name,
}


def compile_access_format(fmt: str) -> list[Piece]:
    """Compile an access log format into literals and value functions.

    Raises:
        ValueError: an unknown ``%``-code, a code that needs ``{...}`` without it, or a
            lone ``%`` at the end; the message names it.
    """
    pieces: list[Piece] = []
    pos = 0
    for match in _CODE.finditer(fmt):
        if match.start() > pos:
            pieces.append(fmt[pos : match.start()])
        pos = match.end()
        arg, code = match.group(1), match.group(2)
        if code == "%" and arg is None:
            pieces.append("%")
        elif code == "t":
            pieces.append(_time(arg))
        elif code == "d":
            unit = _DURATION_UNITS.get(arg or "seconds")
            if unit is None:
                choices = ", ".join(_DURATION_UNITS)
                raise ValueError(f"%{{{arg}}}d: unknown unit {arg!r}; choose from {choices}")
            pieces.append(_duration(unit))
        elif code == "i" and arg is not None:
            pieces.append(_header(arg))
        elif code == "e":
            if not arg:
                raise ValueError("%e needs a param name: %{NAME}e")
            pieces.append(_env(arg))
        elif arg is None and code in _SIMPLE:
            pieces.append(_SIMPLE[code])
        else:
            raise ValueError(f"unknown code {match.group(0)!r} (see the README's access log codes)")
    rest = fmt[pos:]
    if "%" in rest:
        raise ValueError(f"a lone '%' at the end of {fmt!r}; write %% for a percent sign")
    if rest:
        pieces.append(rest)
    return pieces


__all__ = ["LoggedRequest", "Piece", "compile_access_format"]
