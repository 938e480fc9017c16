"""A client that vanishes mid-stream: the real server, a streaming app, a peer that resets.

The application streams with back-to-back ``send`` calls and awaits nothing else (an endless
event stream, a large generated body). The peer reads 64 KiB and resets the connection
(SO_LINGER 0). Before the fix the app's sends neither raised nor suspended: the loop never ran
again (100% CPU, the next client timed out), asyncio logged ``socket.send() raised exception.``
on every send, and on Python 3.13 the process grew by gigabytes a second.

Within a bounded time of the reset: the server's CPU time stops growing, its RSS stays flat,
the error log has at most a few new lines, and the next request is answered at once. Run on
every loop and, by ``tests/run.sh``, on Python 3.13 too. Apps that await between sends, and
WSGI apps, were never affected and must stay so.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

import pytest

from fcgi_async.protocol import NEED_DATA, ClientConnection, RequestEnded, StdoutReceived

from .adapters_helpers import Served, servers, start

__all__ = ["servers"]  # the fixture, used by name

pytestmark = pytest.mark.timeout(90)

#: Bounds of the checks: generous for a noisy 2-core machine.
SETTLE_TIMEOUT_S = 5.0  # the app must have stopped (CPU idle) within this of the reset
NEXT_REQUEST_TIMEOUT_S = 3.0
#: CPU time (s) the server may use over one IDLE_WINDOW_S once idle (a spinning loop uses all).
IDLE_CPU_S = 0.15
IDLE_WINDOW_S = 0.5
#: How much the RSS may grow over the idle window (a leaking loop grows by hundreds of MiB).
RSS_GROWTH_KIB = 8 * 1024
#: Error-log lines the vanishing client may cause (a debug line at most is expected).
MAX_NEW_LOG_LINES = 3
READ_BEFORE_RESET = 64 * 1024

ASGI_APP = '''
import asyncio
import itertools


def generated(n):
    """A 16 KiB chunk of a generated body: some work per chunk, as a real one costs."""
    return b"".join(b"%015d\\n" % i for i in range(n * 1024, n * 1024 + 1024))


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].replace("lifespan.", "")
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    if scope["path"] == "/hello":
        await send({"type": "http.response.body", "body": b"hello"})
        return
    polite = scope["path"] == "/await"
    for n in itertools.count():
        await send({"type": "http.response.body", "body": generated(n), "more_body": True})
        if polite:
            await asyncio.sleep(0)
'''

WSGI_APP = """
import itertools


def generated(n):
    return b"".join(b"%015d\\n" % i for i in range(n * 1024, n * 1024 + 1024))


def app(environ, start_response):
    start_response("200 OK", [])
    if environ["PATH_INFO"] == "/hello":
        return [b"hello"]
    return (generated(n) for n in itertools.count())
"""


def request_bytes(client: ClientConnection, path: str) -> bytes:
    """A GET of ``path`` as request 1, framed by ``client`` (which then parses the answer)."""
    frames: list[bytes | memoryview] = [client.begin_request(1, keep_conn=False)]
    params = {b"REQUEST_METHOD": b"GET", b"REQUEST_URI": path.encode(), b"SCRIPT_NAME": b""}
    frames += client.send_params(1, params)
    frames.append(client.end_stdin(1))
    return b"".join(bytes(f) for f in frames)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def read_then_reset(served: Served, path: str) -> None:
    """Ask for a stream, read READ_BEFORE_RESET bytes of it, then reset the connection."""
    with socket.create_connection(served.address, timeout=10) as s:
        s.sendall(request_bytes(ClientConnection(), path))
        got = 0
        while got < READ_BEFORE_RESET:
            data = s.recv(65536)
            assert data, "the stream ended early"
            got += len(data)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def hello(served: Served) -> bytes:
    """One request for /hello; fails unless answered within NEXT_REQUEST_TIMEOUT_S."""
    client = ClientConnection()
    stdout = b""
    deadline = time.monotonic() + NEXT_REQUEST_TIMEOUT_S
    with socket.create_connection(served.address, timeout=NEXT_REQUEST_TIMEOUT_S) as s:
        s.sendall(request_bytes(client, "/hello"))
        while time.monotonic() < deadline:
            data = s.recv(65536)
            assert data, "EOF before END_REQUEST"
            client.receive_data(data)
            while (event := client.next_event()) is not NEED_DATA:
                if isinstance(event, StdoutReceived):
                    stdout += event.data
                elif isinstance(event, RequestEnded):
                    return stdout.partition(b"\r\n\r\n")[2]
    raise AssertionError(f"/hello not answered within {NEXT_REQUEST_TIMEOUT_S} s")


def wait_idle(pid: int) -> None:
    """Return once the process used at most IDLE_CPU_S over one IDLE_WINDOW_S; fail after
    SETTLE_TIMEOUT_S."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    before = cpu_seconds(pid)
    while True:
        time.sleep(IDLE_WINDOW_S)  # a measuring window, not synchronization
        after = cpu_seconds(pid)
        if after - before <= IDLE_CPU_S:
            return
        assert time.monotonic() < deadline, f"still busy: {after - before:.2f} s CPU per window"
        before = after


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize(
    ("interface", "path"),
    [("asgi", "/spin"), ("asgi", "/await"), ("wsgi", "/stream")],
    ids=["asgi-back-to-back", "asgi-awaiting", "wsgi"],
)
def test_a_client_that_resets_mid_stream_stops_the_app(
    servers: list[Served], tmp_path: Path, interface: str, path: str, loop: str
) -> None:
    app = ASGI_APP if interface == "asgi" else WSGI_APP
    served = start(servers, tmp_path, app, "--interface", interface, "--loop", loop)
    pid = served.proc.pid
    assert hello(served) == b"hello"
    lines_before = len(served.log_lines())

    read_then_reset(served, path)
    wait_idle(pid)
    rss = rss_kib(pid)
    cpu = cpu_seconds(pid)
    assert hello(served) == b"hello"  # the next client is served at once
    time.sleep(IDLE_WINDOW_S)  # a measuring window: nothing may run or grow meanwhile
    assert cpu_seconds(pid) - cpu <= IDLE_CPU_S + 0.1  # + serving one /hello
    assert rss_kib(pid) - rss <= RSS_GROWTH_KIB
    new_lines = served.log_lines()[lines_before:]
    assert len(new_lines) <= MAX_NEW_LOG_LINES, new_lines
    assert served.proc.poll() is None
