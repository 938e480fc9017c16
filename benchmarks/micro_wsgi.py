"""In-process cost of the WSGI adapter's per-request path, with many requests in flight.

Not part of the harness (``run.py``): no nginx, no sockets. It drives the real server protocol
(codec, request handles, the adapter and its worker threads) over ``--conns`` fake keep-alive
connections, each sending its next nginx-shaped ``GET /hello`` as soon as the previous response's
END_REQUEST is written, so ``--conns`` requests are always in flight, as behind nginx with
``wrk -c32``. The app is the 13-byte raw WSGI hello of ``apps/raw_wsgi.py`` (``--app`` for
others).

It reports, per implementation, the median over ``--rounds`` of wall time and of CPU time (the
process's, all threads: what the request costs us on a shared machine) per request. Give
``--impl PATH`` several times to compare versions of ``adapters/wsgi.py`` A/B in one process;
rounds alternate between them so that drift on a busy machine hits all alike::

    git show HEAD:adapters/wsgi.py > /tmp/wsgi_head.py
    .venv/bin/python benchmarks/micro_wsgi.py --impl /tmp/wsgi_head.py --impl adapters/wsgi.py

``--app stream`` measures the hops back to the loop of a streamed body. ``--conns 1``
measures one request at a time (latency-bound: every request waits for a thread
to wake up).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from fcgi_async.config import Config
from fcgi_async.protocol import ClientConnection
from fcgi_async.server.connection import FastCGIProtocol
from fcgi_async.server.state import ServerState

# What nginx sends with the stock fastcgi_params and the harness's root mount, for `wrk`.
PARAMS = {
    b"QUERY_STRING": b"",
    b"REQUEST_METHOD": b"GET",
    b"CONTENT_TYPE": b"",
    b"CONTENT_LENGTH": b"",
    b"SCRIPT_NAME": b"",
    b"PATH_INFO": b"/hello",
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
    b"SERVER_NAME": b"localhost",
    b"REDIRECT_STATUS": b"200",
    b"HTTP_HOST": b"127.0.0.1:8181",
}


def _request_bytes() -> bytes:
    client = ClientConnection()
    begin = client.begin_request(1, keep_conn=True)
    params = b"".join(bytes(b) for b in client.send_params(1, PARAMS))
    return begin + params + client.end_stdin(1)


REQUEST = _request_bytes()


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """The raw WSGI hello of ``benchmarks/apps/raw_wsgi.py``."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world!"]


ONE_MIB = b"x" * (1024 * 1024)


