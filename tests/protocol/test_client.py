"""ClientConnection: framing requests, reading what an application answers (spec §3-§6)."""

from __future__ import annotations

import pytest

from fcgi_async.protocol import (
    FCGI_MAX_CONNS,
    MAX_CONTENT_LENGTH,
    NEED_DATA,
    ClientConnection,
    GetValuesResult,
    LocalProtocolError,
    ProtocolStatus,
    RecordType,
    RemoteProtocolError,
    RequestEnded,
    Role,
    StderrReceived,
    StdoutReceived,
    UnknownTypeReceived,
    encode_pairs,
    encode_record,
)
from fcgi_async.protocol.records import encode_end_request

from .helpers import client_events, join, parse_wire, raw_record


def _active(*ids: int) -> ClientConnection:
    client = ClientConnection()
    for rid in ids:
        client.begin_request(rid)
    return client


def _feed(client: ClientConnection, *frames: bytes) -> list[object]:
    client.receive_data(b"".join(frames))
    return list(client_events(client))


class TestRequestIds:
    """Choosing, reserving and freeing request ids."""

    def test_lowest_free_id(self) -> None:
        client = ClientConnection()
        assert client.free_request_id() == 1
        client.begin_request(1)
        client.begin_request(2)
        client.begin_request(4)
        assert client.free_request_id() == 3
        assert client.active_requests == 3
        client.forget_request(2)
        client.forget_request(2)  # forgetting twice is harmless
        assert client.free_request_id() == 2
        assert not client.is_active(2)

    def test_all_ids_in_use(self) -> None:
        client = ClientConnection()
        for rid in range(1, 0x10000):
            client.begin_request(rid)
        with pytest.raises(LocalProtocolError, match="65535"):
            client.free_request_id()

    @pytest.mark.parametrize("rid", [0, -1, 0x10000])
    def test_begin_out_of_range(self, rid: int) -> None:
        with pytest.raises(LocalProtocolError, match="out of range"):
            ClientConnection().begin_request(rid)

    def test_begin_twice(self) -> None:
        client = _active(1)
        with pytest.raises(LocalProtocolError, match="already active"):
            client.begin_request(1)

    def test_repr(self) -> None:
        client = _active(2, 1)
        client.receive_data(b"\x01\x06")
        assert repr(client) == "<ClientConnection active=[1, 2] pending=2>"
        assert client.has_partial_record


