"""FastCGIProtocol on a fake transport: flow control, coalescing, aborts, failures, timers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import pytest

from fcgi_async.config import Config
from fcgi_async.protocol import (
    FCGI_MAX_CONNS,
    FCGI_MAX_REQS,
    FCGI_MPXS_CONNS,
    ClientConnection,
    GetValuesResult,
    ProtocolStatus,
    RecordType,
    RequestEnded,
    Role,
    StdoutReceived,
)
from fcgi_async.server.connection import (
    BODY_CHUNK_OVERHEAD_BYTES,
    LINGER_MAX_S,
    LINGER_TIMEOUT_S,
    FastCGIProtocol,
)
from fcgi_async.server.state import ServerState
from fcgi_async.types import ClientDisconnected, Request
from tests.protocol.helpers import parse_wire, raw_record

from .helpers import App, FakeTransport, Harness, settle, wait_until

OK_HEAD = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n"


def stdout_of(events: Sequence[object], rid: int = 1) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, StdoutReceived) and e.request_id == rid)


def ended(events: Sequence[object], rid: int = 1) -> RequestEnded | None:
    for e in events:
        if isinstance(e, RequestEnded) and e.request_id == rid:
            return e
    return None


async def _never(req: Request) -> None:
    await asyncio.Event().wait()


# ------------------------------------------------------------------------------ coalescing


async def test_small_response_is_one_write_with_stdout_end_and_end_request() -> None:
    async def app(req: Request) -> None:
        assert await req.receive() == b""
        await req.end(OK_HEAD + b"hello")

    h = Harness(app)
    h.feed(h.request_bytes())
    await wait_until(lambda: h.transport.writes)
    await settle()
    assert len(h.transport.writes) == 1
    records = parse_wire(h.transport.writes[0])
    assert [(r.type, len(r.content) > 0) for r in records] == [
        (RecordType.STDOUT, True),
        (RecordType.STDOUT, False),
        (RecordType.END_REQUEST, True),
    ]
    assert records[0].content == OK_HEAD + b"hello"
    events = h.events()
    assert ended(events) == RequestEnded(1, 0, ProtocolStatus.REQUEST_COMPLETE)
    assert not h.transport.closed  # keep_conn
    assert h.state.active_requests == 0


async def test_app_status_and_stderr_stream_are_closed_in_the_final_write() -> None:
    async def app(req: Request) -> None:
        await req.send_stderr(b"warning: something\n")
        await req.end(OK_HEAD + b"x", app_status=3)

    h = Harness(app)
    h.feed(h.request_bytes())
    await wait_until(lambda: len(h.transport.writes) == 2)
    last = parse_wire(h.transport.writes[1])
    assert [r.type for r in last] == [
        RecordType.STDOUT,
        RecordType.STDOUT,
        RecordType.STDERR,
        RecordType.END_REQUEST,
    ]
    assert ended(h.events()) == RequestEnded(1, 3, ProtocolStatus.REQUEST_COMPLETE)


# ---------------------------------------------------------------------- read flow control


async def test_reading_pauses_above_the_body_buffer_and_resumes_below_half() -> None:
    limit = 65536
    permits: asyncio.Queue[None] = asyncio.Queue()
    got: list[bytes] = []

    async def app(req: Request) -> None:
        while True:
            await permits.get()
            chunk = await req.receive()
            got.append(chunk)
            if not chunk:
                break
        await req.end(OK_HEAD + str(sum(map(len, got))).encode())

    h = Harness(app, Config(max_body_buffer_bytes=limit))
    c = h.client
    h.feed(h.request_bytes(body=None))
    await settle()
    # Three 30000-byte records: 90000 buffered > 65536 -> pause.
    h.feed(*(c.send_stdin(1, b"a" * 30000) for _ in range(3)))
    assert h.transport.read_paused
    assert h.proto.read_paused
    permits.put_nowait(None)
    await wait_until(lambda: len(got) == 1)
    assert h.proto.buffered == 2 * (30000 + BODY_CHUNK_OVERHEAD_BYTES)
    assert h.transport.read_paused, "60000 bytes is above half the limit: stay paused"
    permits.put_nowait(None)
    await wait_until(lambda: len(got) == 2)
    assert h.proto.buffered == 30000 + BODY_CHUNK_OVERHEAD_BYTES
    assert not h.transport.read_paused, "30064 <= 32768: resume"
    h.feed(c.end_stdin(1))
    permits.put_nowait(None)
    permits.put_nowait(None)
    await wait_until(lambda: ended(h.events()) is not None)
    assert h.proto.buffered == 0


async def test_unread_body_is_released_when_the_request_ends() -> None:
    async def app(req: Request) -> None:
        await req.end(OK_HEAD)  # never reads the body

    limit = 65536
    h = Harness(app, Config(max_body_buffer_bytes=limit))
    h.feed(h.request_bytes(body=None))
    h.feed(h.client.send_stdin(1, b"b" * (limit + 1)))
    assert h.transport.read_paused
    await wait_until(lambda: h.transport.writes)
    assert h.proto.buffered == 0
    assert not h.transport.read_paused


# --------------------------------------------------------------------- write flow control


async def test_app_writes_wait_while_the_transport_is_paused() -> None:
    sent: list[int] = []
    gate = asyncio.Event()

    async def app(req: Request) -> None:
        await req.send_stdout(OK_HEAD)
        sent.append(1)
        await gate.wait()
        await req.send_stdout(b"x" * 1000)
        sent.append(2)
        await req.end()

    h = Harness(app)
    h.proto.pause_writing()
    h.feed(h.request_bytes())
    await settle()
    assert sent == []
    assert h.transport.writes == []
    h.proto.resume_writing()
    await wait_until(lambda: sent == [1])
    assert len(h.transport.writes) == 1
    h.proto.pause_writing()
    gate.set()
    await settle()
    assert sent == [1]
    assert len(h.transport.writes) == 1
    h.proto.resume_writing()
    await wait_until(lambda: ended(h.events()) is not None)
    assert sent == [1, 2]


async def test_connection_lost_wakes_a_writer_blocked_on_flow_control() -> None:
    outcome: list[BaseException] = []

    async def app(req: Request) -> None:
        try:
            await req.send_stdout(OK_HEAD)
        except ClientDisconnected as exc:
            outcome.append(exc)
            raise

    h = Harness(app)
    h.proto.pause_writing()
    h.feed(h.request_bytes())
    await settle()
    assert outcome == []
    h.transport.lose()
    await wait_until(lambda: outcome)
    assert isinstance(outcome[0], ClientDisconnected)
    await wait_until(lambda: h.state.active_requests == 0)
    assert h.app.requests[0].disconnected


async def test_connection_lost_wakes_a_reader_and_disconnect_waiters() -> None:
    outcome: list[str] = []

    async def app(req: Request) -> None:
        async def watch() -> None:
            await req.wait_disconnected()
            outcome.append("disconnected")

        watcher = asyncio.ensure_future(watch())
        try:
            await req.receive()
        except ClientDisconnected:
            outcome.append("reader woke")
            await watcher
            raise

    h = Harness(app)
    h.feed(h.request_bytes(body=None))
    await settle()
    assert outcome == []
    h.transport.lose()
    await wait_until(lambda: len(outcome) == 2)
    assert outcome == ["reader woke", "disconnected"]
    await wait_until(lambda: h.state.active_requests == 0)
    assert h.transport.writes == []  # nothing is written to a lost connection


async def test_abort_wakes_a_writer_blocked_on_flow_control() -> None:
    outcome: list[BaseException] = []

    async def app(req: Request) -> None:
        try:
            await req.send_stdout(OK_HEAD)
        except ClientDisconnected as exc:
            outcome.append(exc)

    h = Harness(app)
    h.proto.pause_writing()
    h.feed(h.request_bytes())
    await settle()
    h.feed(h.client.abort_request(1))
    await wait_until(lambda: outcome, within_s=2)
    assert ended(h.events()) == RequestEnded(1, 0, ProtocolStatus.REQUEST_COMPLETE)


async def test_two_tasks_waiting_on_one_request_are_all_woken() -> None:
    """A body reader and a second reader (a disconnect listener) wait at the same time."""
    got: list[bytes] = []
    senders: list[str] = []

    async def app(req: Request) -> None:
        async def read() -> None:
            got.append(await req.receive())

        async def send(name: str) -> None:
            try:
                await req.send_stdout(OK_HEAD)
            except ClientDisconnected:
                senders.append(name)

        await asyncio.gather(read(), read(), send("a"), send("b"))

    h = Harness(app)
    h.proto.pause_writing()
    h.feed(h.request_bytes(body=None))
    await settle()
    h.feed(h.client.send_stdin(1, b"one"))
    await wait_until(lambda: len(got) == 1, within_s=2)
    h.feed(h.client.end_stdin(1))
    await wait_until(lambda: len(got) == 2, within_s=2)
    assert sorted(got) == [b"", b"one"]
    h.feed(h.client.abort_request(1))
    await wait_until(lambda: len(senders) == 2, within_s=2)
    await wait_until(lambda: h.state.active_requests == 0)


async def test_a_cancelled_reader_does_not_linger_in_the_waiters() -> None:
    lingering: list[int] = []

    async def app(req: Request) -> None:
        for _ in range(50):
            # asyncio.TimeoutError: not yet the builtin one on Python 3.10
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(req.receive(), 0)
        lingering.append(len(req._waiters))  # type: ignore[attr-defined]
        await req.end(OK_HEAD)

    h = Harness(app)
    h.feed(h.request_bytes(body=None))
    await wait_until(lambda: ended(h.events()) is not None)
    # Checked here, not in the app: an assertion failing there would only give a 500.
    assert lingering == [0]


# --------------------------------------------------------------------------------- abort


async def test_abort_request_answers_at_once_and_the_app_sees_the_disconnect() -> None:
    seen: list[str] = []

    async def app(req: Request) -> None:
        await req.wait_disconnected()
        seen.append("disconnected")
        with pytest.raises(ClientDisconnected):
            await req.send_stdout(b"too late")
        seen.append("send refused")

    h = Harness(app)
    h.feed(h.request_bytes())
    await settle()
    h.feed(h.client.abort_request(1))
    # END_REQUEST is written synchronously, before the app even runs again.
    assert ended(h.events()) == RequestEnded(1, 0, ProtocolStatus.REQUEST_COMPLETE)
    await wait_until(lambda: len(seen) == 2)
    await wait_until(lambda: h.state.active_requests == 0)
    assert not h.transport.closed
    assert h.transport.output.count(bytes((1, RecordType.END_REQUEST))) == 1


async def test_abort_frees_the_request_id_for_reuse() -> None:
    calls: list[int] = []

    async def app(req: Request) -> None:
        calls.append(req.request_id)
        if len(calls) == 1:
            await req.wait_disconnected()
            return
        await req.end(OK_HEAD + b"second")

    h = Harness(app)
    h.feed(h.request_bytes())
    await settle()
    h.feed(h.client.abort_request(1))
    assert ended(h.events()) is not None
    h.feed(h.request_bytes())
    await wait_until(lambda: len(calls) == 2)
    await wait_until(lambda: stdout_of(h.events()).endswith(b"second"))


async def test_reading_after_the_response_ended_does_not_hang() -> None:
    outcome: list[str] = []

    async def app(req: Request) -> None:
        async def reader() -> None:
            try:
                await req.receive()
            except ClientDisconnected:
                outcome.append("waiting reader woke")

        waiting = asyncio.ensure_future(reader())
        await asyncio.sleep(0)
        await req.end(OK_HEAD + b"answered before reading")
        await waiting
        with pytest.raises(ClientDisconnected):
            await req.receive()
        outcome.append("late reader refused")

    h = Harness(app)
    h.feed(h.request_bytes(body=None))  # the body never comes
    await wait_until(lambda: len(outcome) == 2, within_s=2)
    assert outcome == ["waiting reader woke", "late reader refused"]
    await wait_until(lambda: h.state.active_requests == 0)


# ------------------------------------------------------------------------------ failures


async def test_app_error_before_the_response_gives_a_500(caplog: pytest.LogCaptureFixture) -> None:
    async def app(req: Request) -> None:
        raise RuntimeError("boom")

    h = Harness(app)
    with caplog.at_level(logging.ERROR, "fcgi_async.server"):
        h.feed(h.request_bytes())
        await wait_until(lambda: h.transport.writes)
    events = h.events()
    assert stdout_of(events).startswith(b"Status: 500 ")
    assert ended(events) == RequestEnded(1, 0, ProtocolStatus.REQUEST_COMPLETE)
    assert len(h.transport.writes) == 1
    assert not h.transport.closed
    assert "application error" in caplog.text
    assert h.state.active_requests == 0


async def test_app_returning_without_a_response_gives_a_500_even_while_paused() -> None:
    async def app(req: Request) -> None:
        return

    h = Harness(app)
    h.proto.pause_writing()
    h.feed(h.request_bytes())
    await wait_until(lambda: h.state.active_requests == 0)
    # A short 500 costs a few bytes over the high-water mark; breaking the connection would
    # fail every other request multiplexed on it.
    assert stdout_of(h.events()).startswith(b"Status: 500 ")
    assert not h.transport.closed


async def test_app_error_after_a_disconnect_is_quiet_and_writes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(req: Request) -> None:
        await req.wait_disconnected()
        raise RuntimeError("follow-up failure of a gone client")

    h = Harness(app)
    with caplog.at_level(logging.DEBUG, "fcgi_async.server"):
        h.feed(h.request_bytes())
        await settle()
        h.transport.lose()
        await wait_until(lambda: h.state.active_requests == 0)
    assert h.transport.writes == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "failed after a disconnect" in caplog.text


async def test_filter_waits_for_data_that_comes_later() -> None:
    async def app(req: Request) -> None:
        data = b""
        while chunk := await req.receive_data():
            data += chunk
        await req.end(OK_HEAD + data)

    h = Harness(app)
    h.feed(h.request_bytes(role=Role.FILTER, body=b"body"))
    await settle()
    h.feed(h.client.send_data(1, b"late "))
    await settle()
    h.feed(h.client.send_data(1, b"file"), h.client.end_data(1))
    events: list[object] = []

    def answered() -> bool:
        events.extend(h.events())
        return ended(events) is not None

    await wait_until(answered)
    assert stdout_of(events).endswith(b"late file")


async def test_app_error_after_the_response_started_poisons_and_closes() -> None:
    async def app(req: Request) -> None:
        await req.send_stdout(OK_HEAD + b"partial")
        raise RuntimeError("boom")

    h = Harness(app)
    h.feed(h.request_bytes())
    await wait_until(lambda: h.transport.closed)
    assert h.transport.writes[-1] == b"\x00" * 8
    records = parse_wire(b"".join(h.transport.writes[:-1]))
    assert [r.type for r in records] == [RecordType.STDOUT]
    assert bytes((1, RecordType.END_REQUEST)) not in h.transport.output
    await wait_until(lambda: h.state.active_requests == 0)


async def test_failure_of_one_multiplexed_request_disconnects_the_others() -> None:
    others: list[str] = []

    async def app(req: Request) -> None:
        if req.request_id == 1:
            await req.send_stdout(OK_HEAD)
            await asyncio.sleep(0)
            req.fail()
            return
        await req.wait_disconnected()
        others.append("disconnected")

    h = Harness(app)
    h.feed(h.request_bytes(2), h.request_bytes(1))
    await wait_until(lambda: h.transport.closed)
    await wait_until(lambda: others)
    await wait_until(lambda: h.state.active_requests == 0)
    assert h.transport.writes[-1] == b"\x00" * 8


# ------------------------------------------------------------------------ connection ends


async def test_keep_conn_0_closes_after_end_request() -> None:
    async def app(req: Request) -> None:
        await req.end(OK_HEAD + b"bye")

    h = Harness(app)
    h.feed(h.request_bytes(keep_conn=False))
    await wait_until(lambda: h.transport.closed)
    assert not h.transport.aborted
    assert ended(h.events()) is not None


async def test_keep_conn_0_with_input_still_coming_lingers_then_closes() -> None:
    async def app(req: Request) -> None:
        await req.end(OK_HEAD + b"early")  # the body is still on its way

    h = Harness(app)
    h.feed(h.request_bytes(body=None, keep_conn=False))
    h.feed(h.client.send_stdin(1, b"part"))
    await wait_until(lambda: h.transport.eof_written)
    assert ended(h.events()) is not None
    assert not h.transport.closed, "closing with unread input would reset the connection"
    assert h.proto.buffered == 0
    h.feed(raw_record(RecordType.STDIN, 1, b"rest" * 1000), raw_record(RecordType.STDIN, 1))
    assert h.proto.buffered == 0, "dropped, not buffered"
    assert h.proto.eof_received() is False  # the web server closed: asyncio closes too
    start = h.proto.lingering_since
    assert start is not None
    h.proto.check_timeouts(start + 1)
    assert not h.transport.closed
    h.proto.check_timeouts(start + 60)
    assert h.transport.closed


async def test_lingering_lasts_while_input_keeps_coming_up_to_a_cap() -> None:
    async def app(req: Request) -> None:
        await req.end(OK_HEAD + b"refused")  # a streamed upload the app will not take

    h = Harness(app)
    h.feed(h.request_bytes(body=None, keep_conn=False))
    await wait_until(lambda: h.transport.eof_written)
    start = h.proto.lingering_since
    assert start is not None
    chunk = raw_record(RecordType.STDIN, 1, b"s" * 1000)
    for second in range(1, 40, 4):  # input every 4 s: never LINGER_TIMEOUT_S of silence
        h.proto.lingering_input_at = start + second
        h.proto.check_timeouts(start + second + 3)
        assert not h.transport.closed
    h.feed(chunk)
    last = h.proto.lingering_input_at
    h.proto.check_timeouts(last + LINGER_TIMEOUT_S - 1)
    assert not h.transport.closed
    h.proto.lingering_input_at = start + LINGER_MAX_S  # still busy at the cap
    h.proto.check_timeouts(start + LINGER_MAX_S + 1)
    assert h.transport.closed


async def test_refused_keep_conn_0_request_lingers_for_its_remaining_records() -> None:
    h = Harness(_never, Config(roles=("responder",)))
    h.feed(h.request_bytes(role=Role.FILTER, body=None, keep_conn=False))
    assert ended(h.events()) == RequestEnded(1, 0, ProtocolStatus.UNKNOWN_ROLE)
    assert h.transport.eof_written
    assert not h.transport.closed
    h.feed(raw_record(RecordType.STDIN, 1, b"x"))  # ignored


async def test_keep_conn_1_keeps_the_connection_for_the_next_request() -> None:
    async def app(req: Request) -> None:
        await req.end(OK_HEAD + req.params[b"N"])

    h = Harness(app)
    for n in (b"1", b"2", b"3"):
        h.feed(h.request_bytes(params={b"N": n}))
        events: list[object] = []

        def answered(events: list[object] = events) -> bool:
            events.extend(h.events())
            return ended(events) is not None

        await wait_until(answered)
        assert stdout_of(events).endswith(n)
    assert not h.transport.closed


async def test_protocol_error_closes_and_disconnects_running_requests() -> None:
    seen: list[str] = []

    async def app(req: Request) -> None:
        await req.wait_disconnected()
        seen.append("disconnected")

    h = Harness(app)
    h.feed(h.request_bytes())
    await settle()
    h.feed(raw_record(RecordType.STDIN, 1, b"x", version=2))
    assert h.transport.closed
    await wait_until(lambda: seen)
    await wait_until(lambda: h.state.active_requests == 0)


async def test_eof_while_a_body_is_still_coming_is_a_disconnect() -> None:
    seen: list[str] = []

    async def app(req: Request) -> None:
        await req.wait_disconnected()
        seen.append("disconnected")

    h = Harness(app)
    h.feed(h.request_bytes(body=None))
    await settle()
    assert h.proto.eof_received() is False  # asyncio then closes the transport
    h.transport.lose()
    await wait_until(lambda: seen)


# -------------------------------------------------------------------------------- timers


async def test_keepalive_timeout_closes_an_idle_connection_only() -> None:
    release = asyncio.Event()

    async def app(req: Request) -> None:
        await release.wait()
        await req.end(OK_HEAD)

    h = Harness(app, Config(keepalive_timeout_s=10))
    assert h.proto.idle_since is not None
    start = h.proto.idle_since
    h.proto.check_timeouts(start + 9)
    assert not h.transport.closed
    h.feed(h.request_bytes())
    assert h.proto.idle_since is None
    h.proto.check_timeouts(start + 100)
    assert not h.transport.closed, "a running request is not idle"
    release.set()
    await wait_until(lambda: h.proto.idle_since is not None)
    idle = h.proto.idle_since
    assert idle is not None
    h.proto.check_timeouts(idle + 9)
    assert not h.transport.closed
    h.proto.check_timeouts(idle + 11)
    assert h.transport.closed


async def test_record_timeout_closes_a_connection_with_a_half_record() -> None:
    seen: list[str] = []

    async def app(req: Request) -> None:
        await req.wait_disconnected()
        seen.append("disconnected")

    h = Harness(app, Config(record_timeout_s=5, keepalive_timeout_s=100))
    h.feed(h.request_bytes(body=None))
    whole = b"".join(bytes(b) for b in h.client.send_stdin(1, b"z" * 100))
    h.feed(whole[:20])
    since = h.proto.partial_since
    assert since is not None
    h.proto.check_timeouts(since + 4)
    assert not h.transport.closed
    h.proto.check_timeouts(since + 6)
    assert h.transport.closed
    await wait_until(lambda: seen)
    await wait_until(lambda: h.state.active_requests == 0)


async def test_record_timer_restarts_when_records_complete() -> None:
    """A steady upload whose reads end mid-record is progress, not a slowloris."""

    async def app(req: Request) -> None:
        while await req.receive():
            pass
        await req.end(OK_HEAD)

    h = Harness(app, Config(record_timeout_s=5, keepalive_timeout_s=100))
    h.feed(h.request_bytes(body=None))
    record = b"".join(bytes(b) for b in h.client.send_stdin(1, b"u" * 1000))
    h.feed(record[:500])
    first = h.proto.partial_since
    assert first is not None
    # Much later, that record completes and the next one arrives half.
    h.proto.partial_since = first - 4  # pretend 4 s passed
    h.feed(record[500:] + record[:500])
    since = h.proto.partial_since
    assert since is not None
    assert since > first - 4, "a completed record restarts the timer"
    h.proto.check_timeouts(first + 2)
    assert not h.transport.closed


async def test_record_timer_does_not_run_while_we_paused_reading() -> None:
    """A half record waiting because *we* stopped reading is not the peer's slowness."""
    release = asyncio.Event()

    async def app(req: Request) -> None:
        await release.wait()
        while await req.receive():
            pass
        await req.end(OK_HEAD)

    h = Harness(app, Config(record_timeout_s=5, max_body_buffer_bytes=65536))
    h.feed(h.request_bytes(body=None))
    record = b"".join(bytes(b) for b in h.client.send_stdin(1, b"p" * 60000))
    h.feed(record, record, record[:100])  # 120000 bytes buffered, then half a record
    assert h.transport.read_paused
    since = h.proto.partial_since
    assert since is not None
    h.proto.check_timeouts(since + 60)
    assert not h.transport.closed
    release.set()
    await wait_until(lambda: not h.transport.read_paused)
    now = asyncio.get_running_loop().time()
    h.proto.check_timeouts(now + 4)
    assert not h.transport.closed, "the timer restarts when reading resumes"
    h.feed(record[100:], h.client.end_stdin(1))
    await wait_until(lambda: ended(h.events()) is not None)


