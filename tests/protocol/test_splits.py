"""A stream's meaning does not depend on how it is split (spec §3.3).

The same bytes are fed whole, a byte at a time and cut at every offset; the events must be
identical. Records are also built by hand so PARAMS can be cut mid-pair and padded anywhere
from 0 to 255 bytes, which the client codec (always whole pairs, padding < 8) never produces.
"""

from __future__ import annotations

import pytest

from fcgi_async.protocol import (
    FCGI_MAX_REQS,
    ClientConnection,
    DataEnded,
    DataReceived,
    GetValuesResult,
    ProtocolStatus,
    RecordType,
    RequestAborted,
    RequestEnded,
    RequestReceived,
    Role,
    ServerConnection,
    ServerEvent,
    StderrReceived,
    StdinEnded,
    StdinReceived,
    StdoutReceived,
    UnknownTypeReceived,
    encode_pairs,
)
from fcgi_async.protocol.records import encode_begin_request, encode_end_request

from .helpers import (
    ConnectionPair,
    byte_at_a_time,
    chunks_at,
    feed_client,
    feed_server,
    parse_wire,
    raw_record,
)

PARAMS = {
    b"": b"",
    b"SCRIPT_NAME": b"/app",
    b"HTTP_COOKIE": b"c" * 127,
    b"HTTP_X_LONG": b"v" * 128,
    b"N" * 200: b"\xff\x00\x80",
}


def _server_stream() -> bytes:
    """Two multiplexed requests, management records and odd padding, as a web server might."""
    pairs = encode_pairs(PARAMS)
    cut = pairs.index(b"HTTP_X_LONG") - 3  # inside the 4-byte value length of that pair
    return b"".join(
        [
            raw_record(RecordType.GET_VALUES, 0, encode_pairs({FCGI_MAX_REQS: b""}), 5),
            encode_begin_request(1, Role.RESPONDER, keep_conn=True),
            raw_record(RecordType.PARAMS, 1, pairs[:cut], 3),
            encode_begin_request(2, Role.FILTER, keep_conn=False),
            raw_record(RecordType.PARAMS, 1, pairs[cut:], 0),
            raw_record(RecordType.PARAMS, 2, encode_pairs({b"A": b"B"}), 255),
            raw_record(RecordType.PARAMS, 1, b"", 1),
            raw_record(RecordType.PARAMS, 2, b"", 0),
            raw_record(RecordType.STDIN, 2, b"filter-in", 17),
            raw_record(RecordType.STDIN, 1, b"x" * 300, 0),
            raw_record(42, 0, b"", 0),
            raw_record(RecordType.STDIN, 2, b"", 8),
            raw_record(RecordType.DATA, 2, b"file", 4),
            raw_record(RecordType.ABORT_REQUEST, 1, b"", 2),
            raw_record(RecordType.DATA, 2, b"", 0),
            raw_record(RecordType.STDIN, 1, b"", 7),
        ]
    )


def _client_stream() -> bytes:
    return b"".join(
        [
            raw_record(RecordType.STDOUT, 1, b"Status: 200\r\n\r\n", 1),
            raw_record(RecordType.STDERR, 2, b"warn", 200),
            raw_record(RecordType.GET_VALUES_RESULT, 0, encode_pairs({FCGI_MAX_REQS: b"5"}), 0),
            raw_record(RecordType.STDOUT, 2, b"y" * 500, 4),
            raw_record(RecordType.STDOUT, 1, b"", 0),
            raw_record(RecordType.UNKNOWN_TYPE, 0, bytes(8), 0),
            encode_end_request(1, 0, ProtocolStatus.REQUEST_COMPLETE),
            raw_record(RecordType.STDOUT, 2, b"", 255),
            encode_end_request(2, 1, ProtocolStatus.OVERLOADED),
        ]
    )


def _new_server() -> ServerConnection:
    return ServerConnection(management_values={FCGI_MAX_REQS: b"5"})


def _new_client() -> ClientConnection:
    client = ClientConnection()
    client.begin_request(1)
    client.begin_request(2)
    return client


SERVER_STREAM = _server_stream()
CLIENT_STREAM = _client_stream()


