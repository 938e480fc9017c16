"""The application's output: STDOUT/STDERR framing, END_REQUEST coalescing, break_connection."""

from __future__ import annotations

import array

import pytest

from fcgi_async.protocol import (
    MAX_CONTENT_LENGTH,
    ProtocolStatus,
    RecordType,
    RemoteProtocolError,
    RequestEnded,
    StderrReceived,
    StdoutReceived,
)

from .helpers import ConnectionPair, WireRecord, join, parse_wire


def _begun(request_id: int = 1) -> ConnectionPair:
    pair = ConnectionPair()
    pair.to_server(pair.request_bytes(request_id, {b"K": b"V"}, b"body"))
    return pair


def _check_framing(records: list[WireRecord]) -> None:
    for rec in records:
        assert rec.version == 1
        assert len(rec.content) <= MAX_CONTENT_LENGTH
        assert (len(rec.content) + len(rec.padding)) % 8 == 0
        assert len(rec.padding) < 8


class TestStdout:
    """STDOUT framing: split at 65535, padded to 8, never an accidental empty record."""

    @pytest.mark.parametrize("size", [1, 8, 100, 16383, 16384, 65535, 65536, 3 * 65535 + 1])
    def test_split_and_padded_on_the_wire(self, size: int) -> None:
        pair = _begun()
        payload = bytes(i % 251 for i in range(size))
        wire = pair.server.send_stdout(1, payload)
        records = parse_wire(wire)
        _check_framing(records)
        assert all(r.type == RecordType.STDOUT and r.request_id == 1 for r in records)
        assert all(r.content for r in records)  # never the stream-closing empty record
        assert b"".join(r.content for r in records) == payload
        events = pair.to_client(wire)
        assert b"".join(e.data for e in events if isinstance(e, StdoutReceived)) == payload

    def test_empty_frames_nothing(self) -> None:
        pair = _begun()
        assert pair.server.send_stdout(1, b"") == []
        assert pair.server.send_stderr(1, b"") == []

    def test_memoryview_input(self) -> None:
        pair = _begun()
        data = bytearray(b"abc" * 10_000)
        wire = pair.server.send_stdout(1, memoryview(data))
        assert b"".join(r.content for r in parse_wire(wire)) == bytes(data)


class TestEndRequest:
    """The end of a response: closing records and END_REQUEST, coalesced."""

    @pytest.mark.parametrize("size", [0, 1, 7, 8, 1000, 16383])
    def test_small_response_is_one_buffer(self, size: int) -> None:
        pair = _begun()
        out = pair.server.end_request(1, b"s" * size, app_status=3)
        assert len(out) == 1
        records = parse_wire(out)
        _check_framing(records)
        expected_types = [RecordType.STDOUT] * (2 if size else 1) + [RecordType.END_REQUEST]
        assert [r.type for r in records] == expected_types
        assert records[-2].content == b""
        assert pair.to_client(out) == [
            *([StdoutReceived(1, b"s" * size)] if size else []),
            RequestEnded(1, 3, ProtocolStatus.REQUEST_COMPLETE),
        ]

    @pytest.mark.parametrize("size", [16384, 65536, 200_001])
    def test_large_response_ends_with_one_tail_buffer(self, size: int) -> None:
        pair = _begun()
        payload = b"L" * size
        out = pair.server.end_request(1, payload)
        tail = parse_wire(out[-1])
        assert [r.type for r in tail] == [RecordType.STDOUT, RecordType.END_REQUEST]
        records = parse_wire(out)
        _check_framing(records)
        assert b"".join(r.content for r in records if r.type == RecordType.STDOUT) == payload
        events = pair.to_client(out)
        assert events[-1] == RequestEnded(1, 0, ProtocolStatus.REQUEST_COMPLETE)

    def test_stderr_stream_closed_only_if_used(self) -> None:
        pair = _begun()
        err = pair.server.send_stderr(1, b"oops")
        out = pair.server.end_request(1, b"body", app_status=1)
        records = parse_wire(out)
        assert [(r.type, r.content) for r in records] == [
            (RecordType.STDOUT, b"body"),
            (RecordType.STDOUT, b""),
            (RecordType.STDERR, b""),
            (RecordType.END_REQUEST, b"\x00\x00\x00\x01\x00\x00\x00\x00"),
        ]
        assert pair.to_client(err, out) == [
            StderrReceived(1, b"oops"),
            StdoutReceived(1, b"body"),
            RequestEnded(1, 1, ProtocolStatus.REQUEST_COMPLETE),
        ]

    def test_stdout_then_end(self) -> None:
        pair = _begun()
        first = pair.server.send_stdout(1, b"Status: 200\r\n\r\n")
        out = pair.server.end_request(1)
        assert pair.to_client(first, out) == [
            StdoutReceived(1, b"Status: 200\r\n\r\n"),
            RequestEnded(1, 0, ProtocolStatus.REQUEST_COMPLETE),
        ]

    @pytest.mark.parametrize("status", list(ProtocolStatus))
    def test_protocol_status(self, status: ProtocolStatus) -> None:
        pair = _begun()
        out = pair.server.end_request(1, protocol_status=status, app_status=-1)
        assert pair.to_client(out) == [RequestEnded(1, 0xFFFFFFFF, status)]

    def test_frees_the_id(self) -> None:
        pair = _begun(9)
        pair.to_client(pair.server.end_request(9))
        assert not pair.server.is_active(9)
        assert not pair.client.is_active(9)
        assert pair.client.free_request_id() == 1
        assert pair.server.active_requests == 0


class TestBreakConnection:
    """Failing a response visibly after its headers left (docs/architecture.md, Failure rules)."""

    def test_peer_fails_visibly(self) -> None:
        pair = _begun()
        head = pair.server.send_stdout(1, b"Status: 200\r\n\r\npartial")
        poison = pair.server.break_connection()
        assert pair.server.close_requested
        assert pair.server.active_requests == 0
        pair.client.receive_data(join(head) + poison)
        assert pair.client.next_event() == StdoutReceived(1, b"Status: 200\r\n\r\npartial")
        with pytest.raises(RemoteProtocolError, match="version"):
            pair.client.next_event()

    def test_poison_is_a_bad_header(self) -> None:
        pair = _begun()
        poison = pair.server.break_connection()
        assert len(poison) == 8
        assert poison[0] != 1

    def test_connection_is_dead_after(self) -> None:
        pair = _begun()
        pair.server.break_connection()
        with pytest.raises(RemoteProtocolError):
            pair.server.next_event()


class TestWideMemoryviews:
    """A memoryview whose items are wider than a byte is framed by its bytes, not its items."""

    @pytest.mark.parametrize("count", [3, 5000, 40_000])
    def test_send_stdout(self, count: int) -> None:
        pair = _begun()
        words = array.array("I", range(count))
        wire = pair.server.send_stdout(1, memoryview(words))
        records = parse_wire(wire)
        _check_framing(records)
        assert b"".join(r.content for r in records) == words.tobytes()

    @pytest.mark.parametrize("count", [3, 5000, 40_000])
    def test_end_request(self, count: int) -> None:
        pair = _begun()
        words = array.array("H", range(count))
        events = pair.to_client(pair.server.end_request(1, memoryview(words)))
        assert b"".join(e.data for e in events if isinstance(e, StdoutReceived)) == words.tobytes()
        assert events[-1] == RequestEnded(1, 0, ProtocolStatus.REQUEST_COMPLETE)
