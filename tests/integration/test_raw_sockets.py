"""A real Server in the test's event loop, driven over real sockets with ClientConnection.

Each test plays the web server by hand (asyncio streams + the sans-IO client codec), so it can
send what nginx never would: interleaved multiplexed records, ABORT_REQUEST, management
records, broken bytes, half records, a client that vanishes or reads slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fcgi_async.adapters.asgi import ASGIAdapter
from fcgi_async.adapters.wsgi import WSGIAdapter

from fcgi_async import _compat
from fcgi_async.config import Config
from fcgi_async.protocol import (
    FCGI_MAX_CONNS,
    FCGI_MAX_REQS,
    FCGI_MPXS_CONNS,
    ClientConnection,
    ClientEvent,
    GetValuesResult,
    ProtocolStatus,
    RecordType,
    RequestEnded,
    Role,
    StderrReceived,
    StdoutReceived,
    UnknownTypeReceived,
)
from fcgi_async.protocol.events import _NeedData  # NEED_DATA's type, for mypy to narrow
from fcgi_async.server import BindError, Server, parse_bind
from fcgi_async.server.connection import PAUSED_FOR_OUTPUT
from fcgi_async.server.listeners import bind_socket
from fcgi_async.types import Application, ClientDisconnected, Request
from tests.protocol.helpers import raw_record
from tests.server.helpers import App, wait_until

from .conftest import Servers

OK = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n"

# ------------------------------------------------------------------------------ the peer


@dataclass
class Answer:
    stdout: bytes
    stderr: bytes
    end: RequestEnded

    @property
    def body(self) -> bytes:
        return self.stdout.partition(b"\r\n\r\n")[2]


def _join(frames: Iterable[bytes | memoryview | Iterable[bytes | memoryview]]) -> bytes:
    out = bytearray()
    for frame in frames:
        if isinstance(frame, bytes | memoryview):
            out += frame
        else:
            for part in frame:
                out += part
    return bytes(out)


class Peer:
    """One connection of a hand-played web server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.codec = ClientConnection()
        self.events: list[ClientEvent] = []

    @classmethod
    async def connect(cls, address: str) -> Peer:
        if address.startswith("unix:"):
            reader, writer = await asyncio.open_unix_connection(address[5:])
        else:
            host, _, port = address.rpartition(":")
            reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        return cls(reader, writer)

    def send(self, *frames: bytes | memoryview | Iterable[bytes | memoryview]) -> None:
        self.writer.write(_join(frames))

    def frame(
        self,
        rid: int,
        params: Mapping[bytes, bytes] | None = None,
        body: bytes | None = b"",
        *,
        role: Role = Role.RESPONDER,
        keep_conn: bool = True,
    ) -> bytes:
        """BEGIN_REQUEST, PARAMS and (unless ``body`` is None) the whole STDIN stream."""
        c = self.codec
        parts: list[bytes | Iterable[bytes | memoryview]] = [
            c.begin_request(rid, role=role, keep_conn=keep_conn),
            c.send_params(rid, params or {b"REQUEST_METHOD": b"GET"}),
        ]
        if body is not None:
            parts += [c.send_stdin(rid, body), c.end_stdin(rid)]
        return _join(parts)

    async def read_more(self) -> bool:
        """Read once; parse what came. False at EOF."""
        data = await self.reader.read(262144)
        if not data:
            return False
        self.codec.receive_data(data)
        while not isinstance(event := self.codec.next_event(), _NeedData):
            self.events.append(event)
        return True

    async def until(self, done: Callable[[list[ClientEvent]], bool], within_s: float = 5.0) -> None:
        async with _compat.timeout(within_s):
            while not done(self.events):
                if not await self.read_more():
                    raise AssertionError(f"EOF before the answer; events so far {self.events}")

    def take(self, rid: int) -> Answer:
        mine = [e for e in self.events if e.request_id == rid]
        self.events = [e for e in self.events if e.request_id != rid]
        ends = [e for e in mine if isinstance(e, RequestEnded)]
        assert len(ends) == 1, mine
        return Answer(
            b"".join(e.data for e in mine if isinstance(e, StdoutReceived)),
            b"".join(e.data for e in mine if isinstance(e, StderrReceived)),
            ends[0],
        )

    async def answer(self, rid: int, within_s: float = 5.0) -> Answer:
        await self.until(lambda ev: any(_ended(e, rid) for e in ev), within_s)
        return self.take(rid)

    async def request(
        self,
        params: Mapping[bytes, bytes] | None = None,
        body: bytes = b"",
        *,
        keep_conn: bool = True,
        role: Role = Role.RESPONDER,
    ) -> Answer:
        rid = self.codec.free_request_id()
        self.send(self.frame(rid, params, body, role=role, keep_conn=keep_conn))
        return await self.answer(rid)

    async def eof(self, within_s: float = 5.0) -> bytes:
        """Read until the server closes; return the raw bytes that came before."""
        rest = bytearray()
        async with _compat.timeout(within_s):
            try:
                while data := await self.reader.read(65536):
                    rest += data
            except ConnectionResetError:
                pass
        return bytes(rest)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def _ended(event: ClientEvent, rid: int) -> bool:
    return isinstance(event, RequestEnded) and event.request_id == rid


