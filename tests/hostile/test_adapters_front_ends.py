"""What real front ends send, through the real server and both adapters, on raw sockets.

* HEAD: the header block and no body bytes at all (HAProxy's ``fcgi-app`` answers 502 to a
  HEAD response with a body; nginx, Apache, lighttpd and Caddy drop it, hiding the bug).
* CONTENT_LENGTH -1 (Caddy, chunked uploads) and other non-digit values: the body is read to
  the end of STDIN and no negative or refused length reaches the application.
* An ASGI body of the wrong type is a 500, and on a multiplexed connection the other request
  is served as usual (a poison record used to break them all).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .adapters_helpers import Served, exchange, nginx_params, servers, start

__all__ = ["servers"]  # the fixture, used by name

pytestmark = pytest.mark.timeout(90)

WSGI_APP = """
import json


def app(environ, start_response):
    body = environ["wsgi.input"].read()
    answer = json.dumps({
        "body": body.decode("latin-1"),
        "content_length": environ.get("CONTENT_LENGTH"),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(answer)))])
    return [answer]
"""

ASGI_APP = """
import json


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].replace("lifespan.", "")
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/str":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": "a str", "more_body": True})
        return
    answer = json.dumps({
        "body": body.decode("latin-1"),
        "content_length": dict(scope["headers"]).get(b"content-length", b"").decode() or None,
    }).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i in range(0, len(answer), 7):  # streamed, to cover body messages on HEAD too
        await send({"type": "http.response.body", "body": answer[i:i + 7], "more_body": True})
    await send({"type": "http.response.body", "body": b""})
"""

APPS = {"wsgi": WSGI_APP, "asgi": ASGI_APP}


def serve(servers: list[Served], tmp_path: Path, interface: str) -> Served:
    return start(servers, tmp_path, APPS[interface], "--interface", interface)


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_head_gets_the_header_block_and_not_one_body_byte(
    servers: list[Served], tmp_path: Path, interface: str
) -> None:
    served = serve(servers, tmp_path, interface)
    answers = exchange(
        served, {1: (nginx_params("GET", "/x"), b""), 2: (nginx_params("HEAD", "/x"), b"")}
    )
    get, head = answers[1], answers[2]
    assert get.ended
    assert head.ended
    assert get.body  # the same resource has a body on GET
    assert head.stdout.endswith(b"\r\n\r\n")
    assert head.body == b""
    assert head.head == get.head  # Content-Length included, as the application set it
    assert f"Content-Length: {len(get.body)}".lower().encode() in head.head.lower()


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
@pytest.mark.parametrize("length", ["-1", "", " 3", "+3", "1_0", "abc"])
def test_an_unknown_content_length_reads_the_body_to_its_end(
    servers: list[Served], tmp_path: Path, interface: str, length: str
) -> None:
    """Caddy sends CONTENT_LENGTH=-1 for a chunked upload; it passed to the app as is."""
    served = serve(servers, tmp_path, interface)
    params = nginx_params("POST", "/up", CONTENT_LENGTH=length)
    [answer] = exchange(served, {1: (params, b"chunked upload body")}).values()
    assert answer.ended
    assert answer.status == 200
    assert answer.body == b'{"body": "chunked upload body", "content_length": null}'


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_a_digit_content_length_still_cuts_the_body(
    servers: list[Served], tmp_path: Path, interface: str
) -> None:
    served = serve(servers, tmp_path, interface)
    params = nginx_params("POST", "/up", CONTENT_LENGTH="7")
    [answer] = exchange(served, {1: (params, b"chunked")}).values()
    assert answer.body == b'{"body": "chunked", "content_length": "7"}'


def test_a_str_body_is_a_500_and_spares_the_other_requests(
    servers: list[Served], tmp_path: Path
) -> None:
    """The adapter marked the response begun before the write failed: fail() wrote a poison
    record, nginx answered 502, and the multiplexed request beside it was lost too."""
    served = serve(servers, tmp_path, "asgi")
    answers = exchange(
        served, {1: (nginx_params("GET", "/str"), b""), 2: (nginx_params("GET", "/ok"), b"")}
    )
    assert answers[1].ended
    assert answers[1].status == 500
    assert answers[1].body == b"Internal Server Error"
    assert answers[2].ended
    assert answers[2].status == 200
    assert answers[2].body.startswith(b'{"body": ""')
    assert any("must be bytes" in line for line in served.log_lines())
