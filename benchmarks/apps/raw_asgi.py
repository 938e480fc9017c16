"""Raw ASGI 3 app for the benchmarks: no framework, the least a server can be asked to do.

``/hello`` answers the 13 bytes ``Hello, world!``; ``/1mib`` answers 1 MiB; ``/upload`` reads
the whole request body and answers its length in bytes; ``/stream`` answers 16 MiB in 64 KiB
``more_body`` messages (no Content-Length), for the soak's clients that vanish mid-response. Any
other path is ``/hello``.
"""

from __future__ import annotations

from typing import Any

HELLO = b"Hello, world!"
ONE_MIB = b"x" * (1024 * 1024)
#: ``/stream``: long enough that a client vanishing after its first KiBs leaves the app sending,
#: bounded so that a server that never notices still finishes each stream.
STREAM_CHUNK = b"s" * (64 * 1024)
STREAM_CHUNKS = 256

_HELLO_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
}
_HELLO_BODY = {"type": "http.response.body", "body": HELLO}


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _respond(send: Any, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path = scope["path"]
    if path == "/1mib":
        await _respond(send, ONE_MIB)
    elif path == "/upload":
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        await _respond(send, str(size).encode())
    elif path == "/stream":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        for _ in range(STREAM_CHUNKS):
            await send({"type": "http.response.body", "body": STREAM_CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await send(_HELLO_START)
        await send(_HELLO_BODY)