# ------------------------------------------------------------------------------ the apps


async def echo(req: Request) -> None:
    """Answer ``TAG:body`` once the whole body is in."""
    body = bytearray()
    while chunk := await req.receive():
        body += chunk
    await req.end(OK + req.params.get(b"TAG", b"") + b":" + bytes(body))


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    """Peers opened by a test (append them); closed at teardown."""
    opened: list[Peer] = []
    yield opened
    for peer in opened:
        await peer.close()


async def connect(server: Server, peers: list[Peer], index: int = 0) -> Peer:
    peer = await Peer.connect(server.bound_addresses[index])
    peers.append(peer)
    return peer


# ------------------------------------------------------------------------- the protocol


async def test_interleaved_multiplexed_requests_get_their_own_answers(
    servers: Servers, peers: list[Peer]
) -> None:
    server = await servers.start(App(echo))
    peer = await connect(server, peers)
    c = peer.codec
    one, two = c.begin_request(1), c.begin_request(2)
    params1 = _join(c.send_params(1, {b"TAG": b"one", b"X" * 200: b"y" * 300}))
    params2 = _join(c.send_params(2, {b"TAG": b"two"}))
    # Record by record, alternating between the requests, in several writes.
    peer.send(one, two, params2[:8])
    await asyncio.sleep(0)
    peer.send(params2[8:], params1[: len(params1) // 2])
    peer.send(params1[len(params1) // 2 :], c.send_stdin(2, b"22"), c.send_stdin(1, b"1"))
    peer.send(c.send_stdin(1, b"11"), c.send_stdin(2, b"2" * 70000), c.end_stdin(2))
    # Request 2 is complete and answered while request 1 still waits for its body.
    second = await peer.answer(2)
    assert second.body == b"two:22" + b"2" * 70000
    assert not any(e.request_id == 1 for e in peer.events)
    peer.send(c.end_stdin(1))
    first = await peer.answer(1)
    assert first.body == b"one:111"
    assert first.end == RequestEnded(1, 0, ProtocolStatus.REQUEST_COMPLETE)


async def test_get_values_over_a_socket(servers: Servers, peers: list[Peer]) -> None:
    server = await servers.start(App(echo), max_connections=3, max_requests_per_connection=4)
    peer = await connect(server, peers)
    peer.send(ClientConnection.get_values([FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS]))
    await peer.until(lambda ev: bool(ev))
    assert peer.events == [
        GetValuesResult(0, {FCGI_MAX_CONNS: b"3", FCGI_MAX_REQS: b"12", FCGI_MPXS_CONNS: b"1"})
    ]


async def test_tcp_connections_have_nodelay_and_unix_ones_are_served(
    servers: Servers, peers: list[Peer], short_tmp: Path
) -> None:
    """TCP_NODELAY on every accepted TCP connection: a response's single write must not wait
    for the peer's delayed ACK (Nagle), which costs up to 40 ms per request."""
    server = await servers.start(
        App(echo), bind=("127.0.0.1:0", "[::1]:0", f"unix:{short_tmp / 'n.sock'}")
    )
    for index in range(3):
        peer = await connect(server, peers, index)
        assert (await peer.request({b"TAG": b"%d" % index})).body == b"%d:" % index
    by_family: dict[int, int] = {}
    for proto in server.state.connections:
        sock = proto.transport.get_extra_info("socket")
        if sock.family == socket.AF_UNIX:
            by_family[sock.family] = -1
        else:
            by_family[sock.family] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert by_family == {socket.AF_INET: 1, socket.AF_INET6: 1, socket.AF_UNIX: -1}


async def test_unknown_management_type_gets_unknown_type(
    servers: Servers, peers: list[Peer]
) -> None:
    server = await servers.start(App(echo))
    peer = await connect(server, peers)
    peer.send(raw_record(99, 0, b"whatever"))
    await peer.until(lambda ev: bool(ev))
    assert peer.events == [UnknownTypeReceived(0, 99)]
    assert (await peer.request({b"TAG": b"after"})).body == b"after:"


async def test_unserved_role_gets_unknown_role(servers: Servers, peers: list[Peer]) -> None:
    server = await servers.start(App(echo), roles=("responder",))
    peer = await connect(server, peers)
    refused = await peer.request(role=Role.AUTHORIZER)
    assert refused.end.protocol_status == ProtocolStatus.UNKNOWN_ROLE
    assert refused.stdout == b""
    assert (await peer.request({b"TAG": b"ok"})).body == b"ok:"


async def test_no_multiplex_answers_cant_mpx_conn(servers: Servers, peers: list[Peer]) -> None:
    gate = asyncio.Event()

    async def app(req: Request) -> None:
        await gate.wait()
        await echo(req)

    server = await servers.start(App(app), multiplex=False)
    peer = await connect(server, peers)
    peer.send(peer.frame(1, {b"TAG": b"first"}))
    peer.send(peer.frame(2, {b"TAG": b"second"}))
    refused = await peer.answer(2)
    assert refused.end.protocol_status == ProtocolStatus.CANT_MPX_CONN
    gate.set()
    assert (await peer.answer(1)).body == b"first:"


async def test_abort_request_ends_it_and_the_app_sees_the_disconnect(
    servers: Servers, peers: list[Peer]
) -> None:
    seen: list[str] = []

    async def app(req: Request) -> None:
        if req.params.get(b"TAG"):
            return await echo(req)
        await req.send_stdout(OK + b"started")
        await req.wait_disconnected()
        seen.append("disconnected")
        with pytest.raises(ClientDisconnected):
            await req.send_stdout(b"more")
        seen.append("refused")

    server = await servers.start(App(app))
    peer = await connect(server, peers)
    peer.send(peer.frame(1))
    await peer.until(lambda ev: any(isinstance(e, StdoutReceived) for e in ev))
    peer.send(peer.codec.abort_request(1))
    answer = await peer.answer(1)
    assert answer.end == RequestEnded(1, 0, ProtocolStatus.REQUEST_COMPLETE)
    await wait_until(lambda: seen == ["disconnected", "refused"])
    assert (await peer.request({b"TAG": b"next"})).body == b"next:"


async def test_keep_conn_0_closes_and_1_keeps_the_connection(
    servers: Servers, peers: list[Peer]
) -> None:
    server = await servers.start(App(echo))
    peer = await connect(server, peers)
    for n in range(3):
        assert (await peer.request({b"TAG": b"%d" % n})).body == b"%d:" % n
    last = await peer.request({b"TAG": b"last"}, keep_conn=False)
    assert last.body == b"last:"
    assert await peer.eof() == b""


async def test_keep_conn_0_answer_survives_a_body_still_being_sent(
    servers: Servers, peers: list[Peer]
) -> None:
    """An early answer must not be destroyed by a reset while the web server still writes.

    Closing a socket with unread input makes the kernel send RST, which can discard the
    answer at the peer and fails its pending writes (nginx: 502 "writev() failed").
    """

    async def app(req: Request) -> None:
        await req.end(OK + b"early")  # answers without reading the body

    server = await servers.start(App(app))
    peer = await connect(server, peers)
    peer.send(peer.frame(1, body=None, keep_conn=False))
    await peer.until(lambda ev: any(_ended(e, 1) for e in ev))
    assert peer.take(1).body == b"early"
    # The web server goes on writing the body it was sending.
    for _ in range(20):
        peer.send(raw_record(RecordType.STDIN, 1, b"b" * 65528))
        await peer.writer.drain()
    peer.send(raw_record(RecordType.STDIN, 1))
    await peer.writer.drain()
    assert await peer.eof() == b""  # our side was shut down after END_REQUEST
    await peer.close()  # the web server closes its side: the connection is gone
    await wait_until(lambda: not server.state.connections)


# --------------------------------------------------------- roles, through both adapters


def _role_wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = environ["wsgi.input"].read()
    if environ["FCGI_ROLE"] == "AUTHORIZER":
        user = environ.get("HTTP_X_USER", "")
        if user != "alice":
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"denied:" + body]
        start_response("200 OK", [("Variable-REMOTE_USER", user), ("Content-Length", "0")])
        return [body]
    data = environ["fcgi.data"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body + b"|" + data.upper()]


async def _role_asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = dict(scope["headers"])
    if "fcgi.data" not in scope["extensions"]:  # AUTHORIZER (this server serves no RESPONDER)
        user = headers.get(b"x-user", b"")
        status = 200 if user == b"alice" else 403
        extra = [(b"variable-remote_user", user)] if status == 200 else []
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": body if status == 200 else b"denied:"})
        return
    data = b""
    while chunk := await scope["extensions"]["fcgi.data"]["receive"]():
        data += chunk
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body + b"|" + data.upper()})


def _role_adapter(kind: str) -> Application:
    if kind == "wsgi":
        return WSGIAdapter(_role_wsgi_app, threads=2)
    return ASGIAdapter(_role_asgi_app, lifespan="off")


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
async def test_authorizer_without_any_stdin_record_is_answered(
    servers: Servers, peers: list[Peer], kind: str
) -> None:
    """mod_authnz_fcgi sends BEGIN_REQUEST and PARAMS and no STDIN at all: the app must still
    run, see an empty body at once, and its 200 and Variable-* headers reach the web server."""
    server = await servers.start(_role_adapter(kind), roles=("authorizer", "filter"))
    peer = await connect(server, peers)
    allow = {b"REQUEST_METHOD": b"GET", b"REQUEST_URI": b"/x", b"HTTP_X_USER": b"alice"}
    peer.send(peer.frame(1, allow, body=None, role=Role.AUTHORIZER))
    allowed = await peer.answer(1)
    assert allowed.end == RequestEnded(1, 0, ProtocolStatus.REQUEST_COMPLETE)
    head, _, body = allowed.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"Status: 200")
    assert b"\r\nvariable-remote_user: alice" in head.lower()
    assert body == b""
    deny = {b"REQUEST_METHOD": b"GET", b"REQUEST_URI": b"/x", b"HTTP_X_USER": b"mallory"}
    peer.send(peer.frame(2, deny, body=None, role=Role.AUTHORIZER))
    denied = await peer.answer(2)
    assert denied.stdout.startswith(b"Status: 403")
    assert denied.body == b"denied:"


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
async def test_filter_data_stream_reaches_the_app(
    servers: Servers, peers: list[Peer], kind: str
) -> None:
    """FILTER: STDIN, then the file as DATA records that arrive later, in pieces."""
    server = await servers.start(_role_adapter(kind), roles=("authorizer", "filter"))
    peer = await connect(server, peers)
    c = peer.codec
    data = b"file text " * 10_000  # two DATA records and more
    params = {
        b"REQUEST_METHOD": b"POST",
        b"CONTENT_LENGTH": b"2",
        b"FCGI_DATA_LENGTH": b"%d" % len(data),
        b"FCGI_DATA_LAST_MOD": b"0",
    }
    peer.send(peer.frame(1, params, b"in", role=Role.FILTER))
    # The app is running (and reading) before any DATA exists: DATA must wake it later.
    await wait_until(lambda: server.state.active_requests == 1)
    peer.send(c.send_data(1, data[:7]))
    peer.send(c.send_data(1, data[7:]), c.end_data(1))
    answer = await peer.answer(1)
    assert answer.end == RequestEnded(1, 0, ProtocolStatus.REQUEST_COMPLETE)
    assert answer.stdout.startswith(b"Status: 200")
    assert answer.body == b"in|" + data.upper()