# ------------------------------------------------------------------ connections and values


async def test_max_connections_refuses_the_next_connection() -> None:
    h = Harness(_never, Config(max_connections=1))
    second = FastCGIProtocol(h.state)
    transport = FakeTransport(second)
    second.connection_made(transport)
    assert transport.aborted
    assert h.state.connections == {h.proto}
    await settle()
    assert h.state.connections == {h.proto}
    h.transport.lose()
    third = FastCGIProtocol(h.state)
    third.connection_made(FakeTransport(third))
    assert h.state.connections == {third}


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        (("127.0.0.1", 5), True),
        (("10.1.2.3", 5), True),
        (("10.2.0.1", 5), False),
        (("::ffff:127.0.0.1", 5, 0, 0), True),
        (("::1", 5, 0, 0), False),
        (("fe80::1%eth0", 5, 0, 2), False),
        (("2001:db8::7", 5, 0, 0), True),
        ("", True),  # a unix socket: its file mode decides
    ],
)
async def test_allowed_clients_refuse_other_tcp_peers(peer: object, allowed: bool) -> None:
    config = Config(allowed_clients=("127.0.0.1", "10.1.0.0/16", "2001:db8::/32"))
    state = ServerState(config, App(_never), asyncio.get_running_loop())
    proto = FastCGIProtocol(state)
    transport = FakeTransport(proto, peername=peer)
    proto.connection_made(transport)
    assert transport.aborted is not allowed
    assert (proto in state.connections) is allowed
    await settle()
    assert proto not in state.connections or allowed