class TestFraming:
    """What the client puts on the wire for each request stream."""

    def test_begin_request(self) -> None:
        (rec,) = parse_wire(ClientConnection().begin_request(5, role=Role.FILTER, keep_conn=False))
        assert (rec.type, rec.request_id, rec.content) == (
            RecordType.BEGIN_REQUEST,
            5,
            b"\x00\x03\x00\x00\x00\x00\x00\x00",
        )

    def test_params_end_with_empty_record(self) -> None:
        records = parse_wire(_active(1).send_params(1, {b"A": b"B"}))
        assert [(r.type, r.content) for r in records] == [
            (RecordType.PARAMS, encode_pairs({b"A": b"B"})),
            (RecordType.PARAMS, b""),
        ]

    def test_big_params_span_records(self) -> None:
        params = {b"BIG": b"x" * 100_000, b"SMALL": b"y"}
        records = parse_wire(_active(1).send_params(1, params))
        assert len(records) == 3
        assert b"".join(r.content for r in records) == encode_pairs(params)

    def test_streams(self) -> None:
        client = _active(1)
        wire = join(client.send_stdin(1, b"in")) + client.end_stdin(1)
        wire += join(client.send_data(1, b"dat")) + client.end_data(1) + client.abort_request(1)
        assert [(r.type, r.content) for r in parse_wire(wire)] == [
            (RecordType.STDIN, b"in"),
            (RecordType.STDIN, b""),
            (RecordType.DATA, b"dat"),
            (RecordType.DATA, b""),
            (RecordType.ABORT_REQUEST, b""),
        ]
        assert client.is_active(1)  # an abort does not free the id

    @pytest.mark.parametrize(
        "call",
        ["send_params", "send_stdin", "end_stdin", "send_data", "end_data", "abort_request"],
    )
    def test_inactive_request(self, call: str) -> None:
        client = ClientConnection()
        method = getattr(client, call)
        args = (7,) if call in {"end_stdin", "end_data", "abort_request"} else (7, b"")
        with pytest.raises(LocalProtocolError, match="not active") as info:
            method(*args)
        assert info.value.request_id == 7

    def test_get_values(self) -> None:
        (rec,) = parse_wire(ClientConnection.get_values([FCGI_MAX_CONNS, b"X"]))
        assert (rec.type, rec.request_id) == (RecordType.GET_VALUES, 0)
        assert rec.content == encode_pairs({FCGI_MAX_CONNS: b"", b"X": b""})

    def test_get_values_too_many_names(self) -> None:
        names = [b"n" * 100] * (MAX_CONTENT_LENGTH // 102 + 1)
        with pytest.raises(LocalProtocolError, match="one record"):
            ClientConnection.get_values(names)


class TestInput:
    """What the client makes of an application's records, good and bad."""

    def test_response(self) -> None:
        client = _active(1)
        events = _feed(
            client,
            encode_record(RecordType.STDOUT, 1, b"out"),
            encode_record(RecordType.STDERR, 1, b"err"),
            encode_record(RecordType.STDOUT, 1),
            encode_record(RecordType.STDERR, 1),
            encode_end_request(1, 7, ProtocolStatus.REQUEST_COMPLETE),
        )
        assert events == [
            StdoutReceived(1, b"out"),
            StderrReceived(1, b"err"),
            RequestEnded(1, 7, ProtocolStatus.REQUEST_COMPLETE),
        ]
        assert not client.is_active(1)
        assert client.next_event() is NEED_DATA

    def test_inactive_ids_ignored(self) -> None:
        client = _active(1)
        events = _feed(
            client,
            encode_record(RecordType.STDOUT, 2, b"x"),
            encode_end_request(2, 0, 0),
            encode_record(RecordType.END_REQUEST, 3, b"short"),
        )
        assert events == []
        assert client.is_active(1)

    def test_after_forget(self) -> None:
        client = _active(1)
        client.forget_request(1)
        assert _feed(client, encode_end_request(1, 0, 0)) == []

    def test_newer_record_type_ignored(self) -> None:
        assert _feed(_active(1), raw_record(12, 1, b"future", 2)) == []

    def test_get_values_result(self) -> None:
        content = encode_pairs({FCGI_MAX_CONNS: b"10"})
        assert _feed(
            ClientConnection(), encode_record(RecordType.GET_VALUES_RESULT, 0, content)
        ) == [GetValuesResult(0, {FCGI_MAX_CONNS: b"10"})]

    def test_unknown_type(self) -> None:
        record = encode_record(RecordType.UNKNOWN_TYPE, 0, b"\x2a" + b"\x00" * 7)
        assert _feed(ClientConnection(), record) == [UnknownTypeReceived(0, 42)]

    @pytest.mark.parametrize(
        ("frame", "match"),
        [
            (encode_record(RecordType.UNKNOWN_TYPE, 0, b"\x2a"), "UNKNOWN_TYPE body"),
            (encode_record(RecordType.STDOUT, 0, b"x"), "management record type 6"),
            (encode_record(RecordType.GET_VALUES, 0, b""), "management record type 9"),
            (encode_record(RecordType.GET_VALUES_RESULT, 0, b"\x05"), "truncated"),
            (encode_record(RecordType.END_REQUEST, 1, b"\x00" * 7), "END_REQUEST body"),
            (encode_end_request(1, 0, 4), "unknown protocol status 4"),
            (raw_record(6, 1, version=0), "version"),
            *(
                (encode_record(t, 1, b""), "not valid from an application")
                for t in (
                    RecordType.BEGIN_REQUEST,
                    RecordType.ABORT_REQUEST,
                    RecordType.PARAMS,
                    RecordType.STDIN,
                    RecordType.DATA,
                    RecordType.GET_VALUES,
                )
            ),
        ],
    )
    def test_application_errors(self, frame: bytes, match: str) -> None:
        client = _active(1)
        client.receive_data(frame)
        with pytest.raises(RemoteProtocolError, match=match):
            client.next_event()
        with pytest.raises(RemoteProtocolError, match="already failed"):
            client.next_event()


def test_need_data_repr() -> None:
    assert repr(NEED_DATA) == "NEED_DATA"
    assert ClientConnection().next_event() is NEED_DATA