class TestServerSplits:
    """The server codec, fed a rich conversation in every possible way."""

    def _reference(self) -> tuple[list[ServerEvent], bytes]:
        server = _new_server()
        events = feed_server(server, [SERVER_STREAM])
        return events, server.data_to_send()

    def test_reference_events(self) -> None:
        events, answers = self._reference()
        assert events == [
            RequestReceived(1, Role.RESPONDER, True, PARAMS),
            RequestReceived(2, Role.FILTER, False, {b"A": b"B"}),
            StdinReceived(2, b"filter-in"),
            StdinReceived(1, b"x" * 300),
            StdinEnded(2),
            DataReceived(2, b"file"),
            RequestAborted(1),
            DataEnded(2),
            StdinEnded(1),
        ]
        assert feed_client(ClientConnection(), [answers]) == [
            GetValuesResult(0, {FCGI_MAX_REQS: b"5"}),
            UnknownTypeReceived(0, 42),
        ]

    def test_byte_at_a_time(self) -> None:
        server = _new_server()
        assert list(feed_server(server, byte_at_a_time(SERVER_STREAM))) == self._reference()[0]
        assert server.data_to_send() == self._reference()[1]
        assert not server.has_partial_record

    def test_every_split_point(self) -> None:
        expected = self._reference()
        for cut in range(1, len(SERVER_STREAM)):
            server = _new_server()
            events = list(feed_server(server, [SERVER_STREAM[:cut], SERVER_STREAM[cut:]]))
            assert (events, server.data_to_send()) == expected, f"split at {cut}"

    @pytest.mark.parametrize("step", [2, 3, 7, 8, 9, 64, 1000])
    def test_fixed_chunk_sizes(self, step: int) -> None:
        server = _new_server()
        events = feed_server(
            server, chunks_at(SERVER_STREAM, range(step, len(SERVER_STREAM), step))
        )
        assert (list(events), server.data_to_send()) == self._reference()


class TestClientSplits:
    """The client codec, fed a rich answer in every possible way."""

    def test_whole_bytewise_and_every_split(self) -> None:
        expected = list(feed_client(_new_client(), [CLIENT_STREAM]))
        assert expected == [
            StdoutReceived(1, b"Status: 200\r\n\r\n"),
            StderrReceived(2, b"warn"),
            GetValuesResult(0, {FCGI_MAX_REQS: b"5"}),
            StdoutReceived(2, b"y" * 500),
            UnknownTypeReceived(0, 0),
            RequestEnded(1, 0, ProtocolStatus.REQUEST_COMPLETE),
            RequestEnded(2, 1, ProtocolStatus.OVERLOADED),
        ]
        assert list(feed_client(_new_client(), byte_at_a_time(CLIENT_STREAM))) == expected
        for cut in range(1, len(CLIENT_STREAM)):
            pieces = [CLIENT_STREAM[:cut], CLIENT_STREAM[cut:]]
            assert list(feed_client(_new_client(), pieces)) == expected, f"split at {cut}"


class TestParamsAcrossRecords:
    """A PARAMS stream cut into records anywhere, mid-pair included."""

    @pytest.mark.parametrize("record_size", [1, 2, 3, 5, 8, 127, 128, 129, 1000])
    def test_pairs_cut_anywhere(self, record_size: int) -> None:
        pairs = encode_pairs(PARAMS)
        pair = ConnectionPair()
        wire = pair.client.begin_request(1) + b"".join(
            raw_record(RecordType.PARAMS, 1, pairs[i : i + record_size], i % 256)
            for i in range(0, len(pairs), record_size)
        )
        wire += raw_record(RecordType.PARAMS, 1)
        assert pair.to_server(wire) == [RequestReceived(1, Role.RESPONDER, True, PARAMS)]

    def test_client_splits_huge_params(self) -> None:
        params = {b"HTTP_COOKIE": b"k=" + b"v" * 150_000, b"SHORT": b"s"}
        pair = ConnectionPair()
        c = pair.client
        assert pair.to_server(c.begin_request(1)) == []
        frames = c.send_params(1, params)
        assert len(parse_wire(frames)) == 4  # 3 records of pairs, then the empty one
        assert pair.to_server(frames) == [RequestReceived(1, Role.RESPONDER, True, params)]


class TestPadding:
    """Every padding length a peer may send is skipped."""

    @pytest.mark.parametrize("padding", range(256))
    def test_every_padding_length(self, padding: int) -> None:
        wire = (
            raw_record(RecordType.BEGIN_REQUEST, 1, b"\x00\x01\x01\x00\x00\x00\x00\x00", padding)
            + raw_record(RecordType.PARAMS, 1, encode_pairs({b"K": b"V"}), padding)
            + raw_record(RecordType.PARAMS, 1, b"", padding)
            + raw_record(RecordType.STDIN, 1, b"body", padding)
            + raw_record(RecordType.STDIN, 1, b"", padding)
        )
        events = [
            RequestReceived(1, Role.RESPONDER, True, {b"K": b"V"}),
            StdinReceived(1, b"body"),
            StdinEnded(1),
        ]
        assert feed_server(ServerConnection(), [wire]) == events
        if padding in {0, 1, 7, 8, 255}:
            assert feed_server(ServerConnection(), byte_at_a_time(wire)) == events