@pytest.mark.parametrize("multiplex", [True, False])
async def test_get_values_are_true_to_the_config(multiplex: bool) -> None:
    config = Config(max_connections=7, max_requests_per_connection=5, multiplex=multiplex)
    h = Harness(_never, config)
    h.feed(ClientConnection.get_values([FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS, b"OTHER"]))
    [result] = h.events()
    assert isinstance(result, GetValuesResult)
    assert result.values == {
        FCGI_MAX_CONNS: b"7",
        FCGI_MAX_REQS: b"35" if multiplex else b"7",
        FCGI_MPXS_CONNS: b"1" if multiplex else b"0",
    }


async def test_no_multiplex_refuses_a_second_request_with_cant_mpx_conn() -> None:
    release = asyncio.Event()

    async def app(req: Request) -> None:
        await release.wait()
        await req.end(OK_HEAD + b"first")

    h = Harness(app, Config(multiplex=False))
    h.feed(h.request_bytes(1))
    await settle()
    h.feed(h.request_bytes(2))
    assert ended(h.events(), 2) == RequestEnded(2, 0, ProtocolStatus.CANT_MPX_CONN)
    release.set()
    await wait_until(lambda: h.state.active_requests == 0)
    events = h.events()
    assert stdout_of(events).endswith(b"first")