# ---------------------------------------------------------------------- broken peers


def _bad_version(peer: Peer) -> bytes:
    return raw_record(RecordType.BEGIN_REQUEST, 1, b"\x00\x01\x01\x00\x00\x00\x00\x00", version=2)


def _oversized_params(peer: Peer) -> bytes:
    return peer.frame(1, {b"BIG": b"v" * 2000}, body=None)


def _truncated_pairs(peer: Peer) -> bytes:
    c = peer.codec
    return (
        c.begin_request(1)
        + raw_record(RecordType.PARAMS, 1, b"\x05\x05ab")
        + raw_record(RecordType.PARAMS, 1)
    )


def _half_record(peer: Peer) -> bytes:
    return peer.codec.begin_request(1)[:5]


def _duplicate_begin(peer: Peer) -> bytes:
    # Request 1 is running (its app waits for the body) when a second BEGIN_REQUEST for id 1
    # arrives: spec §3.3 makes that a protocol error, and only this connection pays for it.
    again = raw_record(RecordType.BEGIN_REQUEST, 1, b"\x00\x01\x01\x00\x00\x00\x00\x00")
    return peer.frame(1, {b"TAG": b"dup"}, body=None) + again


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (_bad_version, "protocol error: unsupported FastCGI version"),
        (_oversized_params, "protocol error: params exceed 1024 bytes"),
        (_truncated_pairs, "protocol error: name-value pair longer than the stream"),
        (_half_record, "record incomplete after"),
        (_duplicate_begin, "protocol error: BEGIN_REQUEST for active request 1"),
    ],
    ids=["bad-version", "oversized-params", "truncated-pairs", "half-record", "duplicate-begin"],
)
async def test_a_broken_peer_loses_only_its_own_connection(
    servers: Servers,
    peers: list[Peer],
    bad: Callable[[Peer], bytes],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await servers.start(
        App(echo), max_params_bytes=1024, record_timeout_s=1.5, keepalive_timeout_s=60
    )
    good = await connect(server, peers)
    assert (await good.request({b"TAG": b"before"})).body == b"before:"
    broken = await connect(server, peers)
    host, port = broken.writer.get_extra_info("sockname")[:2]
    caplog.set_level(logging.WARNING, "fcgi_async.server")
    broken.send(bad(broken))
    closed = asyncio.ensure_future(broken.eof(within_s=5))
    answered = 0
    async with _compat.timeout(10):
        while not closed.done():
            answer = await good.request({b"TAG": b"%d" % answered}, b"body")
            assert answer.body == b"%d:body" % answered
            answered += 1
            await asyncio.wait([closed], timeout=0.05)
    assert await closed == b""  # closed without an answer
    assert answered >= 1
    assert (await good.request({b"TAG": b"after"})).body == b"after:"
    await wait_until(lambda: len(server.state.connections) == 1)
    # One log line names the peer and the reason; the good connection is never mentioned.
    lines = [r.getMessage() for r in caplog.records if r.name == "fcgi_async.server"]
    assert [line for line in lines if f"{host}:{port}" in line and reason in line], lines
    good_port = good.writer.get_extra_info("sockname")[1]
    assert not [line for line in lines if f":{good_port}" in line], lines


async def test_a_protocol_error_never_leaves_the_app_running_after_shutdown(
    servers: Servers, peers: list[Peer]
) -> None:
    outcome: list[str] = []

    async def app(req: Request) -> None:
        try:
            await asyncio.sleep(3600)  # ignores the disconnect
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    server = await servers.start(App(app))
    peer = await connect(server, peers)
    peer.send(peer.frame(1))
    await wait_until(lambda: server.state.active_requests == 1)
    peer.send(b"\x09" * 8)  # not version 1: the connection is dropped
    assert await peer.eof() == b""
    assert server.state.active_requests == 1, "the app task still runs"
    await servers.stop(server, graceful_timeout_s=0.2)
    assert outcome == ["cancelled"]


# ----------------------------------------------------------------- vanishing and slow


async def _streams_forever(req: Request) -> None:
    await req.send_stdout(OK)
    while True:
        await req.send_stdout(b"x" * 65536)


async def _reads_forever(req: Request) -> None:
    while await req.receive():
        pass
    await req.end(OK)


async def _waits_for_disconnect(req: Request) -> None:
    await req.send_stdout(OK)
    await req.wait_disconnected()


@pytest.mark.parametrize(
    "handler",
    [_streams_forever, _reads_forever, _waits_for_disconnect],
    ids=["streaming", "reading", "waiting"],
)
async def test_a_vanishing_client_leaves_no_task_behind(
    servers: Servers, handler: Callable[[Request], Awaitable[None]]
) -> None:
    server = await servers.start(App(handler))
    baseline = asyncio.all_tasks()
    peer = await Peer.connect(server.bound_addresses[0])
    peer.send(peer.frame(1, body=None))
    if handler is _reads_forever:
        peer.send(peer.codec.send_stdin(1, b"partial body"))
        await wait_until(lambda: server.state.active_requests == 1)
    else:
        await peer.until(lambda ev: bool(ev))
    peer.writer.transport.abort()  # gone, without a goodbye
    await wait_until(
        lambda: (
            server.state.active_requests == 0
            and not server.state.connections
            and asyncio.all_tasks() <= baseline
        )
    )


async def test_100_mb_to_a_slow_reader_keeps_the_write_buffer_bounded(
    servers: Servers, peers: list[Peer]
) -> None:
    total = 100 * 1024 * 1024
    block = b"z" * 65536

    async def app(req: Request) -> None:
        await req.send_stdout(OK)
        for _ in range(total // len(block)):
            await req.send_stdout(block)
        await req.end()

    server = await servers.start(App(app))
    peer = await connect(server, peers)
    peer.send(peer.frame(1))
    await wait_until(lambda: any(p.requests for p in server.state.connections))
    [proto] = server.state.connections
    # The reader lags completely: the server must stop at its high-water mark.
    await wait_until(lambda: proto.write_paused)
    largest = proto.transport.get_write_buffer_size()
    for _ in range(50):
        await asyncio.sleep(0)
        largest = max(largest, proto.transport.get_write_buffer_size())
    assert proto.write_paused
    # Then it reads, slowly: small reads with a yield between them.
    received = 0
    ended = False
    async with _compat.timeout(60):
        while not ended:
            data = await peer.reader.read(32768)
            assert data, "EOF before END_REQUEST"
            peer.codec.receive_data(data)
            while not isinstance(event := peer.codec.next_event(), _NeedData):
                if isinstance(event, StdoutReceived):
                    received += len(event.data)
                elif isinstance(event, RequestEnded):
                    ended = True
            largest = max(largest, proto.transport.get_write_buffer_size())
            await asyncio.sleep(0)
    assert received == total + len(OK)
    assert largest < 1024 * 1024, f"{largest} bytes buffered for a slow reader"


# -------------------------------------------------------------------------- shutdown


async def test_graceful_shutdown_lets_a_running_request_finish(
    servers: Servers, peers: list[Peer]
) -> None:
    gate = asyncio.Event()
    started = asyncio.Event()

    async def app(req: Request) -> None:
        started.set()
        await gate.wait()
        await req.end(OK + b"finished")

    server = await servers.start(App(app))
    address = server.bound_addresses[0]
    busy = await connect(server, peers)
    idle = await connect(server, peers)
    busy.send(busy.frame(1))
    async with _compat.timeout(5):
        await started.wait()
    await wait_until(lambda: len(server.state.connections) == 2)
    stopping = asyncio.ensure_future(servers.stop(server, graceful_timeout_s=10))
    await wait_until(lambda: not server.state.accepting)
    assert await idle.eof() == b""  # idle connections close at once
    with pytest.raises(ConnectionRefusedError):
        await Peer.connect(address)  # nobody listens any more
    refused = await busy.request()  # new requests on a busy connection: OVERLOADED
    assert refused.end.protocol_status == ProtocolStatus.OVERLOADED
    assert not stopping.done()
    gate.set()
    assert (await busy.answer(1)).body == b"finished"
    async with _compat.timeout(5):
        await stopping
    assert await busy.eof() == b""


async def test_graceful_timeout_cancels_what_is_still_running(
    servers: Servers, peers: list[Peer]
) -> None:
    outcome: list[str] = []

    async def app(req: Request) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    server = await servers.start(App(app))
    peer = await connect(server, peers)
    peer.send(peer.frame(1))
    await wait_until(lambda: server.state.active_requests == 1)
    started = time.monotonic()
    await servers.stop(server, graceful_timeout_s=0.3)
    assert time.monotonic() - started < 3
    assert outcome == ["cancelled"]
    assert server.state.active_requests == 0
    assert await peer.eof() == b""


async def test_shutdown_runs_once_and_addresses_stay_known(peers: list[Peer]) -> None:
    app = App(echo)
    async with Server(Config(bind=("127.0.0.1:0",)), app) as server:
        address = server.bound_addresses[0]
        peer = await connect(server, peers)
        assert (await peer.request({b"TAG": b"x"})).body == b"x:"
        await server.shutdown()
        assert server.bound_addresses == [address]
    assert app.lifecycle == ["startup", "shutdown"]


# ------------------------------------------------------------------------- listeners


async def test_unix_socket_serves_and_is_removed_at_shutdown(
    servers: Servers, peers: list[Peer], short_tmp: Path
) -> None:
    path = short_tmp / "app.sock"
    app = App(echo)
    server = await servers.start(app, bind=(f"unix:{path}",), socket_mode=0o660)
    assert server.bound_addresses == [f"unix:{path}"]
    assert path.stat().st_mode & 0o777 == 0o660
    peer = await connect(server, peers)
    assert (await peer.request({b"TAG": b"unix"}, b"b")).body == b"unix:b"
    await servers.stop(server)
    assert not path.exists()
    assert app.lifecycle == ["startup", "shutdown"]


async def test_an_inherited_unix_socket_file_outlives_the_server(
    peers: list[Peer], short_tmp: Path
) -> None:
    # systemd's or the web server's socket is never ours to remove, and a draining prefork
    # worker leaves the path its siblings listen on: asyncio 3.13+ and uvloop 0.22+ unlink
    # the file at close unless told not to (cleanup_socket).
    path = short_tmp / "inherited.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    app = App(echo)
    async with Server(Config(), app, inherited=[listener]) as server:
        peer = await connect(server, peers)
        assert (await peer.request({b"TAG": b"kept"})).body == b"kept:"
        await server.shutdown()
    listener.close()
    assert path.exists()
    assert app.lifecycle == ["startup", "shutdown"]


async def test_unix_socket_replaces_a_stale_socket_file(
    servers: Servers, peers: list[Peer], short_tmp: Path
) -> None:
    path = short_tmp / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # a crashed server leaves its file behind
    assert path.exists()
    server = await servers.start(App(echo), bind=(f"unix:{path}",))
    peer = await connect(server, peers)
    assert (await peer.request({b"TAG": b"fresh"})).body == b"fresh:"


async def test_unix_socket_refuses_to_replace_a_live_socket(
    servers: Servers, short_tmp: Path
) -> None:
    path = short_tmp / "live.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(path))
        live.listen()
        with pytest.raises(BindError, match="another server is listening on it"):
            await servers.start(App(echo), bind=(f"unix:{path}",))
        assert path.exists()


async def test_unix_socket_refuses_to_replace_a_regular_file(
    servers: Servers, short_tmp: Path
) -> None:
    path = short_tmp / "data.txt"
    path.write_text("precious")
    with pytest.raises(BindError, match="exists and is not a socket"):
        await servers.start(App(echo), bind=(f"unix:{path}",))
    assert path.read_text() == "precious"


async def test_unix_path_under_a_regular_file_is_a_bind_error(short_tmp: Path) -> None:
    (short_tmp / "file").write_text("x")
    with pytest.raises(BindError, match=r"cannot bind unix:.*: Not a directory"):
        bind_socket(parse_bind(f"unix:{short_tmp}/file/app.sock"), backlog=5)


async def test_tcp_address_in_use_fails_before_the_app_starts(servers: Servers) -> None:
    app = App(echo)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BindError, match=f"cannot bind 127.0.0.1:{port}: address already in"):
            await servers.start(app, bind=("127.0.0.1:0", f"127.0.0.1:{port}"))
    assert app.lifecycle == []


async def test_a_failed_startup_releases_the_listeners(servers: Servers, short_tmp: Path) -> None:
    path = short_tmp / "app.sock"
    app = App(echo, startup_error=RuntimeError("no database"))
    with pytest.raises(RuntimeError, match="no database"):
        await servers.start(app, bind=(f"unix:{path}",))
    assert not path.exists()
    server = await servers.start(App(echo), bind=(f"unix:{path}",))  # free to bind again
    await servers.stop(server)
    assert not path.exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("localhost", "use HOST:PORT, [V6]:PORT, unix:PATH or fd://N"),
        ("::1:9000", "use HOST:PORT, [V6]:PORT, unix:PATH or fd://N"),
        ("[::1]9000", "IPv6 addresses look like [::1]:9000"),
        ("127.0.0.1:http", "port 'http' is not a number"),
        ("127.0.0.1:70000", "port 70000 is out of range"),
        ("unix:", "unix: needs a path"),
        ("fd://three", "fd:// needs a number"),
        ("fd://-1", "file descriptors are not negative"),
    ],
)
async def test_bad_bind_strings_say_what_is_wrong(
    servers: Servers, value: str, message: str
) -> None:
    with pytest.raises(BindError) as info:
        parse_bind(value)
    assert message in str(info.value)
    assert repr(value) in str(info.value)
    with pytest.raises(BindError, match="bad bind"):
        await servers.start(App(echo), bind=(value,))


