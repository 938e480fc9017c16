"""The codec's account of the input it holds: unfinished params and the partial record.

The server's per-connection budget (``--max-connection-buffer-bytes``) reads these figures;
they must go up with every PARAMS record and back down on every way a request leaves.
"""

from __future__ import annotations

from fcgi_async.protocol import RequestReceived, ServerConnection
from fcgi_async.protocol.constants import ABORT_REQUEST, PARAMS
from fcgi_async.protocol.records import encode_pairs

from .helpers import raw_record, server_events

BEGIN_KEEP = bytes((0, 1, 1, 0, 0, 0, 0, 0))  # RESPONDER, FCGI_KEEP_CONN


def begin(rid: int) -> bytes:
    return raw_record(1, rid, BEGIN_KEEP)


def test_unfinished_params_are_counted_until_their_stream_ends() -> None:
    server = ServerConnection()
    pairs = encode_pairs({b"REQUEST_METHOD": b"GET", b"X": b"y" * 1000})
    server.receive_data(begin(1) + begin(2) + raw_record(PARAMS, 1, pairs[:600]))
    assert server_events(server) == []
    assert server.params_buffered == 600
    server.receive_data(raw_record(PARAMS, 2, pairs))
    server.receive_data(raw_record(PARAMS, 1, pairs[600:])[:20])  # a partial record
    assert server_events(server) == []
    assert server.params_buffered == 600 + len(pairs)
    assert server.buffered_bytes == 600 + len(pairs) + 20
    server.receive_data(raw_record(PARAMS, 1, pairs[600:])[20:] + raw_record(PARAMS, 1))
    events = server_events(server)
    assert [type(e) for e in events] == [RequestReceived]
    assert server.params_buffered == len(pairs)  # request 2's are still unfinished
    assert server.buffered_bytes == len(pairs)


def test_an_abort_before_the_params_ended_releases_them() -> None:
    server = ServerConnection()
    server.receive_data(begin(1) + raw_record(PARAMS, 1, b"\x01\x01ab"))
    server_events(server)
    assert server.params_buffered == 4
    server.receive_data(raw_record(ABORT_REQUEST, 1))
    assert server_events(server) == []
    assert server.params_buffered == 0


def test_ending_a_request_before_its_params_ended_releases_them() -> None:
    server = ServerConnection()
    server.receive_data(begin(1) + raw_record(PARAMS, 1, b"\x01\x01ab"))
    server_events(server)
    server.end_request(1)
    assert server.params_buffered == 0


def test_breaking_the_connection_releases_every_params_buffer() -> None:
    server = ServerConnection()
    server.receive_data(begin(1) + raw_record(PARAMS, 1, b"\x01\x01ab") + begin(2))
    server_events(server)
    server.receive_data(raw_record(PARAMS, 2, b"\x01\x01cd"))
    server_events(server)
    assert server.params_buffered == 8
    server.break_connection()
    assert server.params_buffered == 0