async def test_authorizer_has_no_body_and_filter_gets_data() -> None:
    async def app(req: Request) -> None:
        if req.role == Role.AUTHORIZER:
            assert await req.receive() == b""
            await req.end(b"Status: 200\r\n\r\n")
            return
        body = await req.receive_data()
        rest = await req.receive_data()
        assert rest == b""
        await req.end(OK_HEAD + body.upper())

    h = Harness(app)
    h.feed(h.request_bytes(1, role=Role.AUTHORIZER, body=None))
    await wait_until(lambda: h.state.active_requests == 0)
    c = h.client
    h.feed(
        h.request_bytes(2, role=Role.FILTER, body=b"ignored"),
        c.send_data(2, b"file text"),
        c.end_data(2),
    )
    await wait_until(lambda: h.state.active_requests == 0)
    events = h.events()
    # Exactly the app's answer: a failed assertion in the app would have given a 500.
    assert stdout_of(events, 1) == b"Status: 200\r\n\r\n"
    assert ended(events, 1) == RequestEnded(1, 0, ProtocolStatus.REQUEST_COMPLETE)
    assert stdout_of(events, 2).endswith(b"FILE TEXT")


async def test_stop_accepting_closes_when_idle_and_refuses_new_requests() -> None:
    release = asyncio.Event()

    async def app(req: Request) -> None:
        await release.wait()
        await req.end(OK_HEAD)

    h = Harness(app)
    h.feed(h.request_bytes(1))
    await settle()
    h.proto.stop_accepting()
    assert not h.transport.closed
    h.feed(h.request_bytes(2))
    assert ended(h.events(), 2) == RequestEnded(2, 0, ProtocolStatus.OVERLOADED)
    release.set()
    await wait_until(lambda: h.transport.closed)
    assert ended(h.events(), 1) is not None