async def test_fd_bind_serves_an_inherited_socket(servers: Servers, peers: list[Peer]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        fd = os.dup(listener.fileno())  # the server owns (and closes) its copy
        port = listener.getsockname()[1]
    server = await servers.start(App(echo), bind=(f"fd://{fd}",))
    assert server.bound_addresses == [f"127.0.0.1:{port}"]
    peer = await connect(server, peers)
    assert (await peer.request({b"TAG": b"fd"})).body == b"fd:"


async def test_fd_bind_rejects_what_is_not_a_socket(servers: Servers) -> None:
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(BindError, match=f"fd://{read_end} is not a socket"):
            await servers.start(App(echo), bind=(f"fd://{read_end}",))
    finally:
        os.close(read_end)
        os.close(write_end)
    with pytest.raises(BindError, match=f"cannot use fd://{read_end}"):
        bind_socket(parse_bind(f"fd://{read_end}"), backlog=5)


async def test_ipv6_loopback(servers: Servers, peers: list[Peer]) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server = await servers.start(App(echo), bind=("[::1]:0",))
    assert server.bound_addresses[0].startswith("[::1]:")
    peer = await connect(server, peers)
    assert (await peer.request({b"TAG": b"v6"})).body == b"v6:"


async def test_allowed_clients_close_other_peers_at_once(
    servers: Servers, peers: list[Peer]
) -> None:
    refusing = await servers.start(App(echo), allowed_clients=("127.0.0.2", "::1"))
    outsider = await connect(refusing, peers)
    assert await outsider.eof() == b""
    welcoming = await servers.start(App(echo), allowed_clients=("127.0.0.0/8",))
    insider = await connect(welcoming, peers)
    assert (await insider.request({b"TAG": b"in"})).body == b"in:"


async def test_max_connections_refuses_extra_connections(
    servers: Servers, peers: list[Peer]
) -> None:
    server = await servers.start(App(echo), max_connections=1)
    first = await connect(server, peers)
    assert (await first.request({b"TAG": b"1"})).body == b"1:"
    second = await connect(server, peers)
    assert await second.eof() == b""
    assert (await first.request({b"TAG": b"still"})).body == b"still:"


# ------------------------------------------------------------------------ hostile peers

#: The most a flooding test sends, and for how long it tries (bounded traffic and time).
FLOOD_MAX_BYTES = 32 * 1024 * 1024
FLOOD_MAX_S = 20.0
#: A send that makes no progress for this long means the server stopped reading.
STALL_S = 2.0


async def _non_reading_socket(server: Server) -> socket.socket:
    """A TCP socket to ``server`` with a small receive buffer, so unread output stays ours."""
    host, _, port = server.bound_addresses[0].rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    return sock


async def _flood(sock: socket.socket, chunk: bytes) -> int:
    """Send ``chunk`` repeatedly until the peer stops taking it (or the bounds); bytes sent."""
    loop = asyncio.get_running_loop()
    sent = 0
    deadline = time.monotonic() + FLOOD_MAX_S
    while sent < FLOOD_MAX_BYTES and time.monotonic() < deadline:
        try:
            await asyncio.wait_for(loop.sock_sendall(sock, chunk), STALL_S)
        except asyncio.TimeoutError:  # TimeoutError itself on 3.11+, not on 3.10
            break
        sent += len(chunk)
    return sent


async def test_a_peer_that_reads_nothing_is_not_read_either(servers: Servers) -> None:
    """Unknown-type records are answered by the connection itself: without flow control for
    those answers, the server read on and buffered them without bound."""
    server = await servers.start(App(echo))
    sock = await _non_reading_socket(server)
    try:
        await _flood(sock, raw_record(99, 0) * 65536)
        (proto,) = server.state.connections
        assert proto.read_paused & PAUSED_FOR_OUTPUT
        assert proto.transport.get_write_buffer_size() < 4 * 1024 * 1024
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("keepalive_s", "send_timeout_s"),
    [(3, 1), (1, 3)],
    ids=["while-writing-is-paused", "while-closing"],
)
async def test_output_left_unread_is_aborted_after_the_send_timeout(
    servers: Servers,
    peers: list[Peer],
    caplog: pytest.LogCaptureFixture,
    keepalive_s: float,
    send_timeout_s: float,
) -> None:
    """A peer that never reads its answer no longer holds the only connection slot, whether
    the deadline ends it while its writes wait or after the keep-alive timeout began a close
    that waits for a flush (the transport's abort after its close, on both loops)."""
    caplog.set_level(logging.WARNING, "fcgi_async.server")

    async def big(req: Request) -> None:
        await req.end(OK + b"x" * (8 * 1024 * 1024))

    server = await servers.start(
        App(big), max_connections=1, keepalive_timeout_s=keepalive_s, send_timeout_s=send_timeout_s
    )
    sock = await _non_reading_socket(server)
    try:
        codec = ClientConnection()
        request = codec.begin_request(1) + _join([codec.send_params(1, {}), codec.end_stdin(1)])
        await asyncio.get_running_loop().sock_sendall(sock, request)
        await wait_until(lambda: server.state.total_requests == 1)
        await wait_until(lambda: not server.state.connections, within_s=15)
        newcomer = await connect(server, peers)
        newcomer.send(newcomer.frame(1))
        await newcomer.until(lambda ev: any(_ended(e, 1) for e in ev), within_s=15)
    finally:
        sock.close()
    lines = [r.getMessage() for r in caplog.records if "--send-timeout" in r.getMessage()]
    assert len(lines) == 1, lines


async def test_a_peer_that_half_closes_after_its_request_gets_the_answer(
    servers: Servers, peers: list[Peer]
) -> None:
    """socat and friends shut down their sending side after the request, as php-fpm allows."""
    release = asyncio.Event()

    async def slow_echo(req: Request) -> None:
        await release.wait()  # still working when the EOF arrives
        await echo(req)

    server = await servers.start(App(slow_echo))
    peer = await connect(server, peers)
    peer.send(peer.frame(1, {b"TAG": b"half"}, b"closed"))
    await wait_until(lambda: server.state.total_requests == 1)
    (proto,) = server.state.connections
    peer.writer.write_eof()
    await wait_until(lambda: proto.closed or proto.input_closed)
    release.set()
    answer = await peer.answer(1)
    assert answer.body == b"half:closed"
    assert await peer.eof() == b""
    await wait_until(lambda: not server.state.connections)
