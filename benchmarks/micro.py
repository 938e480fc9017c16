"""Per-request CPU cost of fcgi-async's server path, in-process (no nginx, no sockets).

Feeds the bytes nginx sends for a GET (BEGIN_REQUEST, 20 params, empty STDIN) into one
FastCGIProtocol with a fake transport, one request at a time, and reports µs per request.
It isolates our code from the load generator and the web server, so A/B comparisons of a
change are meaningful even on a busy machine (run each side a few times, compare medians).

    .venv/bin/python benchmarks/micro.py raw|asgi|wsgi|starlette [N] [prof]

``raw`` is an Application answering directly (codec + server glue only); ``asgi``/``wsgi``
add the adapters with a hello app; ``starlette`` serves ``apps/starlette_app.py`` (the
yardstick is ``micro_uvicorn.py starlette``). ``prof`` prints the top of a cProfile run.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import sys
import time
from pathlib import Path
from typing import Any

from fcgi_async.config import Config
from fcgi_async.protocol import ClientConnection
from fcgi_async.server.connection import FastCGIProtocol
from fcgi_async.server.state import ServerState
from fcgi_async.types import Application, Request

PARAMS = {
    b"QUERY_STRING": b"",
    b"REQUEST_METHOD": b"GET",
    b"CONTENT_TYPE": b"",
    b"CONTENT_LENGTH": b"",
    b"SCRIPT_NAME": b"/hello",
    b"REQUEST_URI": b"/hello",
    b"DOCUMENT_URI": b"/hello",
    b"DOCUMENT_ROOT": b"/usr/share/nginx/html",
    b"SERVER_PROTOCOL": b"HTTP/1.1",
    b"REQUEST_SCHEME": b"http",
    b"GATEWAY_INTERFACE": b"CGI/1.1",
    b"SERVER_SOFTWARE": b"nginx/1.22.1",
    b"REMOTE_ADDR": b"127.0.0.1",
    b"REMOTE_PORT": b"40000",
    b"SERVER_ADDR": b"127.0.0.1",
    b"SERVER_PORT": b"8181",
    b"SERVER_NAME": b"",
    b"REDIRECT_STATUS": b"200",
    b"HTTP_HOST": b"127.0.0.1:8181",
    b"HTTP_USER_AGENT": b"wrk",
}
HELLO = b"Hello, world!"


def nginx_request() -> bytes:
    """The bytes of one keep-alive GET as nginx frames it."""
    client = ClientConnection()
    return (
        client.begin_request(1, keep_conn=True)
        + b"".join(bytes(b) for b in client.send_params(1, PARAMS))
        + client.end_stdin(1)
    )


class FakeTransport:
    """Counts writes; everything else is a no-op."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: Any) -> None:
        self.writes += 1

    def writelines(self, data: Any) -> None:
        self.writes += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...

    def is_closing(self) -> bool:
        return False


class RawHello:
    """An Application that answers without any adapter."""

    async def __call__(self, request: Request) -> None:
        await request.end(
            b"Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n" + HELLO
        )

    async def startup(self) -> None: ...
    async def shutdown(self) -> None: ...


async def asgi_hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
        }
    )
    await send({"type": "http.response.body", "body": HELLO})


def wsgi_hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]


def make_app(kind: str) -> Application:
    """The Application for ``kind``."""
    if kind == "asgi":
        from fcgi_async.adapters.asgi import ASGIAdapter

        return ASGIAdapter(asgi_hello, lifespan="off")
    if kind == "starlette":
        from fcgi_async.adapters.asgi import ASGIAdapter

        sys.path.insert(0, str(Path(__file__).parent / "apps"))
        from starlette_app import app as starlette_app

        return ASGIAdapter(starlette_app, lifespan="off")
    if kind == "wsgi":
        from fcgi_async.adapters.wsgi import WSGIAdapter

        return WSGIAdapter(wsgi_hello)
    return RawHello()


async def measure(kind: str, n: int, profile: bool) -> float:
    """Serve ``n`` requests one after another; return µs per request."""
    loop = asyncio.get_running_loop()
    app = make_app(kind)
    await app.startup()
    proto = FastCGIProtocol(ServerState(Config(), app, loop))
    transport = FakeTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    request = nginx_request()

    async def serve(count: int) -> None:
        for _ in range(count):
            proto.data_received(request)
            while proto.requests:  # noqa: ASYNC110 - yield so the request task runs
                await asyncio.sleep(0)

    await serve(min(n, 500))  # warm up
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    start = time.perf_counter()
    await serve(n)
    elapsed = time.perf_counter() - start
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    await app.shutdown()
    return elapsed / n * 1e6


def main() -> None:
    """Parse argv and print the result."""
    kind = sys.argv[1] if len(sys.argv) > 1 else "raw"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 50_000
    profile = "prof" in sys.argv
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    us = runner(measure(kind, n, profile))
    print(f"{kind}: {us:.1f} us/request, {1e6 / us:,.0f} requests/s on one core, in-process")


if __name__ == "__main__":
    main()