def one_mib(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """The 1 MiB response of ``benchmarks/apps/raw_wsgi.py`` (``/1mib``)."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "1048576")])
    return [ONE_MIB]


def stream(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
    """A streamed body (a generator, no Content-Length): one hop to the loop per chunk."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    for _ in range(STREAM_CHUNKS):
        yield b"x" * 1024


def flask() -> Any:
    """The Flask hello of ``benchmarks/apps/flask_app.py``."""
    sys.path.insert(0, str(Path(__file__).parent / "apps"))
    from flask_app import app

    return app


STREAM_CHUNKS = 8
APPS: dict[str, Callable[[], Any]] = {
    "hello": lambda: hello,
    "stream": lambda: stream,
    "1mib": lambda: one_mib,
    "flask": flask,
}


class _Conn:
    """A fake transport: sends the next request once the previous one is finished."""

    def __init__(self, bench: _Bench, state: ServerState) -> None:
        self.bench = bench
        self.proto = FastCGIProtocol(state)
        self.busy = False
        #: Set to a list to record what is written (the warm-up checks the response).
        self.written: list[bytes] | None = None
        self.proto.connection_made(self)  # type: ignore[arg-type]

    # -- transport -----------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.written is not None:
            self.written.append(bytes(data))
        self.bench.loop.call_soon(self.check)

    def writelines(self, data: Iterable[bytes]) -> None:
        if self.written is not None:
            self.written.extend(bytes(d) for d in data)
        self.bench.loop.call_soon(self.check)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        raise AssertionError("the benchmark connection was closed")

    abort = close

    # -- client ---------------------------------------------------------------------------
    def send(self) -> None:
        self.busy = True
        self.proto.data_received(REQUEST)

    def check(self) -> None:
        if self.busy and not self.proto.requests:
            self.busy = False
            self.bench.finished(self)


class _Bench:
    def __init__(self, loop: asyncio.AbstractEventLoop, app: Any, conns: int) -> None:
        self.loop = loop
        state = ServerState(Config(), app, loop)
        self.conns = [_Conn(self, state) for _ in range(conns)]
        self.to_send = 0
        self.left = 0
        self.done: asyncio.Future[None] | None = None

    def finished(self, conn: _Conn) -> None:
        self.left -= 1
        if self.to_send:
            self.to_send -= 1
            conn.send()
        elif not self.left and self.done is not None:
            self.done.set_result(None)

    async def run(self, requests: int) -> tuple[float, float, float]:
        """Serve ``requests`` requests; (wall s, CPU s, context switches)."""
        self.done = self.loop.create_future()
        self.left = requests
        self.to_send = requests
        switches0 = _switches()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for conn in self.conns:
            if self.to_send:
                self.to_send -= 1
                conn.send()
        await self.done
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        return wall, cpu, _switches() - switches0


def _switches() -> int:
    """Context switches of this process so far, all threads (voluntary and not)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw + usage.ru_nivcsw


def _load(path: str, index: int) -> ModuleType:
    if path == "installed":
        import fcgi_async.adapters.wsgi as module

        return module
    spec = importlib.util.spec_from_file_location(f"_wsgi_impl_{index}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def _main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    benches: list[tuple[str, _Bench, Any]] = []
    for i, path in enumerate(args.impl or ["installed"]):
        adapter = _load(path, i).WSGIAdapter(APPS[args.app](), threads=args.threads)
        await adapter.startup()
        bench = _Bench(loop, adapter, args.conns)
        first = bench.conns[0]
        first.written = []
        await bench.run(max(args.requests // 10, 200))  # warm-up: threads, caches
        head = b"".join(first.written[:4])[:4096]
        if b"Status: 200 OK" not in head or (args.app == "hello" and b"Hello, world!" not in head):
            raise SystemExit(f"{path}: wrong response {head[:200]!r}")
        first.written = None
        benches.append((path, bench, adapter))
    walls: dict[str, list[float]] = {path: [] for path, _, _ in benches}
    cpus: dict[str, list[float]] = {path: [] for path, _, _ in benches}
    switches: dict[str, list[float]] = {path: [] for path, _, _ in benches}
    for r in range(args.rounds):
        order = benches if r % 2 == 0 else benches[::-1]
        for path, bench, _ in order:
            wall, cpu, switched = await bench.run(args.requests)
            walls[path].append(wall / args.requests * 1e6)
            cpus[path].append(cpu / args.requests * 1e6)
            switches[path].append(switched / args.requests)
    for _, _, adapter in benches:
        await adapter.shutdown()
    print(
        f"{args.conns} connections, {args.requests} requests x {args.rounds} rounds, "
        f"app={args.app}, threads={args.threads}, loop={args.loop}; medians:"
    )
    for path, _, _ in benches:
        wall = statistics.median(walls[path])
        cpu = statistics.median(cpus[path])
        spread = f"{min(cpus[path]):.1f}-{max(cpus[path]):.1f}"
        print(
            f"  {path}: {wall:6.1f} us/req wall ({1e6 / wall:,.0f} req/s), "
            f"{cpu:6.1f} us/req CPU (range {spread}), "
            f"{statistics.median(switches[path]):.2f} context switches/req"
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impl", action="append", help="path of a wsgi.py to load (repeatable)")
    p.add_argument("--conns", type=int, default=32, help="requests in flight (32)")
    p.add_argument("--requests", type=int, default=20000, help="requests per round (20000)")
    p.add_argument("--rounds", type=int, default=5, help="rounds per implementation (5)")
    p.add_argument("--threads", type=int, default=10, help="the adapter's threads (10)")
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    p.add_argument(
        "--app",
        choices=sorted(APPS),
        default="hello",
        help=f"hello (the default), flask, or stream ({STREAM_CHUNKS} chunks of 1 KiB, one hop "
        "each)",
    )
    args = p.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(_main(args))
    else:
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
