"""The FastCGI client against a hostile FastCGI server on a raw socket.

The server runs in threads of this process on 127.0.0.1 (port 0), frames its records by hand
(no codec of ours), and (a) accepts and never answers, (b) streams STDOUT forever, or (c)
streams STDERR forever. The client keeps its defaults except where a test must finish fast
(the read or write timeout), raises its typed errors, and this process's resident memory
(VmRSS, sampled from /proc/self/status while the request runs) stays within a generous bound.
(d) sends a CGI header block that never ends, which must stop at the header cap.
Every flood is bounded: it stops when the client goes away, or after FLOOD_CAP_BYTES or
FLOOD_CAP_S, whichever comes first (then it closes the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, Literal

import pytest

from fcgi_async.client import (
    FastCGIClient,
    ResponseTooLarge,
    Timeout,
    build_params,
)
from fcgi_async.client.response import DEFAULT_MAX_RESPONSE_BYTES, MAX_HEADER_BLOCK_BYTES

pytestmark = pytest.mark.timeout(90)

#: The most a flood sends (a client without a cap would buffer all of it).
FLOOD_CAP_BYTES: Final = 512 * 1024 * 1024
#: The longest a flood or a silent connection lasts.
FLOOD_CAP_S: Final = 40.0
#: The most this process's RSS may grow while one hostile request runs. The default
#: max_response_bytes is 64 MiB; the rest is slack for the allocator and the sockets.
RSS_BOUND_BYTES: Final = 200 * 1024 * 1024
#: The bound on waiting for the server thread to see the client's close.
WAIT_S: Final = 15.0

_HEADER = struct.Struct("!BBHHBx")
BEGIN_REQUEST, ABORT_REQUEST, STDIN, STDOUT, STDERR, GET_VALUES = 1, 2, 5, 6, 7, 9
CONTENT_MAX = 65535


def record(rtype: int, rid: int, content: bytes) -> bytes:
    """One FastCGI record, padded to 8 bytes."""
    pad = -len(content) & 7
    return _HEADER.pack(1, rtype, rid, len(content), pad) + content + b"\0" * pad


Behaviour = Literal["silent", "deaf", "stdout", "stderr", "head"]


@dataclass
class Hostile:
    """A hostile FastCGI server; what it saw and sent."""

    behaviour: Behaviour
    address: str = ""
    #: Flood payload bytes written.
    sent: int = 0
    #: Request bytes read from the client (after the GET_VALUES probe connections).
    received: int = 0
    #: Why the last flood or silence ended: "peer closed", "aborted", "cap" or "deadline".
    ended: str = ""
    #: Set when a request connection ended (for whatever reason in ``ended``).
    done: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def serve(self, listener: socket.socket) -> None:
        """Accept until stopped; each connection gets its own thread."""
        listener.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._connection, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _read_request(self, conn: socket.socket) -> int | None:
        """Read records up to the empty STDIN; ``None`` for a GET_VALUES probe or EOF."""
        buffer = b""
        rid = 0
        while not self.stop.is_set():
            while len(buffer) >= _HEADER.size:
                _, rtype, rid_, length, pad = _HEADER.unpack_from(buffer)
                if len(buffer) < _HEADER.size + length + pad:
                    break
                buffer = buffer[_HEADER.size + length + pad :]
                if rtype == GET_VALUES:
                    return None  # never answered: the client gives up on multiplexing
                if rtype == BEGIN_REQUEST:
                    rid = rid_
                if rtype == STDIN and length == 0:
                    return rid
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return None
            self.received += len(data)
            buffer += data
        return None

    def _connection(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.2)
            if self.behaviour == "deaf":
                self._silence(conn, read=False)
                return
            rid = self._read_request(conn)
            if rid is None:
                # A probe: hold it open, silent, until the client closes it.
                self._silence(conn, read=True, report=False)
                return
            if self.behaviour == "silent":
                self._silence(conn, read=True)
            else:
                self._flood(conn, rid)

    def _silence(self, conn: socket.socket, *, read: bool, report: bool = True) -> None:
        """Answer nothing; read (or, deaf, not even that) until the client closes."""
        deadline = time.monotonic() + FLOOD_CAP_S
        ended = "deadline"
        poller = select.poll()
        # POLLRDHUP: the client's FIN, visible even behind request bytes we refuse to read.
        poller.register(conn, select.POLLIN | select.POLLRDHUP)
        while not self.stop.is_set() and time.monotonic() < deadline:
            events = poller.poll(100)
            if not events:
                continue
            if not read:
                if events[0][1] & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
                    ended = "peer closed"
                    break
                # Data waits and we refuse it: poll again later for the close.
                self.stop.wait(0.05)
                continue
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                ended = "peer closed"
                break
            if not data:
                ended = "peer closed"
                break
            self.received += len(data)
        if report:
            self.ended = ended
            self.done.set()

    def _flood(self, conn: socket.socket, rid: int) -> None:
        """STDOUT (after a valid head), STDERR, or a head that never ends (STDOUT with no line
        break at all), record after record, until stopped."""
        rtype = STDERR if self.behaviour == "stderr" else STDOUT
        if self.behaviour == "stdout":
            conn.sendall(record(STDOUT, rid, b"Status: 200 OK\r\nContent-Type: x/y\r\n\r\n"))
        chunk = record(rtype, rid, b"h" * CONTENT_MAX) * 4
        payload = 4 * CONTENT_MAX
        deadline = time.monotonic() + FLOOD_CAP_S
        ended = "cap"
        view = memoryview(chunk)
        while self.sent < FLOOD_CAP_BYTES:
            if self.stop.is_set() or time.monotonic() > deadline:
                ended = "deadline"
                break
            try:
                written = 0
                while written < len(view) and not self.stop.is_set():
                    with contextlib.suppress(TimeoutError):  # the client reads slowly
                        written += conn.send(view[written:])
                    if time.monotonic() > deadline:
                        break
                self.sent += payload
                if _aborted(conn, rid):
                    ended = "aborted"
                    break
            except OSError:  # EPIPE, ECONNRESET, EOF: the client closed the connection
                ended = "peer closed"
                break
        self.ended = ended
        self.done.set()


def _aborted(conn: socket.socket, rid: int) -> bool:
    """True when the client sent ABORT_REQUEST for ``rid``; never blocks.

    Raises:
        ConnectionResetError: the client closed the connection.
    """
    poller = select.poll()
    poller.register(conn, select.POLLIN)
    # poll(0), not recv(MSG_DONTWAIT): a socket with a timeout waits for readiness first.
    if not poller.poll(0):
        return False
    data = conn.recv(65536)
    if not data:
        raise ConnectionResetError("the client closed the connection")
    return record(ABORT_REQUEST, rid, b"") in data


@contextlib.contextmanager
def hostile_server(behaviour: Behaviour) -> Iterator[Hostile]:
    """Run a :class:`Hostile` server on 127.0.0.1:0 in threads; stop and join them after."""
    state = Hostile(behaviour)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    state.address = f"127.0.0.1:{listener.getsockname()[1]}"
    acceptor = threading.Thread(target=state.serve, args=(listener,), daemon=True)
    acceptor.start()
    try:
        yield state
    finally:
        state.stop.set()
        acceptor.join(5)
        listener.close()
        for thread in state.threads:
            thread.join(5)


def vm_rss() -> int:
    """This process's resident set size in bytes (VmRSS)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@contextlib.contextmanager
