"""A raw ASGI 3 application for the real-nginx compatibility tests.

Endpoints (the same in ``wsgi_app.py``; paths are relative to the mount, ``root_path``):

* ``/hello`` - a short text body with Content-Length.
* ``/echo`` - the request body's length and sha256, and CONTENT_LENGTH as sent.
* ``/stream?gate=NAME`` - "first", then waits (at most 20 s) until ``$COMPAT_GATE_DIR/NAME``
  exists, then "last" ("timeout" instead if it never appears).
* ``/big?mib=N`` - N MiB in 64 KiB chunks, unbuffered by nginx (``X-Accel-Buffering: no``).
* ``/cookies`` - three Set-Cookie headers. ``/status/204``, ``/status/304``.
* ``/redirect`` (302 to /hello), ``/moved`` (301 to an absolute URL).
* ``/echo-path...`` - the mount, the path below it, the query and REQUEST_URI.
* ``/error-before`` - raises before starting the response (expect a 500).
* ``/error-after[?buffered]`` - raises after the first chunk (expect a failed response).
* ``/slow`` - ticks every 20 ms for up to 20 s; counted in flight until it ends.
* ``/state`` - threads, asyncio tasks and slow responses in flight, for leak checks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
from typing import Any
from urllib.parse import parse_qs

CHUNK = 64 * 1024
MIB = 1024 * 1024
MAX_WAIT_S = 20.0
#: How long /error-after streams before it fails.
FAIL_AFTER_S = 0.2
PATTERN = bytes(range(256)) * (CHUNK // 256)

Scope = dict[str, Any]
_inflight = 0


async def _start(send: Any, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _body(send: Any, body: bytes, more: bool = False) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": more})


async def _text(send: Any, status: int, body: bytes, *extra: tuple[bytes, bytes]) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    headers.append((b"content-length", str(len(body)).encode()))
    await _start(send, status, headers + list(extra))
    await _body(send, body)


async def _json(send: Any, obj: object, status: int = 200) -> None:
    body = json.dumps(obj).encode()
    headers = [(b"content-type", b"application/json")]
    headers.append((b"content-length", str(len(body)).encode()))
    await _start(send, status, headers)
    await _body(send, body)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


async def app(scope: Scope, receive: Any, send: Any) -> None:
    global _inflight
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    root = scope.get("root_path", "")
    full = scope["path"]
    path = full[len(root) :] if root and full.startswith(root) else full
    query = parse_qs(scope["query_string"].decode("latin-1"))
    nobuf = (b"x-accel-buffering", b"no")

    if path == "/hello":
        await _text(send, 200, b"Hello, world!\n")
    elif path == "/echo":
        digest = hashlib.sha256()
        length = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunk = message.get("body", b"")
            digest.update(chunk)
            length += len(chunk)
            if not message.get("more_body", False):
                break
        await _json(
            send,
            {
                "method": scope["method"],
                "length": length,
                "sha256": digest.hexdigest(),
                "content_length": _header(scope, b"content-length"),
            },
        )
    elif path == "/stream":
        await _start(send, 200, [(b"content-type", b"text/plain"), nobuf])
        await _body(send, b"first\n", more=True)
        gate = os.path.basename(query.get("gate", ["gate"])[0])
        gate_path = os.path.join(os.environ["COMPAT_GATE_DIR"], gate)
        deadline = time.monotonic() + MAX_WAIT_S
        while not os.path.exists(gate_path):  # noqa: ASYNC240 - a stat in tmp, polled
            if time.monotonic() > deadline:
                await _body(send, b"timeout\n")
                return
            await asyncio.sleep(0.01)
        await _body(send, b"last\n")
    elif path == "/big":
        mib = int(query.get("mib", ["1"])[0])
        size = str(mib * MIB).encode()
        await _start(
            send,
            200,
            [(b"content-type", b"application/octet-stream"), (b"content-length", size), nobuf],
        )
        for _ in range(mib * MIB // CHUNK):
            await _body(send, PATTERN, more=True)
        await _body(send, b"")
    elif path == "/cookies":
        await _text(
            send,
            200,
            b"ok\n",
            (b"set-cookie", b"a=1; Path=/"),
            (b"set-cookie", b"b=2; Path=/; HttpOnly"),
            (b"set-cookie", b"c=3; Path=/; Max-Age=60"),
        )
    elif path == "/status/204":
        await _start(send, 204, [])
        await _body(send, b"")
    elif path == "/status/304":
        await _start(send, 304, [(b"etag", b'"v1"')])
        await _body(send, b"")
    elif path == "/redirect":
        await _start(send, 302, [(b"location", b"/hello"), (b"content-length", b"0")])
        await _body(send, b"")
    elif path == "/moved":
        location = b"http://example.invalid/elsewhere"
        await _start(send, 301, [(b"location", location), (b"content-length", b"0")])
        await _body(send, b"")
    elif path.startswith("/echo-path"):
        await _json(
            send,
            {
                "script_name": root,
                "path_info": path,
                "query": scope["query_string"].decode("latin-1"),
                "request_uri": scope.get("raw_path", b"").decode("latin-1")
                + ("?" + scope["query_string"].decode("latin-1") if scope["query_string"] else ""),
                "http_proxy": _header(scope, b"proxy") or None,
                "os_environ_proxy": os.environ.get("HTTP_PROXY"),
            },
        )
    elif path == "/error-before":
        raise RuntimeError("boom before the response started")
    elif path == "/error-after":
        headers = [(b"content-type", b"text/plain")]
        if "buffered" not in query:
            headers.append(nobuf)
        await _start(send, 200, headers)
        await _body(send, b"partial response\n" * 64, more=True)
        # Fail a moment later, as an app failing mid-way does. A failure written in the same
        # loop turn as the headers reaches the front in the same read; lighttpd has then sent
        # nothing yet and buffers it like stream-response-body = 0 (a clean-looking 200), which
        # made this test depend on the machine's load.
        await asyncio.sleep(FAIL_AFTER_S)
        raise RuntimeError("boom after the response started")
    elif path == "/slow":
        _inflight += 1
        try:
            await _start(send, 200, [(b"content-type", b"text/plain"), nobuf])
            deadline = time.monotonic() + MAX_WAIT_S
            while time.monotonic() < deadline:
                await _body(send, b"tick\n", more=True)
                await asyncio.sleep(0.02)
            await _body(send, b"")
        except OSError:
            return  # The client went away: ASGI send() raises an OSError subclass.
        finally:
            _inflight -= 1
    elif path == "/state":
        await _json(
            send,
            {
                "threads": threading.active_count(),
                "tasks": len(asyncio.all_tasks()),
                "inflight": _inflight,
            },
        )
    else:
        await _text(send, 404, b"not found\n")
