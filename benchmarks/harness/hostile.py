"""Hostile and broken FastCGI peers for the soak run (``benchmarks/soak.py``), in their own process.

    python benchmarks/harness/hostile.py --fcgi unix:/tmp/x/app.sock --http 127.0.0.1:8080 \\
        --duration 600 --out stats.json

Each kind of peer is a set of asyncio tasks, bounded in connections, in rate and in bytes; all of
them share one byte budget (``--rate-bytes``). They talk raw FastCGI straight to the server's
socket (a unix socket or loopback TCP only) with records built here, not with the project's own
encoder, so that a bug there cannot hide one in the server. At ``--duration`` (or SIGTERM /
SIGINT) every connection is closed and the per-kind counts are written to ``--out`` as JSON.

The kinds (see :data:`KINDS`):

- ``nonreader``: keeps sending requests and management records and never reads a byte.
- ``slowloris``: sends a record one byte every few seconds; counts how long the server keeps it.
- ``flood_begin``: more BEGIN_REQUESTs on one connection than the server takes (answered
  OVERLOADED); ``flood_params``: huge PARAMS streams that never end (under and over the limit);
  ``flood_stdin``: a request body sent as 1-byte STDIN records.
- ``abort``: BEGIN + PARAMS + ABORT_REQUEST in a loop, at once or once the answer has started.
- ``vanish``: clients of a streaming answer that read a little and reset the connection, through
  nginx over TCP (SO_LINGER 0: a real RST) and straight over FastCGI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

# --- FastCGI records, built by hand -------------------------------------------------------------

FCGI_VERSION = 1
BEGIN_REQUEST = 1
ABORT_REQUEST = 2
END_REQUEST = 3
PARAMS = 4
STDIN = 5
STDOUT = 6
GET_VALUES = 9
#: A record type no FastCGI version defines: a server must answer it with UNKNOWN_TYPE.
BOGUS_TYPE = 42
RESPONDER = 1
KEEP_CONN = 1
MAX_CONTENT = 65535
#: END_REQUEST protocol statuses by number, as they are reported.
PROTOCOL_STATUS = {0: "complete", 1: "cant_mpx_conn", 2: "overloaded", 3: "unknown_role"}

_HEADER = struct.Struct(">BBHHBx")


def record(rtype: int, request_id: int, content: bytes = b"") -> bytes:
    """One record (no padding); ``content`` must fit in one record."""
    if len(content) > MAX_CONTENT:
        raise ValueError(f"record content of {len(content)} bytes")
    return _HEADER.pack(FCGI_VERSION, rtype, request_id, len(content), 0) + content


def stream(rtype: int, request_id: int, data: bytes, chunk: int = 32768) -> bytes:
    """``data`` as records of at most ``chunk`` bytes, without the empty end-of-stream record."""
    return b"".join(
        record(rtype, request_id, data[i : i + chunk]) for i in range(0, len(data), chunk)
    )


def _length(n: int) -> bytes:
    return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)


def pairs(items: dict[str, str]) -> bytes:
    """FastCGI name-value pairs."""
    out = bytearray()
    for name, value in items.items():
        n, v = name.encode(), value.encode()
        out += _length(len(n)) + _length(len(v)) + n + v
    return bytes(out)


def request_params(path: str, method: str = "GET", body_len: int = 0) -> dict[str, str]:
    """The params nginx would send for ``method path`` (mounted at the root, as in the bench)."""
    return {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "REQUEST_URI": path,
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "soak",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "CONTENT_LENGTH": str(body_len) if body_len else "",
        "HTTP_HOST": "soak",
    }


def begin(request_id: int, keep_conn: bool = True) -> bytes:
    """A responder BEGIN_REQUEST."""
    body = struct.pack(">HB5x", RESPONDER, KEEP_CONN if keep_conn else 0)
    return record(BEGIN_REQUEST, request_id, body)


def full_request(request_id: int, path: str, keep_conn: bool = True) -> bytes:
    """BEGIN + PARAMS + end of PARAMS + end of STDIN: a whole GET."""
    return (
        begin(request_id, keep_conn)
        + stream(PARAMS, request_id, pairs(request_params(path)))
        + record(PARAMS, request_id)
        + record(STDIN, request_id)
    )


async def read_record(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    """(type, request id, content) of the next record; IncompleteReadError at EOF."""
    head = await reader.readexactly(8)
    _version, rtype, rid, clen, plen = _HEADER.unpack(head)
    content = await reader.readexactly(clen + plen)
    return rtype, rid, content[:clen]


def end_status(content: bytes) -> str:
    """The protocol status name of an END_REQUEST's content."""
    if len(content) < 5:
        return "malformed"
    return PROTOCOL_STATUS.get(content[4], f"status_{content[4]}")


