"""Log forging: every log line that quotes request data escapes it through one helper.

A request whose URI or method holds CR, LF or other unprintable characters must never write a
second (forged) line into the error log, the slow log or the access log; all of them show it
the way :func:`fcgi_async.cgi.printable` does.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from fcgi_async import accessformat
from fcgi_async.cgi import describe_request, printable
from fcgi_async.server import connection, timeouts

#: A URI and a method a hostile web server (or a lenient one) may pass on as they came.
PARAMS = {
    b"REQUEST_METHOD": b"GET\r\n2026-01-01 00:00:00 ERROR forged",
    b"REQUEST_URI": b"/x\n2026-01-01 00:00:00 [1] CRITICAL forged\x1b[2J\xff\xe2\x80\xa8",
    b"REMOTE_ADDR": b"127.0.0.1\n",
}


class Handle:
    """What the log functions read of a request."""

    request_id = 7
    peer = "127.0.0.1:9"
    params = PARAMS

    @property
    def logger(self) -> logging.Logger:
        return logging.getLogger("fcgi_async.app")


def test_the_request_is_described_escaped() -> None:
    described = describe_request(PARAMS)
    assert described.isprintable()
    method, uri = printable(PARAMS[b"REQUEST_METHOD"]), printable(PARAMS[b"REQUEST_URI"])
    assert described == f"{method} {uri}"
    assert "\\x0a2026" in described
    assert "\\x1b[2J\\xff\\u2028" in described


def test_stderr_lines_quote_the_request_escaped(caplog: pytest.LogCaptureFixture) -> None:
    """The URI was decoded with backslashreplace only and the method as latin-1: CR/LF passed."""
    with caplog.at_level(logging.WARNING, logger="fcgi_async.app"):
        connection._log_stderr(Handle(), b"app says hi\n")  # type: ignore[arg-type]
    [record] = caplog.records
    message = record.getMessage()
    assert message.isprintable(), message
    assert message == f"request 7 ({describe_request(PARAMS)}) stderr: app says hi"
    extra: Any = record
    assert extra.request_uri == printable(PARAMS[b"REQUEST_URI"])
    assert extra.request_method == printable(PARAMS[b"REQUEST_METHOD"])


def test_the_slow_log_and_timeouts_quote_the_request_escaped() -> None:
    assert timeouts._describe(Handle()) == describe_request(PARAMS)  # type: ignore[arg-type]


def test_the_access_log_quotes_the_request_escaped() -> None:
    handle: Any = Handle()
    assert accessformat._param(handle, b"REQUEST_URI") == printable(PARAMS[b"REQUEST_URI"])
    assert accessformat._param(handle, b"REMOTE_ADDR") == "127.0.0.1\\x0a"
    # Bytes that are not UTF-8 show as \xNN (they were \\xNN, with an escaped backslash).
    assert "\\xff" in accessformat._param(handle, b"REQUEST_URI")
    assert "\\\\xff" not in accessformat._param(handle, b"REQUEST_URI")