def rss_peak() -> Iterator[list[int]]:
    """Sample VmRSS every 10 ms in a thread; the yielded list ends as [growth over start]."""
    start = vm_rss()
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            peak[0] = max(peak[0], vm_rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    growth = [0]
    try:
        yield growth
    finally:
        stop.set()
        sampler.join(5)
        peak[0] = max(peak[0], vm_rss())
        growth[0] = peak[0] - start


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


# ------------------------------------------------------------------------------- (a)
async def test_server_that_accepts_and_never_answers() -> None:
    """Default timeouts, the read timeout shortened: Timeout("read"), connection closed."""
    with hostile_server("silent") as server:
        async with FastCGIClient(server.address) as client:
            defaults = client.timeouts
            # The defaults themselves would end this wait (they are not waited out here).
            assert defaults.read is not None
            assert defaults.read <= 120
            assert defaults.total is not None
            assert defaults.total <= 600
            started = time.monotonic()
            with pytest.raises(Timeout) as info:
                await client.request(
                    build_params("GET", "/"), timeouts=dataclasses.replace(defaults, read=1.0)
                )
            assert info.value.phase == "read"
            assert time.monotonic() - started < WAIT_S
        assert await asyncio.to_thread(server.done.wait, WAIT_S)
        assert server.ended == "peer closed"


async def test_server_that_never_reads_the_body() -> None:
    """A server that accepts and never reads: the write timeout ends a large upload."""
    with hostile_server("deaf") as server:
        async with FastCGIClient(server.address, multiplex=False) as client:
            assert client.timeouts.write is not None
            assert client.timeouts.write <= 120
            started = time.monotonic()
            with pytest.raises(Timeout) as info:
                await client.request(
                    build_params("POST", "/"),
                    b"u" * (32 * 1024 * 1024),
                    timeouts=dataclasses.replace(client.timeouts, write=1.0),
                )
            assert info.value.phase == "write"
            assert time.monotonic() - started < WAIT_S
        assert await asyncio.to_thread(server.done.wait, WAIT_S)
        assert server.ended == "peer closed"


# ------------------------------------------------------------------------------- (b)
async def test_server_that_streams_stdout_forever() -> None:
    """Default limits: ResponseTooLarge("body") at 64 MiB, RSS growth within the bound."""
    with hostile_server("stdout") as server, rss_peak() as growth:
        async with FastCGIClient(server.address) as client:
            with pytest.raises(ResponseTooLarge) as info:
                await client.request(build_params("GET", "/"))
            assert (info.value.part, info.value.limit) == ("body", DEFAULT_MAX_RESPONSE_BYTES)
        assert await asyncio.to_thread(server.done.wait, WAIT_S)
    assert server.ended == "peer closed", server.ended
    assert DEFAULT_MAX_RESPONSE_BYTES <= server.sent < FLOOD_CAP_BYTES
    assert growth[0] < RSS_BOUND_BYTES, f"RSS grew {_mib(growth[0])}, sent {_mib(server.sent)}"


async def test_streaming_stdout_forever_is_not_capped() -> None:
    """aiter_bytes() has no cap by design: the caller stops; memory stays flat meanwhile."""
    with hostile_server("stdout") as server, rss_peak() as growth:
        async with (
            FastCGIClient(server.address) as client,
            client.stream(build_params("GET", "/")) as response,
        ):
            received = 0
            async for chunk in response.aiter_bytes():
                received += len(chunk)
                if received > 2 * DEFAULT_MAX_RESPONSE_BYTES:
                    break
        assert await asyncio.to_thread(server.done.wait, WAIT_S)
    assert received > 2 * DEFAULT_MAX_RESPONSE_BYTES
    assert server.ended == "peer closed", server.ended
    assert growth[0] < RSS_BOUND_BYTES, f"RSS grew {_mib(growth[0])}, sent {_mib(server.sent)}"


# ------------------------------------------------------------------------------- (c)
async def test_server_that_streams_stderr_forever() -> None:
    """Default limits: ResponseTooLarge("stderr") at 64 MiB; 1 MiB of it kept."""
    with hostile_server("stderr") as server, rss_peak() as growth:
        async with FastCGIClient(server.address) as client:
            with pytest.raises(ResponseTooLarge) as info:
                await client.request(build_params("GET", "/"))
            assert (info.value.part, info.value.limit) == ("stderr", DEFAULT_MAX_RESPONSE_BYTES)
        assert await asyncio.to_thread(server.done.wait, WAIT_S)
    assert server.ended == "peer closed", server.ended
    assert DEFAULT_MAX_RESPONSE_BYTES <= server.sent < FLOOD_CAP_BYTES
    assert growth[0] < RSS_BOUND_BYTES, f"RSS grew {_mib(growth[0])}, sent {_mib(server.sent)}"


# ------------------------------------------------------------------------------- (d)
async def test_server_that_sends_an_endless_header_block() -> None:
    """Default limits: ResponseTooLarge("head") at 64 KiB, not a growing head buffer."""
    with hostile_server("head") as server, rss_peak() as growth:
        async with FastCGIClient(server.address) as client:
            with pytest.raises(ResponseTooLarge) as info:
                await client.request(build_params("GET", "/"))
            assert (info.value.part, info.value.limit) == ("head", MAX_HEADER_BLOCK_BYTES)
        assert await asyncio.to_thread(server.done.wait, WAIT_S)
    assert server.ended == "peer closed", server.ended
    assert server.sent < FLOOD_CAP_BYTES
    assert growth[0] < RSS_BOUND_BYTES, f"RSS grew {_mib(growth[0])}, sent {_mib(server.sent)}"