# --- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """How hard each kind pushes. Every count and rate is bounded; ``scaled`` shrinks them all.

    The defaults keep the hostile process itself cheap (a few % of one CPU), so that on a small
    machine the well-behaved load loses throughput to what the server does with hostile peers,
    not to the peers' own CPU.
    """

    #: All bytes the peers send, per second (a token bucket shared by every kind).
    rate_bytes: int = 2 * 1024 * 1024
    #: Non-readers: connections, and bursts per second per connection. A burst is
    #: ``nonreader_mgmt`` empty records of an unknown type (8 bytes each, each answered with a
    #: 16-byte UNKNOWN_TYPE: a server that keeps reading buffers twice what we send, about
    #: 100 KB/s with the defaults), one GET_VALUES and one request (every
    #: ``nonreader_big_every``-th for /1mib, the others for /hello).
    nonreader_conns: int = 6
    nonreader_bursts_per_s: float = 2.0
    nonreader_mgmt: int = 512
    nonreader_big_every: int = 20
    #: A non-reader stops sending requests after this many (ids are never reused).
    nonreader_max_requests: int = 2000
    #: Bytes queued in our own transport above which a non-reader waits: the server has
    #: stopped reading from it, which is what a server should do.
    nonreader_backlog_bytes: int = 256 * 1024
    #: Slowloris: connections, and seconds between two bytes.
    slowloris_conns: int = 12
    slowloris_interval_s: float = 4.0
    #: BEGIN_REQUEST flood: BEGINs per burst (above the default 100 per connection), seconds
    #: between bursts, seconds a burst waits for the server's answers.
    flood_begin_count: int = 130
    flood_begin_period_s: float = 2.0
    flood_begin_wait_s: float = 3.0
    #: Huge unfinished PARAMS: connections, bytes under the default 256 KiB limit (held) and over
    #: it (the server must close), seconds each is held.
    flood_params_conns: int = 2
    flood_params_hold_bytes: int = 192 * 1024
    flood_params_over_bytes: int = 320 * 1024
    flood_params_hold_s: float = 10.0
    #: 1-byte STDIN records: connections, records per second in total, body bytes per request.
    flood_stdin_conns: int = 1
    flood_stdin_records_per_s: float = 2000.0
    flood_stdin_body_bytes: int = 4096
    #: Abort storm: connections, requests aborted per second in total, requests in flight per
    #: connection, seconds an aborted request may stay unanswered before it is written off.
    abort_conns: int = 2
    abort_per_s: float = 20.0
    abort_in_flight: int = 16
    abort_answer_timeout_s: float = 5.0
    #: Vanishing streaming clients: attempts per second (alternately through nginx and straight
    #: FastCGI), at most this many at once, bytes read before the reset.
    vanish_per_s: float = 3.0
    vanish_concurrent: int = 6
    vanish_read_bytes: int = 16 * 1024
    #: Seconds any connect, or any wait for an answer, may take.
    io_timeout_s: float = 5.0

    def scaled(self, factor: float) -> Settings:
        """The same settings with every connection count and rate multiplied by ``factor``
        (at least one connection of each kind, rates above zero)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_conns") or f.name == "vanish_concurrent":
                out[f.name] = max(1, round(value * factor))
            elif f.name.endswith("_per_s") or f.name == "rate_bytes":
                out[f.name] = type(value)(max(value * factor, 1))
            else:
                out[f.name] = value
        return Settings(**out)


KINDS = ("nonreader", "slowloris", "flood_begin", "flood_params", "flood_stdin", "abort", "vanish")


