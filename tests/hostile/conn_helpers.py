"""A real ``fcgi-async`` process and raw-socket peers that misbehave, for the hostile tests.

The server runs as a subprocess (``python -m fcgi_async``) serving :func:`app` from this
module on a free loopback port, its log in a file the test reads. Peers are plain blocking
sockets that speak FastCGI by hand, so they can stop reading, flood, hoard or half-close.
Memory is the worker's resident set, read from ``/proc/PID/status`` outside the process.
Every loop here is bounded in bytes and in seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcgi_async.protocol import NEED_DATA, ClientConnection, RequestEnded, StdoutReceived

ROOT = Path(__file__).resolve().parents[2]
#: How long the server may take to start (imports on a busy 2-core machine included).
START_TIMEOUT_S = 30.0
#: How long one ordinary request may take.
REQUEST_TIMEOUT_S = 10.0
#: A send that makes no progress for this long means the server stopped reading.
STALL_S = 2.0
#: What one flooding peer sends at most, and for how long it tries.
FLOOD_MAX_BYTES = 24 * 1024 * 1024
FLOOD_MAX_S = 20.0
#: The response size of ``/big``: more than any socket buffer takes, so some stays ours.
BIG_RESPONSE_BYTES = 8 * 1024 * 1024
#: How long ``/slow`` works before it answers.
SLOW_S = 0.5
MIB = 1024 * 1024


# ------------------------------------------------------------------------------- the app


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI app the server runs: ``/big`` (8 MiB in one message), ``/hold`` (never reads
    its body nor answers), ``/slow`` (answers after SLOW_S), anything else ``hello``."""
    import asyncio

    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/hold":
        await asyncio.Event().wait()
    if path == "/slow":
        await asyncio.sleep(SLOW_S)  # the app's work, not a synchronization
    body = b"x" * BIG_RESPONSE_BYTES if path == "/big" else path.encode() + b" hello"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------- the server


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """A running ``fcgi-async`` process (inline: the worker is the process itself)."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens."""
        return ("127.0.0.1", self.port)

    def rss_kib(self) -> int:
        """The process's resident set size (VmRSS), in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc status")  # pragma: no cover

    def peak_rss_kib(self, within_s: float = 1.0) -> int:
        """The highest VmRSS seen over ``within_s`` seconds (sampled every 50 ms): the server
        may still be working through what the kernel had buffered for it."""
        deadline = time.monotonic() + within_s
        peak = self.rss_kib()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            peak = max(peak, self.rss_kib())
        return peak

    def log(self) -> str:
        """Everything the server logged so far."""
        return self.log_path.read_text(errors="replace")

    def log_lines(self, needle: str) -> list[str]:
        """The log lines containing ``needle``."""
        return [line for line in self.log().splitlines() if needle in line]

    def wait_for_log(self, needle: str, within_s: float = 10.0) -> list[str]:
        """Wait (bounded) until a log line contains ``needle``; return the matching lines."""
        lines: list[str] = wait_for(lambda: self.log_lines(needle), within_s, f"log {needle!r}")
        return lines


def wait_for(cond: Callable[[], Any], within_s: float, what: str) -> Any:
    """Poll ``cond()`` every 50 ms until it is truthy; fail after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within_s} s")
        time.sleep(0.05)


@contextlib.contextmanager
def run_server(tmp_path: Path, *flags: str) -> Iterator[ServerProcess]:
    """Start ``python -m fcgi_async`` with this module's app; stop it (TERM, then KILL)."""
    port = free_port()
    log_path = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FCGI_ASYNC_")}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fcgi_async",
                "tests.hostile.conn_helpers:app",
                "--app-dir",
                str(ROOT),
                "--interface",
                "asgi",
                "--bind",
                f"127.0.0.1:{port}",
                # /hold requests never end by themselves: shutdown must not wait long for them.
                "--graceful-timeout",
                "1",
                *flags,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            cwd=str(ROOT),
        )
    server = ServerProcess(proc, port, log_path)
    try:
        wait_for(lambda: _accepts(server), START_TIMEOUT_S, f"server start ({server.log()})")
        # The probe may still hold a --max-connections 1 slot for a moment: ask until served.
        wait_for(lambda: try_request(server.address, "/") == b"/ hello", 10, "first answer")
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _accepts(server: ServerProcess) -> bool:
    if server.proc.poll() is not None:
        raise AssertionError(f"the server exited: {server.log()}")
    try:
        socket.create_connection(server.address, timeout=1).close()
    except OSError:
        return False
    return True


# ----------------------------------------------------------------------------- the peers


def frame_request(
    rid: int, uri: str, body: bytes | None = b"", *, codec: ClientConnection | None = None
) -> bytes:
    """BEGIN_REQUEST (keep-conn), the params of a GET of ``uri``, and the STDIN stream
    (all of ``body`` and its end; None: none of it)."""
    c = codec or ClientConnection()
    params = {
        b"REQUEST_METHOD": b"GET",
        b"REQUEST_URI": uri.encode(),
        b"SCRIPT_NAME": uri.encode(),
        b"SERVER_PROTOCOL": b"HTTP/1.1",
    }
    out = bytearray(c.begin_request(rid))
    for part in c.send_params(rid, params):
        out += part
    if body is not None:
        for part in c.send_stdin(rid, body):
            out += part
        out += c.end_stdin(rid)
    return bytes(out)


def read_answer(sock: socket.socket, within_s: float = REQUEST_TIMEOUT_S) -> bytes | None:
    """Read one request's STDOUT until its END_REQUEST; None if the server closed first."""
    codec = ClientConnection()
    codec.begin_request(1)  # marks id 1 active, so its records are accepted
    stdout = bytearray()
    deadline = time.monotonic() + within_s
    while True:
        event = codec.next_event()
        if event is NEED_DATA:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                return None
            if not data:
                return None
            codec.receive_data(data)
        elif isinstance(event, StdoutReceived):
            stdout += event.data
        elif isinstance(event, RequestEnded):
            return bytes(stdout).partition(b"\r\n\r\n")[2]


def request(address: tuple[str, int], uri: str) -> bytes | None:
    """One GET on a fresh connection; the body, or None if the connection was refused."""
    with socket.create_connection(address, timeout=REQUEST_TIMEOUT_S) as sock:
        sock.sendall(frame_request(1, uri))
        return read_answer(sock)


def try_request(address: tuple[str, int], uri: str) -> bytes | None:
    """:func:`request`, with None also when the connection failed."""
    try:
        return request(address, uri)
    except OSError:
        return None


def non_reading_socket(address: tuple[str, int]) -> socket.socket:
    """A connection with a tiny receive buffer that its owner never reads: unread output
    stays in the server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(REQUEST_TIMEOUT_S)
    sock.connect(address)
    return sock


def flood(sock: socket.socket, chunk: bytes, max_bytes: int = FLOOD_MAX_BYTES) -> int:
    """Send ``chunk`` again and again until the server stops taking it (no progress for
    STALL_S), closes, or the byte and time bounds are reached. Returns the bytes sent."""
    sent = 0
    deadline = time.monotonic() + FLOOD_MAX_S
    sock.settimeout(STALL_S)
    while sent < max_bytes and time.monotonic() < deadline:
        try:
            sock.sendall(chunk)
        except TimeoutError:
            break  # the server stopped reading
        except OSError:
            break  # the server closed the connection
        sent += len(chunk)
    return sent
