"""Hypothesis round trips: whatever the client frames, the server reads back, however split."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from fcgi_async.protocol import (
    ClientConnection,
    DataEnded,
    DataReceived,
    ProtocolStatus,
    RequestEnded,
    RequestReceived,
    Role,
    ServerConnection,
    StderrReceived,
    StdinEnded,
    StdinReceived,
    StdoutReceived,
    decode_pairs,
    encode_pairs,
)

from .helpers import chunks_at, feed_client, feed_server, join
from .strategies import SETTINGS, bodies, params, split_points


@SETTINGS
@given(pairs=st.lists(st.tuples(st.binary(max_size=200), st.binary(max_size=200)), max_size=10))
def test_pairs_round_trip(pairs: list[tuple[bytes, bytes]]) -> None:
    assert decode_pairs(encode_pairs(pairs), len(pairs) + 1) == pairs


@SETTINGS
@given(
    role=st.sampled_from(list(Role)),
    keep_conn=st.booleans(),
    request_params=params,
    body=bodies,
    data=bodies,
    body_cuts=st.lists(st.integers(min_value=1, max_value=200_000), max_size=4),
    cuts=split_points,
)
def test_request_round_trip(
    role: Role,
    keep_conn: bool,
    request_params: dict[bytes, bytes],
    body: bytes,
    data: bytes,
    body_cuts: list[int],
    cuts: list[int],
) -> None:
    client = ClientConnection()
    rid = client.free_request_id()
    wire = client.begin_request(rid, role=role, keep_conn=keep_conn)
    wire += join(client.send_params(rid, request_params))
    if role != Role.AUTHORIZER:
        for chunk in chunks_at(body, body_cuts):
            wire += join(client.send_stdin(rid, chunk))
        wire += client.end_stdin(rid)
    if role == Role.FILTER:
        wire += join(client.send_data(rid, data)) + client.end_data(rid)

    server = ServerConnection()
    events = feed_server(server, chunks_at(wire, cuts))
    assert events[0] == RequestReceived(rid, role, keep_conn, request_params)
    got_body = b"".join(e.data for e in events if isinstance(e, StdinReceived))
    got_data = b"".join(e.data for e in events if isinstance(e, DataReceived))
    if role == Role.AUTHORIZER:
        assert events == events[:1]
    else:
        assert got_body == body
        assert StdinEnded(rid) in events
    if role == Role.FILTER:
        assert got_data == data
        assert events[-1] == DataEnded(rid)
    assert server.data_to_send() == b""
    assert not server.has_partial_record


@SETTINGS
@given(
    stdout=bodies,
    stderr=st.binary(max_size=500),
    last=st.binary(max_size=20_000),
    app_status=st.integers(min_value=0, max_value=0xFFFFFFFF),
    cuts=split_points,
)
def test_response_round_trip(
    stdout: bytes, stderr: bytes, last: bytes, app_status: int, cuts: list[int]
) -> None:
    client = ClientConnection()
    server = ServerConnection()
    request = client.begin_request(1, keep_conn=False)
    request += join(client.send_params(1, {})) + client.end_stdin(1)
    assert feed_server(server, [request]) == [
        RequestReceived(1, Role.RESPONDER, False, {}),
        StdinEnded(1),
    ]
    wire = join(server.send_stdout(1, stdout)) + join(server.send_stderr(1, stderr))
    wire += join(server.end_request(1, last, app_status=app_status))
    assert server.close_requested

    events = feed_client(client, chunks_at(wire, cuts))
    got_out = b"".join(e.data for e in events if isinstance(e, StdoutReceived))
    got_err = b"".join(e.data for e in events if isinstance(e, StderrReceived))
    assert got_out == stdout + last
    assert got_err == stderr
    assert events[-1] == RequestEnded(1, app_status, ProtocolStatus.REQUEST_COMPLETE)
    assert not client.is_active(1)
    assert not client.has_partial_record


@SETTINGS
@given(
    requests=st.lists(st.tuples(params, st.binary(max_size=2000)), min_size=1, max_size=4),
    order=st.randoms(use_true_random=False),
    cuts=split_points,
)
def test_multiplexed_requests_interleaved(
    requests: list[tuple[dict[bytes, bytes], bytes]], order: random.Random, cuts: list[int]
) -> None:
    """Records of several requests, interleaved in any order that keeps each request's own."""
    client = ClientConnection()
    queues: list[list[bytes]] = []
    for request_params, body in requests:
        rid = client.free_request_id()
        frames = [client.begin_request(rid)]
        frames += [join(client.send_params(rid, request_params))]
        frames += [join(client.send_stdin(rid, chunk)) for chunk in chunks_at(body, [700, 1400])]
        frames.append(client.end_stdin(rid))
        queues.append(frames)
    wire = b""
    while any(queues):
        queue = order.choice([q for q in queues if q])
        wire += queue.pop(0)

    server = ServerConnection()
    events = feed_server(server, chunks_at(wire, cuts))
    for rid, (request_params, body) in enumerate(requests, start=1):
        mine = [e for e in events if e.request_id == rid]
        assert mine[0] == RequestReceived(rid, Role.RESPONDER, True, request_params)
        assert b"".join(e.data for e in mine if isinstance(e, StdinReceived)) == body
        assert mine[-1] == StdinEnded(rid)
    assert server.active_requests == len(requests)

    # Answer in reverse order; the client sorts the responses out by id.
    answer = b"".join(
        join(server.end_request(rid, b"r%d" % rid)) for rid in range(len(requests), 0, -1)
    )
    got = feed_client(client, chunks_at(answer, cuts))
    for rid in range(1, len(requests) + 1):
        assert [e for e in got if e.request_id == rid] == [
            StdoutReceived(rid, b"r%d" % rid),
            RequestEnded(rid, 0, ProtocolStatus.REQUEST_COMPLETE),
        ]
    assert client.active_requests == 0
