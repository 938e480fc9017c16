"""FastCGIProtocol against peers that do not read, hoard memory, flood or half-close.

On the fake transport: reading pauses for every kind of output, the send deadline, the
per-connection budget, the per-chunk charge of buffered bodies, one log line per connection
for refusals, and answers to a peer that shut down its sending side.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from fcgi_async.config import Config, ConfigError
from fcgi_async.protocol import RecordType, RequestEnded, Role
from fcgi_async.server.connection import (
    BODY_CHUNK_OVERHEAD_BYTES,
    PAUSED_FOR_BUFFER,
    PAUSED_FOR_OUTPUT,
)
from fcgi_async.types import ClientDisconnected, Request
from tests.protocol.helpers import parse_wire, raw_record

from .helpers import Harness, settle, wait_until

OK_HEAD = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n"
BEGIN_UNKNOWN_ROLE = bytes((0, 9, 1, 0, 0, 0, 0, 0))  # role 9, FCGI_KEEP_CONN


async def _never(req: Request) -> None:
    await asyncio.Event().wait()


def _ended(h: Harness) -> list[RequestEnded]:
    return [e for e in h.events() if isinstance(e, RequestEnded)]


# ------------------------------------------------------------- reading follows writing


async def test_reading_pauses_while_writing_is_paused_and_resumes_with_it() -> None:
    h = Harness(_never)
    h.feed(raw_record(99, 0))  # an unknown management record: answered by the connection
    assert h.transport.writes
    h.proto.pause_writing()
    assert h.transport.read_paused, "a peer that reads nothing must not be read either"
    assert h.proto.read_paused == PAUSED_FOR_OUTPUT
    h.proto.resume_writing()
    assert not h.transport.read_paused
    assert h.proto.read_paused == 0


async def test_output_and_body_pauses_are_lifted_separately() -> None:
    permits: asyncio.Queue[None] = asyncio.Queue()

    async def app(req: Request) -> None:
        while await req.receive():
            await permits.get()
        await asyncio.Event().wait()

    limit = 65536
    h = Harness(app, Config(max_body_buffer_bytes=limit))
    h.feed(h.request_bytes(body=None))
    await settle()
    h.feed(*(h.client.send_stdin(1, b"a" * 30000) for _ in range(3)))
    assert h.proto.read_paused == PAUSED_FOR_BUFFER
    h.proto.pause_writing()
    assert h.proto.read_paused == PAUSED_FOR_BUFFER | PAUSED_FOR_OUTPUT
    for _ in range(2):
        permits.put_nowait(None)
    await wait_until(lambda: not h.proto.read_paused & PAUSED_FOR_BUFFER)
    assert h.transport.read_paused, "the body drained, but output still does not"
    h.proto.resume_writing()
    assert not h.transport.read_paused
    # And the other way round: output drains first, the body pause stays.
    h.feed(*(h.client.send_stdin(1, b"b" * 30000) for _ in range(3)))
    h.proto.pause_writing()
    h.proto.resume_writing()
    assert h.transport.read_paused
    assert h.proto.read_paused == PAUSED_FOR_BUFFER


# ------------------------------------------------------------------- the send deadline


async def test_stalled_output_is_aborted_after_the_send_timeout_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(_never, Config(send_timeout_s=2))
    h.feed(h.request_bytes())
    await settle()
    h.transport.buffer_size = 100_000
    h.proto.pause_writing()
    start = h.proto.send_stalled_since
    assert start is not None
    with caplog.at_level(logging.WARNING, "fcgi_async.server"):
        h.proto.check_timeouts(start + 1.5)
        assert not h.transport.aborted
        h.proto.check_timeouts(start + 2.5)
        assert h.transport.aborted
        assert h.proto not in h.state.connections, "the slot is free at once"
        h.proto.check_timeouts(start + 3.5)
    assert h.app.requests[0].disconnected, "the running request is told"
    lines = [r.getMessage() for r in caplog.records if "--send-timeout" in r.getMessage()]
    assert len(lines) == 1
    assert "127.0.0.1:40000" in lines[0]
    assert "100000 bytes" in lines[0]


async def test_output_that_drains_in_time_is_not_aborted() -> None:
    h = Harness(_never, Config(send_timeout_s=2))
    h.proto.pause_writing()
    start = h.proto.send_stalled_since
    assert start is not None
    h.proto.resume_writing()
    h.proto.check_timeouts(start + 10)
    assert not h.transport.aborted
    assert h.proto.send_stalled_since is None


async def test_a_close_waiting_for_a_peer_that_never_reads_is_aborted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(_never, Config(keepalive_timeout_s=2, send_timeout_s=2, max_connections=1))
    h.transport.buffer_size = 5000  # output below the high-water mark, never read
    now = h.state.loop.time()
    h.proto.check_timeouts(now + 3)  # idle: the keep-alive timeout closes it
    assert h.transport.closed
    assert not h.transport.aborted
    await settle()
    assert h.proto in h.state.connections, "the close waits for the flush"
    start = h.proto.send_stalled_since
    assert start is not None
    with caplog.at_level(logging.WARNING, "fcgi_async.server"):
        h.proto.check_timeouts(start + 1.5)
        assert not h.transport.aborted
        h.proto.check_timeouts(start + 2.5)
    assert h.transport.aborted
    assert h.proto not in h.state.connections
    assert sum("--send-timeout" in r.getMessage() for r in caplog.records) == 1


async def test_a_close_that_flushes_in_time_is_not_aborted() -> None:
    h = Harness(_never, Config(keepalive_timeout_s=2, send_timeout_s=2))
    h.transport.buffer_size = 5000
    now = h.state.loop.time()
    h.proto.check_timeouts(now + 3)
    h.transport.flush()
    await wait_until(lambda: h.proto not in h.state.connections)
    assert not h.transport.aborted


async def test_lingering_with_unsent_output_is_timed_out_too() -> None:
    async def app(req: Request) -> None:
        h.transport.buffer_size = 3000  # the answer does not leave: the peer reads nothing
        await req.end(OK_HEAD)

    h = Harness(app, Config(send_timeout_s=2))
    h.feed(h.request_bytes(body=None, keep_conn=False))  # the body may still come: linger
    await wait_until(lambda: h.proto.lingering_since is not None)
    start = h.proto.send_stalled_since
    assert start is not None
    h.proto.check_timeouts(start + 2.5)
    assert h.transport.aborted


# ---------------------------------------------------------------------------- the budget


async def test_unfinished_params_over_the_budget_close_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = Config(
        max_params_bytes=40_000, max_body_buffer_bytes=20_000, max_connection_buffer_bytes=100_000
    )
    h = Harness(_never, config)
    half = raw_record(RecordType.PARAMS, 1, b"p" * 30_000)
    with caplog.at_level(logging.WARNING, "fcgi_async.server"):
        for rid in (1, 2, 3):
            h.feed(
                h.client.begin_request(rid), half.replace(b"\x00\x01", rid.to_bytes(2, "big"), 1)
            )
            assert not h.transport.closed, "90000 bytes of params fit in 100000"
        h.feed(h.client.begin_request(4), half.replace(b"\x00\x01", b"\x00\x04", 1))
    assert h.transport.closed
    assert "over --max-connection-buffer-bytes 100000" in caplog.text
    assert "127.0.0.1:40000" in caplog.text


async def test_params_and_a_full_body_buffer_of_one_request_fit_the_default_budget() -> None:
    config = Config()
    h = Harness(_never, config)
    h.feed(h.request_bytes(body=None))
    await settle()
    h.feed(h.client.send_stdin(1, b"x" * config.max_body_buffer_bytes))
    assert h.transport.read_paused
    # A multiplexing client begins a request with params at their maximum meanwhile.
    h.feed(h.client.begin_request(2))
    params = b"q" * (config.max_params_bytes - 100)
    for start in range(0, len(params), 60_000):
        h.feed(raw_record(RecordType.PARAMS, 2, params[start : start + 60_000]))
    assert not h.transport.closed


def test_the_budget_must_hold_the_body_share_and_one_requests_params() -> None:
    with pytest.raises(ConfigError, match="max_connection_buffer_bytes"):
        Config(max_connection_buffer_bytes=1024 * 1024)
    with pytest.raises(ConfigError, match="max_connection_buffer_bytes"):
        Config(max_connection_buffer_bytes=0)
    with pytest.raises(ConfigError, match="send_timeout_s"):
        Config(send_timeout_s=0)
    assert Config(
        max_body_buffer_bytes=1000, max_params_bytes=1000, max_connection_buffer_bytes=2000
    )


async def test_small_body_chunks_are_charged_their_overhead() -> None:
    h = Harness(_never, Config(max_body_buffer_bytes=65536))
    h.feed(h.request_bytes(body=None))
    await settle()
    h.feed(*(h.client.send_stdin(1, b"z") for _ in range(1100)))
    # 1100 payload bytes, but 1100 bytes objects: 1100 x 65 > 65536.
    assert h.transport.read_paused
    assert h.proto.buffered == 1100 * (1 + BODY_CHUNK_OVERHEAD_BYTES)


async def test_unread_body_chunks_are_released_with_their_charge() -> None:
    async def app(req: Request) -> None:
        await req.receive()  # one chunk, then the rest is dropped with the request
        await req.end(OK_HEAD)

    h = Harness(app, Config(max_body_buffer_bytes=65536))
    h.feed(h.request_bytes(body=None))
    h.feed(*(h.client.send_stdin(1, b"z") for _ in range(10)))
    await wait_until(lambda: _ended(h))
    assert h.proto.buffered == 0


# ------------------------------------------------------------------------ log flooding


async def test_refusals_log_one_line_then_one_summary_when_the_connection_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(_never, Config(max_requests_per_connection=1))
    h.feed(h.request_bytes())  # runs
    with caplog.at_level(logging.WARNING, "fcgi_async.server"):
        for rid in range(2, 302):
            h.feed(raw_record(RecordType.BEGIN_REQUEST, rid, BEGIN_UNKNOWN_ROLE))
        h.feed(h.client.begin_request(400))  # OVERLOADED
        await settle()
        assert len(caplog.records) == 1
        assert "refused request 2 from 127.0.0.1:40000: UNKNOWN_ROLE" in caplog.text
        h.transport.lose()
    assert len(caplog.records) == 2
    summary = caplog.records[1].getMessage()
    assert "301 refused requests" in summary
    assert "OVERLOADED: 1" in summary
    assert "UNKNOWN_ROLE: 300" in summary
    ends = [r for r in parse_wire(h.transport.output) if r.type == RecordType.END_REQUEST]
    assert len(ends) == 301  # every refusal is still answered


async def test_a_single_refusal_has_no_summary(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(_never)
    with caplog.at_level(logging.WARNING, "fcgi_async.server"):
        h.feed(raw_record(RecordType.BEGIN_REQUEST, 1, BEGIN_UNKNOWN_ROLE))
        h.transport.lose()
    assert len(caplog.records) == 1


# ---------------------------------------------------------------------------- half-close


async def test_a_peer_that_half_closes_after_a_complete_request_is_answered() -> None:
    release = asyncio.Event()

    async def app(req: Request) -> None:
        assert await req.receive() == b"body"
        assert await req.receive() == b""
        await release.wait()
        await req.end(OK_HEAD + b"answer")

    h = Harness(app)
    h.feed(h.request_bytes(body=b"body", keep_conn=True))
    await settle()
    assert h.proto.eof_received() is True, "keep our side open for the answer"
    assert h.proto.eof_received() is True, "asyncio reports EOF again after reading resumes"
    assert not h.transport.closed
    release.set()
    await wait_until(lambda: h.transport.closed)
    events = h.events()
    assert any(isinstance(e, RequestEnded) for e in events)
    assert b"answer" in b"".join(getattr(e, "data", b"") for e in events)


async def test_half_close_answers_complete_requests_and_disconnects_the_others() -> None:
    seen: list[str] = []

    async def app(req: Request) -> None:
        if req.params.get(b"REQUEST_URI") == b"/reading":
            try:
                while await req.receive():
                    pass
            except ClientDisconnected:
                seen.append("reader disconnected")
                raise
        else:
            await asyncio.sleep(0.01)
            await req.end(OK_HEAD + b"done")

    h = Harness(app)
    h.feed(h.request_bytes(1, {b"REQUEST_URI": b"/complete"}))
    h.feed(h.request_bytes(2, {b"REQUEST_URI": b"/reading"}, body=None))
    await settle()
    assert h.proto.eof_received() is True
    await wait_until(lambda: h.transport.closed)
    assert seen == ["reader disconnected"]
    assert [e.request_id for e in _ended(h)] == [1]


async def test_half_close_mid_response_is_a_disconnect() -> None:
    """nginx closes its upstream connection when its client aborts mid-response: the app that
    waits for that must hear of it, as before."""
    seen: list[str] = []

    async def app(req: Request) -> None:
        await req.send_stdout(OK_HEAD + b"partial")
        await req.wait_disconnected()
        seen.append("disconnected")

    h = Harness(app)
    h.feed(h.request_bytes())
    await wait_until(lambda: h.transport.writes)
    assert h.proto.eof_received() is False
    await wait_until(lambda: seen)


async def test_half_close_with_nothing_owed_closes() -> None:
    h = Harness(_never)
    assert h.proto.eof_received() is False
    h2 = Harness(_never)
    h2.feed(h2.request_bytes(role=Role.RESPONDER, body=None))
    await settle()
    assert h2.proto.eof_received() is False
