"""Open N keep-alive connections straight to a backend's unix socket, use each once, hold them.

Usage: ``holdconns.py fastcgi|http SOCKET_PATH [--count 1000] [--timeout 30]``

Each connection sends one request for ``/hello`` (FastCGI with FCGI_KEEP_CONN, or HTTP/1.1
keep-alive), reads the whole response, and then stays open and idle, the way nginx's upstream
keep-alive cache holds them. When every connection is done the script prints one line,
``READY ok=N failed=M``, and holds until its stdin closes (or ``--hold`` seconds pass).

This file is standalone (no imports from the project) so that it measures the server only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import struct
import sys

_HEADER = struct.Struct(">BBHHBx")
_BEGIN, _END, _PARAMS, _STDIN, _STDOUT = 1, 3, 4, 5, 6
_RESPONDER, _KEEP_CONN = 1, 1
#: Connection attempts in flight at once: stays below the listen backlog (511).
_CONNECT_PARALLEL = 100


def _pair(name: bytes, value: bytes) -> bytes:
    def length(n: int) -> bytes:
        return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)

    return length(len(name)) + length(len(value)) + name + value


def _record(rtype: int, content: bytes, request_id: int = 1) -> bytes:
    pad = -len(content) % 8
    return _HEADER.pack(1, rtype, request_id, len(content), pad) + content + b"\0" * pad


def fastcgi_request() -> bytes:
    params = b"".join(
        _pair(k, v)
        for k, v in (
            (b"REQUEST_METHOD", b"GET"),
            (b"SCRIPT_NAME", b""),
            (b"PATH_INFO", b"/hello"),
            (b"REQUEST_URI", b"/hello"),
            (b"QUERY_STRING", b""),
            (b"CONTENT_TYPE", b""),
            (b"CONTENT_LENGTH", b""),
            (b"SERVER_PROTOCOL", b"HTTP/1.1"),
            (b"SERVER_NAME", b"bench"),
            (b"SERVER_PORT", b"80"),
            (b"REMOTE_ADDR", b"127.0.0.1"),
            (b"REMOTE_PORT", b"40000"),
            (b"GATEWAY_INTERFACE", b"CGI/1.1"),
        )
    )
    return (
        _record(_BEGIN, struct.pack(">HB5x", _RESPONDER, _KEEP_CONN))
        + _record(_PARAMS, params)
        + _record(_PARAMS, b"")
        + _record(_STDIN, b"")
    )


async def _fastcgi_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(fastcgi_request())
    await writer.drain()
    while True:
        header = await reader.readexactly(8)
        _, rtype, _, length, pad = _HEADER.unpack(header)
        await reader.readexactly(length + pad)
        if rtype == _END:
            return


async def _http_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)


async def main_async(args: argparse.Namespace) -> int:
    once = _fastcgi_once if args.protocol == "fastcgi" else _http_once
    gate = asyncio.Semaphore(_CONNECT_PARALLEL)
    writers: list[asyncio.StreamWriter] = []
    failures: list[str] = []

    async def one() -> None:
        async with gate:
            try:
                reader, writer = await asyncio.open_unix_connection(args.socket)
            except OSError as exc:
                failures.append(f"connect: {exc}")
                return
            try:
                await once(reader, writer)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                failures.append(f"request: {exc!r}")
                writer.close()
                return
            writers.append(writer)

    try:
        await asyncio.wait_for(
            asyncio.gather(*(one() for _ in range(args.count))), timeout=args.timeout
        )
    except asyncio.TimeoutError:
        failures.append("timeout")
    ok = len(writers)
    failed = args.count - ok
    reason = f" first_error={failures[0]!r}" if failures else ""
    print(f"READY ok={ok} failed={failed}{reason}", flush=True)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.read), timeout=args.hold)
    for writer in writers:
        writer.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("protocol", choices=["fastcgi", "http"])
    parser.add_argument("socket")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to set them all up")
    parser.add_argument("--hold", type=float, default=120.0, help="seconds to hold at most")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.count + 64:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
