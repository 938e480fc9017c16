"""Raw WSGI (PEP 3333) app for the benchmarks, the twin of ``raw_asgi``.

``/hello`` answers the 13 bytes ``Hello, world!``; ``/1mib`` answers 1 MiB; ``/upload`` reads
the whole request body and answers its length in bytes; ``/stream`` yields 16 MiB in 64 KiB
chunks (no Content-Length), for the soak's clients that vanish mid-response. Any other path is
``/hello``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

HELLO = b"Hello, world!"
ONE_MIB = b"x" * (1024 * 1024)
_CHUNK = 64 * 1024
_HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "13")]
#: ``/stream``: as in ``raw_asgi``, long but bounded.
STREAM_CHUNK = b"s" * (64 * 1024)
STREAM_CHUNKS = 256


def _stream() -> Iterable[bytes]:
    for _ in range(STREAM_CHUNKS):
        yield STREAM_CHUNK


def _headers(body: bytes) -> list[tuple[str, str]]:
    return [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/1mib":
        start_response("200 OK", _headers(ONE_MIB))
        return [ONE_MIB]
    if path == "/upload":
        stream = environ["wsgi.input"]
        remaining = int(environ.get("CONTENT_LENGTH") or 0)
        size = 0
        while remaining > 0:
            chunk = stream.read(min(_CHUNK, remaining))
            if not chunk:
                break
            size += len(chunk)
            remaining -= len(chunk)
        body = str(size).encode()
        start_response("200 OK", _headers(body))
        return [body]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _stream()
    start_response("200 OK", _HELLO_HEADERS)
    return [HELLO]
