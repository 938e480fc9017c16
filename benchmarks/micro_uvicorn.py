"""uvicorn's per-request CPU cost, in-process: the yardstick for ``benchmarks/micro.py asgi``.

Feeds the bytes of one keep-alive ``GET /hello`` into uvicorn's own httptools protocol with the
fake transport of ``micro.py``, one request at a time, with the same hello app (or the
Starlette one), and reports µs per request. Wall-clock figures drift with the machine; count
instructions instead, which repeat exactly (see benchmarks/README.md, "In-process cost")::

    .venv/bin/python benchmarks/micro_uvicorn.py [asgi|starlette] [N]
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from micro import FakeTransport, asgi_hello

REQUEST = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:8181\r\nUser-Agent: wrk\r\n\r\n"


class Transport(FakeTransport):
    """What uvicorn asks of a transport beyond micro.py's."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8181)}.get(
            name, default
        )

    def set_write_buffer_limits(self, *args: Any, **kwargs: Any) -> None: ...


async def measure(app: Any, n: int) -> float:
    """Serve ``n`` requests one after another; return µs per request."""
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    config = Config(app=app, lifespan="off", access_log=False)
    config.load()
    proto = HttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    proto.connection_made(transport)  # type: ignore[arg-type]

    async def serve(count: int) -> None:
        for _ in range(count):
            proto.data_received(REQUEST)
            while proto.cycle is not None and not proto.cycle.response_complete:  # noqa: ASYNC110
                await asyncio.sleep(0)  # yield so the request task runs

    await serve(min(n, 500))  # warm up
    start = time.perf_counter()
    await serve(n)
    elapsed = time.perf_counter() - start
    if transport.writes < n:
        raise RuntimeError(f"uvicorn wrote {transport.writes} times for {n} requests")
    return elapsed / n * 1e6


def main() -> None:
    """Parse argv and print the result."""
    kind = sys.argv[1] if len(sys.argv) > 1 else "asgi"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 50_000
    app: Any = asgi_hello
    if kind == "starlette":
        sys.path.insert(0, str(Path(__file__).parent / "apps"))
        from starlette_app import app
    import uvloop

    us = uvloop.run(measure(app, n))
    print(f"uvicorn {kind}: {us:.1f} us/request, {1e6 / us:,.0f} requests/s on one core")


if __name__ == "__main__":
    main()
