"""What real front ends send, and what hostile ones do, through both adapters alike.

* CONTENT_LENGTH and FCGI_DATA_LENGTH go through one parser (:func:`fcgi_async.cgi.parse_length`):
  ASCII digits are a length; empty, ``-1`` (Caddy, chunked uploads) and anything else are an
  unknown length, read to the end of the stream and never shown to the application.
* HEAD responses carry the header block and no body (RFC 3875 §4.3.2; HAProxy's 502).
* A response body of the wrong type is a clean 500, never a response broken after its head.
* Log lines quote request data escaped (no forged lines).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fcgi_async.adapters.asgi import COPY_HEAD_BELOW, ASGIAdapter, Receive, Scope, Send
from fcgi_async.adapters.wsgi import MAX_JOINED_BODY, WSGIAdapter

from fcgi_async.cgi import MAX_LENGTH_DIGITS, describe_request, parse_length, printable
from fcgi_async.protocol import Role

from .fakes import FakeRequest

StartResponse = Callable[..., Callable[[bytes], object]]

BODY = [b"hello ", b"world"]

#: CONTENT_LENGTH values that are no length: the body is read to its end.
UNKNOWN_LENGTHS = ["", "-1", " 5", "5 ", "+5", "1_0", "\u00b2", "0x5", "5.0", "junk"]


# --- the parser -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [*UNKNOWN_LENGTHS, None, "9" * (MAX_LENGTH_DIGITS + 1)])
def test_only_ascii_digits_are_a_length(value: str | None) -> None:
    assert parse_length(value) is None
    if value is not None:
        assert parse_length(value.encode()) is None


@pytest.mark.parametrize("value", ["0", "5", "0007", "9" * MAX_LENGTH_DIGITS])
def test_digits_are_a_length(value: str) -> None:
    assert parse_length(value) == parse_length(value.encode()) == int(value)


# --- CONTENT_LENGTH through both adapters ----------------------------------------------------


async def wsgi_body(length: str) -> tuple[bytes, str | None]:
    """(the body wsgi.input gave, the CONTENT_LENGTH the application saw)."""
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        seen.append(environ["wsgi.input"].read())
        seen.append(environ.get("CONTENT_LENGTH"))
        start_response("200 OK", [])
        return [b""]

    req = FakeRequest({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": length}, BODY)
    await WSGIAdapter(app)(req)
    assert req.parsed()[0] == 200
    return seen[0], seen[1]


async def asgi_body(length: str) -> tuple[bytes, str | None]:
    """(the body receive() gave, the content-length header the application saw)."""
    seen: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message["body"]
            if not message["more_body"]:
                break
        seen.append(body)
        header = dict(scope["headers"]).get(b"content-length")
        seen.append(None if header is None else header.decode("latin-1"))
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body"})

    params = {
        "REQUEST_METHOD": "POST",
        "CONTENT_LENGTH": length.encode("utf-8"),
        "HTTP_CONTENT_LENGTH": length.encode("utf-8"),
    }
    req = FakeRequest(params, BODY)
    await ASGIAdapter(app, lifespan="off")(req)
    assert req.parsed()[0] == 200
    return seen[0], seen[1]


@pytest.mark.parametrize("body_of", [wsgi_body, asgi_body])
@pytest.mark.parametrize("length", UNKNOWN_LENGTHS)
async def test_an_unknown_length_reads_the_whole_body_and_is_not_shown(
    body_of: Callable[[str], Any], length: str
) -> None:
    """Caddy's -1 and every value that is not digits: the body is read to the end of STDIN
    and the application sees no length (WSGI once took " 5" and "+5" as 5, and passed -1 on;
    ASGI passed ``content-length: -1`` on)."""
    assert await body_of(length) == (b"hello world", None)


@pytest.mark.parametrize("body_of", [wsgi_body, asgi_body])
async def test_a_digit_length_cuts_the_body_in_both_adapters(
    body_of: Callable[[str], Any],
) -> None:
    assert await body_of("5") == (b"hello", "5")


async def test_fcgi_data_length_takes_the_same_parser() -> None:
    """``²`` passed ``str.isdigit()`` and then failed ``int()``: the request was a 500."""
    seen: list[bytes] = []

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        seen.append(environ["fcgi.data"].read())
        start_response("200 OK", [])
        return [b""]

    for length, data in (("\u00b2", b"abcdefgh"), ("-1", b"abcdefgh"), ("3", b"abc")):
        req = FakeRequest(
            {"FCGI_DATA_LENGTH": length.encode("utf-8")}, role=Role.FILTER, data=[b"abc", b"defgh"]
        )
        await WSGIAdapter(app)(req)
        assert req.parsed()[0] == 200
        assert seen.pop() == data


# --- HEAD -------------------------------------------------------------------------------------

HEAD = {"REQUEST_METHOD": "HEAD"}


def assert_head_only(req: FakeRequest, length: str | None) -> None:
    """The response is the header block (with the application's Content-Length) and no body."""
    assert req.ended
    assert not req.failed
    status, headers, body = req.parsed()
    assert status == 200
    assert body == b""
    assert req.output.endswith(b"\r\n\r\n")
    assert dict((k.lower(), v) for k, v in headers).get("content-length") == length


def wsgi_list(size: int) -> Any:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Content-Length", str(size))])
        return [b"x" * (size // 2), b"y" * (size - size // 2)]

    return app


@pytest.mark.parametrize("size", [10, COPY_HEAD_BELOW, MAX_JOINED_BODY + 10])
async def test_wsgi_head_sends_no_body_from_a_list(size: int) -> None:
    req = FakeRequest(HEAD)
    await WSGIAdapter(wsgi_list(size))(req)
    assert_head_only(req, str(size))


async def test_wsgi_head_sends_no_body_from_one_large_buffer() -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [])
        return [b"z" * (2 * COPY_HEAD_BELOW)]

    req = FakeRequest(HEAD)
    await WSGIAdapter(app)(req)
    assert_head_only(req, None)


async def test_wsgi_head_of_an_endless_lazy_generator_stops_and_closes_it() -> None:
    """start_response called inside the generator: its first chunk is needed for the headers;
    the rest is never produced, and close() is called."""
    produced: list[int] = []
    closed: list[bool] = []

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        try:
            start_response("200 OK", [("Content-Type", "text/event-stream")])
            n = 0
            while True:
                produced.append(n)
                yield b"data: %d\n\n" % n
                n += 1
        finally:
            closed.append(True)

    req = FakeRequest(HEAD)
    await WSGIAdapter(app)(req)
    assert_head_only(req, None)
    assert produced == [0]
    assert closed == [True]


async def test_wsgi_head_with_write_sends_only_the_head() -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", [("Content-Length", "6")])
        write(b"abc")
        write(b"def")
        return []

    req = FakeRequest(HEAD)
    await WSGIAdapter(app)(req)
    assert_head_only(req, "6")
    assert req.writes == 1  # one end(), no stray writes


async def test_wsgi_get_still_sends_the_body() -> None:
    req = FakeRequest()
    await WSGIAdapter(wsgi_list(10))(req)
    assert req.parsed()[2] == b"xxxxxyyyyy"


def asgi_stream(chunks: list[bytes], length: int | None = None) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [] if length is None else [(b"content-length", b"%d" % length)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for chunk in chunks[:-1]:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": chunks[-1]})

    return app


@pytest.mark.parametrize(
    "chunks", [[b"whole"], [b"a", b"", b"b", b"c"], [b"L" * COPY_HEAD_BELOW, b"end"]]
)
async def test_asgi_head_sends_no_body(chunks: list[bytes]) -> None:
    size = sum(map(len, chunks))
    req = FakeRequest(HEAD)
    await ASGIAdapter(asgi_stream(chunks, size), lifespan="off")(req)
    assert_head_only(req, str(size))


async def test_asgi_head_pathsend_does_not_read_the_file(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"F" * 100)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]}
        )
        await send({"type": "http.response.pathsend", "path": str(path)})

    req = FakeRequest(HEAD)
    await ASGIAdapter(app, lifespan="off")(req)
    assert_head_only(req, "100")


