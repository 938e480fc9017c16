"""A raw PEP 3333 application for the real-nginx compatibility tests.

It offers the same endpoints as ``asgi_app.py`` (see that module's docstring for the list), so
one test suite runs against both adapters. Environment variable ``COMPAT_GATE_DIR`` names the
directory where ``/stream`` waits for its gate file to appear.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

CHUNK = 64 * 1024
MIB = 1024 * 1024
#: Every wait in this app is bounded, so a broken test never hangs a server thread forever.
MAX_WAIT_S = 20.0
PATTERN = bytes(range(256)) * (CHUNK // 256)

StartResponse = Callable[..., Any]


def _server_tasks() -> int:
    """The asyncio tasks of the server's event loop, counted from this app thread.

    A WSGI app runs in a worker thread and has no loop of its own; the server's running loop
    is found among the live objects (a leak check only, called twice per test).
    """
    loops = [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, asyncio.AbstractEventLoop) and obj.is_running()
    ]
    assert len(loops) == 1, loops
    return len(asyncio.all_tasks(loops[0]))


_lock = threading.Lock()
_inflight = 0


def _text(
    start_response: StartResponse, status: str, body: bytes, *extra: tuple[str, str]
) -> list[bytes]:
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response(status, headers + list(extra))
    return [body]


def _json(start_response: StartResponse, obj: object, status: str = "200 OK") -> list[bytes]:
    body = json.dumps(obj).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def _wire(value: str) -> str:
    """A WSGI latin-1 string back to the text the client sent (UTF-8)."""
    return value.encode("latin-1").decode("utf-8", "replace")


class Slow:
    """Ticks every 20 ms for up to MAX_WAIT_S; counts itself in flight until close()."""

    def __init__(self) -> None:
        global _inflight
        with _lock:
            _inflight += 1
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        deadline = time.monotonic() + MAX_WAIT_S
        while time.monotonic() < deadline:
            yield b"tick\n"
            time.sleep(0.02)

    def close(self) -> None:
        global _inflight
        if not self._closed:
            self._closed = True
            with _lock:
                _inflight -= 1


def _stream(gate: str) -> Iterator[bytes]:
    yield b"first\n"
    path = os.path.join(os.environ["COMPAT_GATE_DIR"], os.path.basename(gate))
    deadline = time.monotonic() + MAX_WAIT_S
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            yield b"timeout\n"
            return
        time.sleep(0.01)
    yield b"last\n"


def _big(mib: int) -> Iterator[bytes]:
    for _ in range(mib * MIB // CHUNK):
        yield PATTERN


def _error_after() -> Iterator[bytes]:
    yield b"partial response\n" * 64
    raise RuntimeError("boom after the response started")


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = _wire(environ.get("PATH_INFO", ""))
    method = environ["REQUEST_METHOD"]
    query = parse_qs(environ.get("QUERY_STRING", ""))

    if path == "/hello":
        return _text(start_response, "200 OK", b"Hello, world!\n")
    if path == "/echo":
        digest = hashlib.sha256()
        length = 0
        stream = environ["wsgi.input"]
        while True:
            chunk = stream.read(CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            length += len(chunk)
        return _json(
            start_response,
            {
                "method": method,
                "length": length,
                "sha256": digest.hexdigest(),
                "content_length": environ.get("CONTENT_LENGTH", ""),
            },
        )
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Accel-Buffering", "no")])
        return _stream(query.get("gate", ["gate"])[0])
    if path == "/big":
        mib = int(query.get("mib", ["1"])[0])
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", str(mib * MIB)),
                ("X-Accel-Buffering", "no"),
            ],
        )
        return _big(mib)
    if path == "/cookies":
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/plain"),
                ("Content-Length", "3"),
                ("Set-Cookie", "a=1; Path=/"),
                ("Set-Cookie", "b=2; Path=/; HttpOnly"),
                ("Set-Cookie", "c=3; Path=/; Max-Age=60"),
            ],
        )
        return [b"ok\n"]
    if path == "/status/204":
        start_response("204 No Content", [])
        return []
    if path == "/status/304":
        start_response("304 Not Modified", [("ETag", '"v1"')])
        return []
    if path == "/redirect":
        start_response("302 Found", [("Location", "/hello"), ("Content-Length", "0")])
        return []
    if path == "/moved":
        start_response(
            "301 Moved Permanently",
            [("Location", "http://example.invalid/elsewhere"), ("Content-Length", "0")],
        )
        return []
    if path.startswith("/echo-path"):
        return _json(
            start_response,
            {
                "script_name": _wire(environ.get("SCRIPT_NAME", "")),
                "path_info": path,
                "query": environ.get("QUERY_STRING", ""),
                "request_uri": environ.get("REQUEST_URI", ""),
                "http_proxy": environ.get("HTTP_PROXY"),
                "os_environ_proxy": os.environ.get("HTTP_PROXY"),
            },
        )
    if path == "/error-before":
        raise RuntimeError("boom before the response started")
    if path == "/error-after":
        headers = [("Content-Type", "text/plain")]
        if "buffered" not in query:
            headers.append(("X-Accel-Buffering", "no"))
        start_response("200 OK", headers)
        return _error_after()
    if path == "/slow":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Accel-Buffering", "no")])
        return Slow()
    if path == "/state":
        with _lock:
            inflight = _inflight
        return _json(
            start_response,
            {"threads": threading.active_count(), "tasks": _server_tasks(), "inflight": inflight},
        )
    return _text(start_response, "404 Not Found", b"not found\n")