@dataclass
class KindStats:
    """What one kind of peer did and how the server answered; written as JSON at the end."""

    connections: int = 0
    connect_errors: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    requests: int = 0
    #: The server closed or reset the connection (EOF on read, EPIPE/ECONNRESET on write).
    closed_by_server: int = 0
    end_requests: Counter[str] = field(default_factory=Counter)
    #: Named events of the kind (e.g. ``paused_by_server``, ``completed``, ``over_limit_closed``).
    events: Counter[str] = field(default_factory=Counter)
    #: Exceptions by class name: what went wrong on our side of the connection.
    errors: Counter[str] = field(default_factory=Counter)
    #: Seconds a connection lived before the server closed it (first 1000 kept).
    lifetimes_s: list[float] = field(default_factory=list)
    #: Abort storm: KiB of STDOUT a ``/stream`` request still sent when its ABORT_REQUEST came
    #: with the request (``at_once``) or after the answer's first bytes (``mid_answer``); the
    #: first 1000 of each are kept.
    aborted_stream_kib: dict[str, list[float]] = field(
        default_factory=lambda: {"at_once": [], "mid_answer": []}
    )

    def lifetime(self, seconds: float) -> None:
        if len(self.lifetimes_s) < 1000:
            self.lifetimes_s.append(round(seconds, 2))

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = dict(value) if isinstance(value, Counter) else value
        return out


# --- plumbing -----------------------------------------------------------------------------------

#: Shortest time between two connections of one slot: at most one connect per slot and half
#: second when the server closes (or refuses) at once.
MIN_ROUND_S = 0.5


def _settle(fut: asyncio.Future[Any]) -> None:
    """Cancel ``fut``, or mark its exception retrieved (a reset read is not worth a warning)."""
    if not fut.done():
        fut.cancel()
    elif not fut.cancelled():
        fut.exception()


class Budget:
    """A token bucket (per second, burst of a quarter second) that callers may overdraw: an
    overdraft is repaid by sleeping, so the long-run rate holds whatever the message sizes."""

    def __init__(self, rate: float) -> None:
        self.rate = float(rate)
        self.burst = self.rate / 4
        self.tokens = self.burst
        self.last = time.monotonic()

    async def take(self, amount: float) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= amount
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)


Target = tuple[str, str | int]  # ("unix", path) or (host, port)


def parse_target(text: str) -> Target:
    """``unix:PATH`` or ``HOST:PORT``; only unix sockets and loopback addresses are accepted."""
    if text.startswith("unix:"):
        return ("unix", text[5:])
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise ValueError(f"{text}: hostile peers only talk to loopback or unix sockets")
    return (host, int(port))