async def test_asgi_get_still_sends_the_body() -> None:
    req = FakeRequest()
    await ASGIAdapter(asgi_stream([b"a", b"b"]), lifespan="off")(req)
    assert req.parsed()[2] == b"ab"


# --- a body of the wrong type ----------------------------------------------------------------


@pytest.mark.parametrize("more", [True, False])
@pytest.mark.parametrize("body", ["text", 5, ["x"], "L" * COPY_HEAD_BELOW])
async def test_asgi_body_of_the_wrong_type_is_a_500(
    body: object, more: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The response was marked as begun before the write failed, so a str body made the
    adapter fail() the request (a poison record: nginx's 502, and on a multiplexed connection
    the other requests lost too) instead of answering 500."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": body, "more_body": more})

    req = FakeRequest()
    with caplog.at_level(logging.ERROR):
        await ASGIAdapter(app, lifespan="off")(req)
    assert not req.failed
    assert req.parsed()[0] == 500
    assert "must be bytes" in caplog.text


async def test_asgi_bytes_like_bodies_are_accepted() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": bytearray(b"ab"), "more_body": True})
        await send({"type": "http.response.body", "body": memoryview(b"cd")})

    req = FakeRequest()
    await ASGIAdapter(app, lifespan="off")(req)
    assert req.parsed()[2] == b"abcd"


