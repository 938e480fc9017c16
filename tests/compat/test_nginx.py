"""fcgi-async behind a real nginx (the Debian package), for the WSGI and the ASGI adapter.

Each test runs twice, through the ``stack`` fixture: ``tests/compat/apps/wsgi_app.py`` and
``asgi_app.py`` offer the same endpoints. nginx's locations are described in
:func:`conftest.compat_locations`.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from .conftest import Stack, fetch_error_after

pytestmark = pytest.mark.nginx

MIB = 1024 * 1024
CHUNK = 64 * 1024
PATTERN = bytes(range(256)) * (CHUNK // 256)


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=30.0) as client:
        yield client


def test_get(client: httpx.Client) -> None:
    response = client.get("/hello")
    assert response.status_code == 200
    assert response.text == "Hello, world!\n"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["content-length"] == "14"


def test_not_found(client: httpx.Client) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404


@pytest.mark.parametrize("size", [0, 1, 64 * 1024, 20 * MIB], ids=["0B", "1B", "64KiB", "20MiB"])
@pytest.mark.parametrize("location", ["/echo", "/nokeep/echo"])
def test_post_body_arrives_intact(client: httpx.Client, size: int, location: str) -> None:
    body = os.urandom(size)
    response = client.post(location, content=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["method"] == "POST"
    assert data["length"] == size
    assert data["sha256"] == hashlib.sha256(body).hexdigest()
    assert data["content_length"] == str(size)


@pytest.mark.parametrize("location", ["/", "/nokeep/", "/upload/"])
def test_answer_without_reading_the_body(client: httpx.Client, location: str) -> None:
    # The app answers before (or without) reading a large body. Closing a KEEP_CONN=0
    # connection with the body unread would reset it under nginx: a 502 or a cut response.
    for size in (100_000, MIB, 20 * MIB):
        response = client.post(f"{location}hello", content=os.urandom(size))
        assert response.status_code == 200, (size, response.status_code)
        assert response.text == "Hello, world!\n"
        failed = client.post(f"{location}error-before", content=os.urandom(size))
        assert failed.status_code == 500, (size, failed.status_code)


def test_chunked_upload_without_request_buffering(client: httpx.Client) -> None:
    parts = [os.urandom(n) for n in (1, 100_000, MIB, 3 * MIB + 7)]

    def body() -> Iterator[bytes]:
        yield from parts

    response = client.post("/upload/echo", content=body())
    assert response.status_code == 200, response.text
    data = response.json()
    whole = b"".join(parts)
    assert data["length"] == len(whole)
    assert data["sha256"] == hashlib.sha256(whole).hexdigest()
    assert data["content_length"] == ""  # nginx streams it: the length is not known up front


def test_streamed_first_chunk_arrives_before_the_last_is_produced(
    client: httpx.Client, stack: Stack
) -> None:
    gate = f"gate-{time.monotonic_ns()}"
    with client.stream("GET", "/stream", params={"gate": gate}) as response:
        assert response.status_code == 200
        chunks = response.iter_raw()
        first = next(chunks)
        # The app is now waiting for the gate file: what we hold was sent before the end.
        assert first == b"first\n"
        (stack.server.gate_dir / gate).touch()
        rest = b"".join(chunks)
    assert rest == b"last\n"


def test_big_response_to_a_slow_reader_keeps_memory_bounded(stack: Stack) -> None:
    total_mib = 100
    server = stack.server
    baseline = server.rss_kib()
    peak = baseline
    received = 0
    digest = hashlib.sha256()
    with (
        httpx.Client(base_url=stack.url, timeout=30.0) as client,
        client.stream("GET", "/big", params={"mib": total_mib}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-length"] == str(total_mib * MIB)
        # Read nothing for a while: an app that is not held back would produce it all now.
        time.sleep(1.0)
        peak = max(peak, server.rss_kib())
        next_pause = MIB
        for chunk in response.iter_raw(CHUNK):
            digest.update(chunk)
            received += len(chunk)
            if received >= next_pause:
                next_pause += MIB
                time.sleep(0.01)  # ~ 50-100 MiB/s at most: slower than the app writes
                if received % (4 * MIB) < CHUNK:
                    peak = max(peak, server.rss_kib())
    assert received == total_mib * MIB
    expected = hashlib.sha256()
    for _ in range(total_mib * MIB // CHUNK):
        expected.update(PATTERN)
    assert digest.hexdigest() == expected.hexdigest()
    growth_mib = (peak - baseline) / 1024
    print(f"RSS {baseline / 1024:.1f} MiB before, peak {peak / 1024:.1f} MiB")
    assert growth_mib < 64, f"RSS grew by {growth_mib:.1f} MiB serving {total_mib} MiB"


def test_several_set_cookie_headers(client: httpx.Client) -> None:
    response = client.get("/cookies")
    assert response.status_code == 200
    assert response.headers.get_list("set-cookie") == [
        "a=1; Path=/",
        "b=2; Path=/; HttpOnly",
        "c=3; Path=/; Max-Age=60",
    ]
    assert dict(response.cookies) == {"a": "1", "b": "2", "c": "3"}


def test_204(client: httpx.Client) -> None:
    response = client.get("/status/204")
    assert response.status_code == 204
    assert response.content == b""


def test_304(client: httpx.Client) -> None:
    response = client.get("/status/304", headers={"If-None-Match": '"v1"'})
    assert response.status_code == 304
    assert response.headers["etag"] == '"v1"'
    assert response.content == b""


def test_head(client: httpx.Client) -> None:
    response = client.head("/hello")
    assert response.status_code == 200
    assert response.headers["content-length"] == "14"
    assert response.content == b""
    # The connection is still good for the next request.
    assert client.get("/hello").text == "Hello, world!\n"


def test_redirects(client: httpx.Client) -> None:
    response = client.get("/redirect")
    assert response.status_code == 302
    assert response.headers["location"].endswith("/hello")
    followed = client.get("/redirect", follow_redirects=True)
    assert followed.status_code == 200
    assert followed.text == "Hello, world!\n"
    moved = client.get("/moved")
    assert moved.status_code == 301
    assert moved.headers["location"] == "http://example.invalid/elsewhere"


@pytest.mark.parametrize(
    ("raw", "path_info", "query"),
    [
        ("/echo-path/plain", "/echo-path/plain", ""),
        ("/echo-path/a%20b/c%3Bd?x=1&y=%C3%A9", "/echo-path/a b/c;d", "x=1&y=%C3%A9"),
        ("/echo-path/%C3%A9t%C3%A9/%E2%82%AC", "/echo-path/été/€", ""),
        ("/echo-path/100%25", "/echo-path/100%", ""),
    ],
)
def test_encoded_and_non_ascii_paths(
    client: httpx.Client, raw: str, path_info: str, query: str
) -> None:
    response = client.get(raw)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["script_name"] == ""
    assert data["path_info"] == path_info
    assert data["query"] == query
    assert data["request_uri"] == raw


@pytest.mark.parametrize(
    ("raw", "path_info"),
    [
        ("/prefix/hello", None),
        ("/prefix/echo-path/x?q=1", "/echo-path/x"),
        ("/prefix/echo-path/a%20b/%C3%A9", "/echo-path/a b/é"),
    ],
)
def test_prefix_mount(client: httpx.Client, raw: str, path_info: str | None) -> None:
    response = client.get(raw)
    assert response.status_code == 200, response.text
    if path_info is None:
        assert response.text == "Hello, world!\n"
        return
    data = response.json()
    assert data["script_name"] == "/prefix"
    assert data["path_info"] == path_info
    assert data["request_uri"] == raw


def test_proxy_header_never_reaches_the_app(client: httpx.Client) -> None:
    # httpoxy: nginx turns a "Proxy:" request header into the HTTP_PROXY param.
    response = client.get("/echo-path/x", headers={"Proxy": "http://evil.invalid:3128"})
    assert response.status_code == 200
    data = response.json()
    assert data["http_proxy"] is None
    assert data["os_environ_proxy"] is None


def test_5000_requests_over_upstream_keepalive(stack: Stack) -> None:
    total, workers = 5000, 4
    errors: list[str] = []
    done = [0] * workers

    def worker(index: int) -> None:
        try:
            with httpx.Client(base_url=stack.url, timeout=30.0) as client:
                for _ in range(total // workers):
                    response = client.get("/hello")
                    if response.status_code != 200 or response.text != "Hello, world!\n":
                        errors.append(f"{response.status_code} {response.text[:100]!r}")
                        return
                    done[index] += 1
        except Exception as exc:  # reported below, with the count that succeeded
            errors.append(repr(exc))

    listener_inodes = stack.server.socket_inodes()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    # Watch which connections the server holds: with keep-alive nginx reuses a handful.
    seen: set[str] = set()
    deadline = time.monotonic() + 100
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        seen |= stack.server.socket_inodes()
        time.sleep(0.01)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not errors, errors[:5]
    assert sum(done) == total
    connections = seen - listener_inodes
    print(f"{total} requests over {len(connections)} upstream connections")
    assert 1 <= len(connections) <= 16, f"{len(connections)} upstream connections for {total}"


def _state(client: httpx.Client) -> dict[str, int | None]:
    response = client.get("/state")
    assert response.status_code == 200
    data: dict[str, int | None] = response.json()
    return data


#: Slow responses a test abandons mid-body; a leak would add a thread or task per disconnect.
DISCONNECTS = 8


def _abandon_a_slow_response(stack: Stack, client: httpx.Client) -> None:
    """GET /slow, read its first tick, hang up; wait until the app saw the disconnect."""
    # A fresh client per slow request: closing its response mid-body drops the connection to
    # nginx, which closes its connection to us.
    with (
        httpx.Client(base_url=stack.url, timeout=30.0) as slow_client,
        slow_client.stream("GET", "/slow") as response,
    ):
        assert response.status_code == 200
        # Keep the iterator: a discarded one is finalized at once, and its GeneratorExit
        # makes httpcore close the connection, i.e. hang up before the check below.
        chunks = response.iter_raw()
        assert next(chunks).startswith(b"tick")
        assert _state(client)["inflight"] == 1
        chunks.close()  # now hang up mid-body
    deadline = time.monotonic() + 10
    while (state := _state(client))["inflight"] != 0:
        assert time.monotonic() < deadline, f"the slow response still runs: {state}"
        time.sleep(0.05)


def test_client_disconnect_mid_response_leaves_nothing_behind(stack: Stack) -> None:
    log_start = len(stack.server.log_text())
    with httpx.Client(base_url=stack.url, timeout=30.0) as client:
        # Warm-up: the WSGI worker pool starts threads on demand, up to --threads, and keeps
        # them; this starts the two that a slow response and a /state poll use at once.
        _abandon_a_slow_response(stack, client)
        idle = _state(client)
        assert idle["inflight"] == 0
        for _ in range(DISCONNECTS):
            _abandon_a_slow_response(stack, client)
        final = _state(client)
    print(f"idle {idle}, after {DISCONNECTS} disconnects {final}")
    assert final["threads"] is not None
    assert idle["threads"] is not None
    # The app counts a slow response out of flight in its close(), which runs on the worker
    # thread just before that thread hands the finished job back to the loop. The next /slow
    # and /state can arrive in between and find both started workers busy, so the pool may
    # start a third (once: it never holds more than three jobs here). A leak adds one per
    # disconnect.
    assert final["threads"] <= idle["threads"] + 1, (idle, final)
    # The server's own tasks (one per running request, the app's for ASGI): none may be left.
    assert final["tasks"] is not None
    assert idle["tasks"] is not None
    assert final["tasks"] <= idle["tasks"], (idle, final)
    assert "Traceback" not in stack.server.log_text()[log_start:]


def test_error_before_start_is_a_500(client: httpx.Client, stack: Stack) -> None:
    response = client.get("/error-before")
    assert response.status_code == 500
    assert "boom" not in response.text  # the traceback goes to the log, never to the client
    deadline = time.monotonic() + 10  # the log line may be written just after the response
    while "boom before the response started" not in stack.server.log_text():
        assert time.monotonic() < deadline, "the traceback did not reach the server's log"
        time.sleep(0.02)
    assert client.get("/hello").status_code == 200


@pytest.mark.parametrize("location", ["/", "/nokeep/"], ids=["keep-conn", "no-keep-conn"])
@pytest.mark.parametrize("query", ["", "?buffered=1"], ids=["unbuffered", "buffered"])
def test_error_after_start_fails_visibly(stack: Stack, location: str, query: str) -> None:
    status, body, error = fetch_error_after(f"{stack.url}{location}error-after{query}")
    print(f"status={status} error={error}")
    # nginx answers 502 (it had not sent headers yet), drops the connection before any
    # response, or cuts the body short: all visible. A clean 200 would be a silent truncation.
    if status is None or status == 200:
        assert body is None, f"truncated response looked complete: {len(body or b'')} bytes"
        assert error
    else:
        assert status == 502
    with httpx.Client(base_url=stack.url, timeout=30.0) as client:
        assert client.get(f"{location}hello").status_code == 200