async def test_state_counts_requests_until_their_tasks_end() -> None:
    """active_requests counts running application code, which shutdown must wait for."""
    release = asyncio.Event()

    async def app(req: Request) -> None:
        await req.end(OK_HEAD)
        await release.wait()  # work after the response, e.g. a background flush

    h = Harness(app)
    h.feed(h.request_bytes())
    await wait_until(lambda: ended(h.events()) is not None)
    assert h.proto.requests == {}, "the request id is free once END_REQUEST is written"
    assert h.state.active_requests == 1
    release.set()
    await wait_until(lambda: h.state.active_requests == 0)


async def test_requests_cut_by_a_protocol_error_stay_counted_while_they_run() -> None:
    release = asyncio.Event()

    async def app(req: Request) -> None:
        await release.wait()  # ignores the disconnect for a while

    h = Harness(app)
    h.feed(h.request_bytes())
    await settle()
    h.feed(b"\x07" * 8)
    assert h.transport.closed
    await settle()
    assert h.state.active_requests == 1
    assert len(h.state.tasks) == 1
    release.set()
    await wait_until(lambda: h.state.active_requests == 0)
    assert not h.state.tasks


async def test_peer_name_is_formatted_for_logs() -> None:
    state = ServerState(Config(), App(_never), asyncio.get_running_loop())
    for peer, expected in (
        (("10.0.0.1", 5), "10.0.0.1:5"),
        (("::1", 5, 0, 0), "[::1]:5"),
        ("", "unix:('127.0.0.1', 9000)"),
    ):
        proto = FastCGIProtocol(state)
        proto.connection_made(FakeTransport(proto, peername=peer))
        assert proto.peer == expected
        assert "FastCGIProtocol" in repr(proto)