async def test_asgi_wrong_type_mid_stream_fails_the_started_response() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        await send({"type": "http.response.body", "body": "text"})

    req = FakeRequest()
    await ASGIAdapter(app, lifespan="off")(req)
    assert req.failed  # bytes already left: only a visibly broken response is honest


# --- log lines --------------------------------------------------------------------------------

FORGING_URI = b"/x%0a2026-01-01 ERROR forged\r\nline\x1b[31m\xff"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (b"/plain?a=1", "/plain?a=1"),
        (b"/\xc3\xa9", "/\u00e9"),
        (b"/a\nb\rc\x00d\x7f", "/a\\x0ab\\x0dc\\x00d\\x7f"),
        (b"/\xff\xfe", "/\\xff\\xfe"),
        ("/\u2028\u0085".encode(), "/\\u2028\\x85"),
        (b'/"q"\\', '/\\"q\\"\\\\'),
    ],
)
def test_printable_escapes_what_could_forge_a_line(value: bytes, shown: str) -> None:
    assert printable(value) == shown
    assert printable(value.decode("utf-8", "surrogateescape")) == shown


def assert_one_line(message: str) -> None:
    """No character that could end a log line or drive a terminal."""
    assert message.isprintable(), message


async def test_asgi_error_lines_escape_the_request() -> None:
    """ASGI error lines quoted the decoded path: %0a in a URL wrote a forged line."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    req = FakeRequest({"REQUEST_URI": FORGING_URI})
    logger = logging.getLogger("test.front_ends.asgi")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        await ASGIAdapter(app, lifespan="off", logger=logger)(req)
    finally:
        logger.removeHandler(handler)
    assert req.parsed()[0] == 500
    [record] = records
    message = record.getMessage()
    assert describe_request(req.params) in message
    assert_one_line(message)


async def test_wsgi_error_lines_escape_the_request(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        raise RuntimeError("boom")

    req = FakeRequest({"REQUEST_URI": FORGING_URI.replace(b"%0a", b"\n")})
    with caplog.at_level(logging.ERROR, logger="fcgi_async.adapters.wsgi"):
        await WSGIAdapter(app)(req)
    assert req.parsed()[0] == 500
    [message] = [r.getMessage() for r in caplog.records]
    assert describe_request(req.params) in message
    assert_one_line(message)