class Peers:
    """Every hostile task, its stats, the shared budget, and the stop signal."""

    def __init__(self, fcgi: Target, http: Target | None, settings: Settings) -> None:
        self.fcgi = fcgi
        self.http = http
        self.s = settings
        self.budget = Budget(settings.rate_bytes)
        self.stats = {kind: KindStats() for kind in KINDS}
        self.stop = asyncio.Event()
        self.writers: set[asyncio.StreamWriter] = set()
        self.params_rounds = 0

    async def connect(
        self, kind: str, target: Target | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A new connection (None if it failed, counted); closed by :meth:`close_all` at the end."""
        target = target or self.fcgi
        st = self.stats[kind]
        try:
            if target[0] == "unix":
                opened = asyncio.open_unix_connection(str(target[1]), limit=1 << 20)
            else:
                opened = asyncio.open_connection(target[0], int(target[1]), limit=1 << 20)
            reader, writer = await asyncio.wait_for(opened, self.s.io_timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:
            st.connect_errors += 1
            st.errors[type(exc).__name__] += 1
            return None  # the caller's loop paces the retry (MIN_ROUND_S)
        st.connections += 1
        self.writers.add(writer)
        return reader, writer

    def drop(self, writer: asyncio.StreamWriter, reset: bool = False) -> None:
        """Close a connection (``reset``: abort the transport, without flushing)."""
        self.writers.discard(writer)
        if reset:
            writer.transport.abort()
        else:
            writer.close()

    async def send(self, kind: str, writer: asyncio.StreamWriter, data: bytes) -> bool:
        """Write ``data`` within the budget; False if the server closed the connection (the
        caller counts that, once, in ``closed_by_server``)."""
        await self.budget.take(len(data))
        if writer.is_closing():
            return False
        writer.write(data)
        self.stats[kind].bytes_sent += len(data)
        return True

    async def pause(self, seconds: float) -> None:
        """Sleep, or less if the run stops."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def loop(self, kind: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run ``body`` again and again until the stop, counting its failures by class."""
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                await body()
            except (OSError, EOFError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
                self.stats[kind].errors[type(exc).__name__] += 1
            if time.monotonic() - started < MIN_ROUND_S:
                # A server that closes at once must not turn a slot into a connect storm.
                await self.pause(MIN_ROUND_S)

    def close_all(self) -> None:
        for writer in list(self.writers):
            self.drop(writer, reset=True)

    # --- the kinds ------------------------------------------------------------------------------

    async def nonreader(self) -> None:
        kind = "nonreader"
        st = self.stats[kind]
        conn = await self.connect(kind)
        if conn is None:
            return
        _reader, writer = conn
        writer.transport.pause_reading()  # never read a byte: the server's answers pile up
        started = time.monotonic()
        rid = 0
        mgmt = record(BOGUS_TYPE, 0) * self.s.nonreader_mgmt
        mgmt += record(GET_VALUES, 0, pairs({"FCGI_MAX_CONNS": "", "FCGI_MPXS_CONNS": ""}))
        while not self.stop.is_set():
            if writer.transport.get_write_buffer_size() > self.s.nonreader_backlog_bytes:
                st.events["paused_by_server"] += 1  # counts half-seconds
                await self.pause(0.5)
                if writer.is_closing():
                    break
                continue
            burst = mgmt
            if rid < self.s.nonreader_max_requests:
                rid += 1
                path = "/1mib" if rid % self.s.nonreader_big_every == 0 else "/hello"
                burst += full_request(rid, path)
                st.requests += 1
            if not await self.send(kind, writer, burst):
                break
            await self.pause(1.0 / self.s.nonreader_bursts_per_s)
        if writer.is_closing() and not self.stop.is_set():
            st.lifetime(time.monotonic() - started)
            st.closed_by_server += 1
        self.drop(writer, reset=True)

    async def slowloris(self) -> None:
        kind = "slowloris"
        st = self.stats[kind]
        conn = await self.connect(kind)
        if conn is None:
            return
        reader, writer = conn
        started = time.monotonic()
        data = full_request(1, "/hello")
        eof = asyncio.ensure_future(reader.read(65536))  # resolves when the server closes
        try:
            for i in range(len(data)):
                if eof.done() or self.stop.is_set():
                    break
                if not await self.send(kind, writer, data[i : i + 1]):
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(eof), self.s.slowloris_interval_s)
            if (eof.done() or writer.is_closing()) and not self.stop.is_set():
                st.closed_by_server += 1
                st.lifetime(time.monotonic() - started)
        finally:
            _settle(eof)
            self.drop(writer, reset=True)

    async def flood_begin(self) -> None:
        kind = "flood_begin"
        st = self.stats[kind]
        conn = await self.connect(kind)
        if conn is None:
            return
        reader, writer = conn
        try:
            burst = b"".join(begin(rid) for rid in range(1, self.s.flood_begin_count + 1))
            st.requests += self.s.flood_begin_count
            if not await self.send(kind, writer, burst):
                st.closed_by_server += 1
                return
            deadline = time.monotonic() + self.s.flood_begin_wait_s
            refused = 0
            while (left := deadline - time.monotonic()) > 0:
                try:
                    rtype, _rid, content = await asyncio.wait_for(read_record(reader), left)
                except asyncio.TimeoutError:
                    break
                except asyncio.IncompleteReadError:
                    st.closed_by_server += 1
                    break
                st.bytes_received += 8 + len(content)
                if rtype == END_REQUEST:
                    status = end_status(content)
                    st.end_requests[status] += 1
                    refused += status != "complete"
            st.events["bursts"] += 1
            if refused:
                st.events["bursts_with_refusals"] += 1
        finally:
            self.drop(writer, reset=True)
        await self.pause(self.s.flood_begin_period_s)

    async def flood_params(self) -> None:
        kind = "flood_params"
        st = self.stats[kind]
        self.params_rounds += 1
        over = self.params_rounds % 2 == 0  # under and over the limit in turn
        conn = await self.connect(kind)
        if conn is None:
            return
        reader, writer = conn
        started = time.monotonic()
        size = self.s.flood_params_over_bytes if over else self.s.flood_params_hold_bytes
        eof = asyncio.ensure_future(reader.read(65536))
        try:
            head = pairs(request_params("/hello"))
            pad = pairs({"HTTP_X_PAD": "p" * size})
            st.requests += 1
            # Sent in 64 KiB steps so that the budget paces it and a close stops it early.
            data = begin(1) + stream(PARAMS, 1, head + pad)
            for i in range(0, len(data), 65536):
                if eof.done() or not await self.send(kind, writer, data[i : i + 65536]):
                    break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(eof), self.s.flood_params_hold_s)
            if (eof.done() or writer.is_closing()) and not self.stop.is_set():
                st.closed_by_server += 1
                st.lifetime(time.monotonic() - started)
                st.events["over_limit_closed" if over else "under_limit_closed"] += 1
            elif not self.stop.is_set():
                st.events["over_limit_held" if over else "under_limit_held"] += 1
        finally:
            _settle(eof)
            self.drop(writer, reset=True)
        # One round per hold time, closed early or not: the over-limit peer, closed at once,
        # must not resend its 320 KiB twice a second.
        await self.pause(self.s.flood_params_hold_s - (time.monotonic() - started))

    async def flood_stdin(self, share: float) -> None:
        kind = "flood_stdin"
        st = self.stats[kind]
        conn = await self.connect(kind)
        if conn is None:
            return
        reader, writer = conn
        rate = max(self.s.flood_stdin_records_per_s * share, 1.0)
        body = self.s.flood_stdin_body_bytes
        try:
            rid = 0
            while not self.stop.is_set() and rid < MAX_CONTENT:
                rid += 1
                st.requests += 1
                head = (
                    begin(rid)
                    + stream(PARAMS, rid, pairs(request_params("/upload", "POST", body)))
                    + record(PARAMS, rid)
                )
                if not await self.send(kind, writer, head):
                    st.closed_by_server += 1
                    return
                one = record(STDIN, rid, b"u")
                batch = max(1, int(rate / 10))  # ten writes a second
                sent = 0
                while sent < body and not self.stop.is_set():
                    n = min(batch, body - sent)
                    if not await self.send(kind, writer, one * n):
                        st.closed_by_server += 1
                        return
                    sent += n
                    await self.pause(n / rate)
                if self.stop.is_set():
                    return
                if not await self.send(kind, writer, record(STDIN, rid)):
                    st.closed_by_server += 1
                    return
                answer = b""
                while True:
                    rtype, _r, content = await asyncio.wait_for(
                        read_record(reader), self.s.io_timeout_s
                    )
                    st.bytes_received += 8 + len(content)
                    if rtype == STDOUT:
                        answer += content
                    elif rtype == END_REQUEST:
                        st.end_requests[end_status(content)] += 1
                        break
                ok = answer.endswith(str(body).encode())
                st.events["completed" if ok else "wrong_answer"] += 1
        except asyncio.IncompleteReadError:
            st.closed_by_server += 1
        finally:
            self.drop(writer, reset=True)

    async def abort(self, share: float) -> None:
        kind = "abort"
        st = self.stats[kind]
        conn = await self.connect(kind)
        if conn is None:
            return
        reader, writer = conn
        rate = max(self.s.abort_per_s * share, 0.1)
        in_flight: dict[int, float] = {}
        streamed: dict[int, int] = {}  # request id of a /stream -> STDOUT bytes so far
        first_output: dict[int, asyncio.Event] = {}  # set at the request's first STDOUT
        answered = asyncio.Event()

        async def read_answers() -> None:
            while True:
                rtype, rid, content = await read_record(reader)
                st.bytes_received += 8 + len(content)
                if rtype == STDOUT:
                    if rid in streamed:
                        streamed[rid] += len(content)
                    started = first_output.pop(rid, None)
                    if started is not None:
                        started.set()
                elif rtype == END_REQUEST:
                    first = first_output.pop(rid, None)
                    if first is not None:
                        first.set()
                    st.end_requests[end_status(content)] += 1
                    in_flight.pop(rid, None)
                    sent = streamed.pop(rid, None)
                    how = st.aborted_stream_kib["at_once" if rid % 2 else "mid_answer"]
                    if sent is not None and len(how) < 1000:
                        how.append(round(sent / 1024, 1))
                    answered.set()

        reading = asyncio.ensure_future(read_answers())
        paths = ("/hello", "/stream")
        ok = True
        try:
            rid = 0
            while not self.stop.is_set() and rid < MAX_CONTENT and not reading.done():
                now = time.monotonic()
                for old, sent_at in list(in_flight.items()):
                    if now - sent_at > self.s.abort_answer_timeout_s:
                        del in_flight[old]
                        streamed.pop(old, None)
                        st.events["abort_unanswered"] += 1
                if len(in_flight) >= self.s.abort_in_flight:
                    answered.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(answered.wait(), 1.0)
                    st.events["waits_for_answers"] += 1
                    continue
                rid += 1
                in_flight[rid] = now
                st.requests += 1
                path = paths[(rid // 2) % len(paths)]  # both paths, each aborted both ways
                if path == "/stream":
                    streamed[rid] = 0
                req = full_request(rid, path)
                if rid % 2:  # (read_answers tells the two ways apart by the same test)
                    # At once: the abort arrives with the request.
                    ok = await self.send(kind, writer, req + record(ABORT_REQUEST, rid))
                else:
                    # Mid-answer: the abort follows the answer's first bytes.
                    first_output[rid] = started = asyncio.Event()
                    ok = await self.send(kind, writer, req)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(started.wait(), self.s.io_timeout_s)
                    first_output.pop(rid, None)
                    ok = ok and await self.send(kind, writer, record(ABORT_REQUEST, rid))
                if not ok:
                    break
                await self.pause(1.0 / rate)
            if (reading.done() or not ok) and not self.stop.is_set():
                st.closed_by_server += 1
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading
            self.drop(writer, reset=True)

    async def vanish_once(self, via_http: bool) -> None:
        kind = "vanish"
        st = self.stats[kind]
        target = self.http if via_http else self.fcgi
        conn = await self.connect(kind, target)
        if conn is None:
            return
        reader, writer = conn
        try:
            if via_http:
                req = b"GET /stream HTTP/1.1\r\nHost: soak\r\n\r\n"
            else:
                req = full_request(1, "/stream")
            st.requests += 1
            if not await self.send(kind, writer, req):
                st.closed_by_server += 1
                return
            got = 0
            deadline = time.monotonic() + self.s.io_timeout_s
            while got < self.s.vanish_read_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    st.events["slow_first_bytes"] += 1
                    break
                chunk = await asyncio.wait_for(reader.read(65536), left)
                if not chunk:
                    st.closed_by_server += 1
                    break
                got += len(chunk)
            st.bytes_received += got
            if got >= self.s.vanish_read_bytes:
                st.events["reset_http" if via_http else "reset_fcgi"] += 1
        finally:
            sock = writer.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                # SO_LINGER 0: close() sends a RST, as a client that crashes or loses its link.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.drop(writer, reset=True)

    async def vanish(self) -> None:
        running: set[asyncio.Future[None]] = set()
        n = 0
        try:
            while not self.stop.is_set():
                running = {t for t in running if not t.done()}
                if len(running) < self.s.vanish_concurrent:
                    n += 1
                    via_http = self.http is not None and n % 2 == 0
                    task = asyncio.ensure_future(
                        self.loop_once("vanish", lambda h=via_http: self.vanish_once(h))
                    )
                    running.add(task)
                else:
                    self.stats["vanish"].events["at_concurrency_limit"] += 1
                await self.pause(1.0 / self.s.vanish_per_s)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def loop_once(self, kind: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run ``body`` once, counting its failure by class."""
        try:
            await body()
        except (OSError, EOFError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
            self.stats[kind].errors[type(exc).__name__] += 1

    def tasks(self, kinds: tuple[str, ...] = KINDS) -> list[Awaitable[None]]:
        """One coroutine per hostile connection slot of each of ``kinds``."""
        s = self.s
        stdin_share, abort_share = 1.0 / s.flood_stdin_conns, 1.0 / s.abort_conns
        slots: dict[str, list[Callable[[], Awaitable[None]]]] = {
            "nonreader": [lambda: self.loop("nonreader", self.nonreader)] * s.nonreader_conns,
            "slowloris": [lambda: self.loop("slowloris", self.slowloris)] * s.slowloris_conns,
            "flood_begin": [lambda: self.loop("flood_begin", self.flood_begin)],
            "flood_params": [lambda: self.loop("flood_params", self.flood_params)]
            * s.flood_params_conns,
            "flood_stdin": [lambda: self.loop("flood_stdin", lambda: self.flood_stdin(stdin_share))]
            * s.flood_stdin_conns,
            "abort": [lambda: self.loop("abort", lambda: self.abort(abort_share))] * s.abort_conns,
            "vanish": [self.vanish],
        }
        return [make() for kind in kinds for make in slots[kind]]


#: Seconds the peers get to finish after the stop before their tasks are cancelled (their counts
#: are kept as they go, so a cancelled task loses nothing).
STOP_GRACE_S = 2.0


def parse_kinds(text: str) -> tuple[str, ...]:
    """``all`` or comma-separated names from :data:`KINDS`."""
    if text == "all":
        return KINDS
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in KINDS]
    if unknown or not names:
        raise ValueError(f"unknown hostile kinds {unknown or text!r}; known: {', '.join(KINDS)}")
    return names


async def run(
    fcgi: Target,
    http: Target | None,
    settings: Settings,
    duration_s: float,
    kinds: tuple[str, ...] = KINDS,
) -> dict[str, Any]:
    """Run ``kinds`` for ``duration_s`` (or until SIGTERM/SIGINT); return the stats (every kind
    is in them; the ones not run stay at zero)."""
    peers = Peers(fcgi, http, settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, peers.stop.set)
    started = time.monotonic()
    tasks = [asyncio.ensure_future(t) for t in peers.tasks(kinds)]
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(peers.stop.wait(), duration_s)
    peers.stop.set()
    _done, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
    for task in pending:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    peers.close_all()
    crashed = Counter(
        f"{type(r).__name__}: {r}"[:200]
        for r in results
        if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
    )
    return {
        "duration_s": round(time.monotonic() - started, 1),
        "settings": {f.name: getattr(settings, f.name) for f in fields(settings)},
        "kinds_run": list(kinds),
        "kinds": {kind: st.as_json() for kind, st in peers.stats.items()},
        "task_crashes": dict(crashed),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Hostile FastCGI peers (see the module docstring).")
    p.add_argument("--fcgi", required=True, help="unix:PATH or 127.0.0.1:PORT of the server")
    p.add_argument("--http", help="127.0.0.1:PORT of nginx in front (for the vanishing clients)")
    p.add_argument("--duration", type=float, required=True, help="seconds")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every count and rate")
    p.add_argument("--out", type=Path, required=True, help="where the JSON stats go")
    p.add_argument("--kinds", default="all", help=f"all, or some of {','.join(KINDS)}")
    args = p.parse_args(argv)
    try:
        kinds = parse_kinds(args.kinds)
    except ValueError as exc:
        p.error(str(exc))
    settings = Settings().scaled(args.scale) if args.scale != 1.0 else Settings()
    http = parse_target(args.http) if args.http else None
    stats = asyncio.run(run(parse_target(args.fcgi), http, settings, args.duration, kinds))
    args.out.write_text(json.dumps(stats, indent=1) + "\n")
    print(f"hostile peers stopped after {stats['duration_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
