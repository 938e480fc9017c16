"""The server and both adapters answer a failed application with the same bytes, from one
place (fcgi_async.cgi), and size their first write by the same rule."""

from __future__ import annotations

from fcgi_async.adapters import asgi, wsgi

from fcgi_async import cgi
from fcgi_async.server import connection


def test_one_500_response() -> None:
    assert cgi.INTERNAL_ERROR_RESPONSE.startswith(b"Status: 500 ")
    assert cgi.INTERNAL_ERROR_RESPONSE.endswith(b"\r\n\r\nInternal Server Error")
    assert asgi.INTERNAL_ERROR_RESPONSE is cgi.INTERNAL_ERROR_RESPONSE
    assert wsgi.INTERNAL_ERROR_RESPONSE is cgi.INTERNAL_ERROR_RESPONSE
    assert connection.INTERNAL_ERROR_RESPONSE is cgi.INTERNAL_ERROR_RESPONSE


def test_one_copy_threshold() -> None:
    assert asgi.COPY_HEAD_BELOW is wsgi.COPY_HEAD_BELOW is cgi.COPY_HEAD_BELOW
