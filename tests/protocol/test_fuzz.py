"""Fuzz both codecs: whatever bytes arrive, only RemoteProtocolError may leave next_event.

Three sources of input: random bytes, streams of well-framed records with arbitrary types,
ids, bodies and padding (which reach deep into the state machine), and valid conversations
mutated by flipping, inserting, deleting and truncating bytes. Each input is fed whole and a
byte at a time; both feeds must give the same events and fail at the same record.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

from hypothesis import given
from hypothesis import strategies as st

from fcgi_async.protocol import (
    FCGI_MAX_CONNS,
    FCGI_MPXS_CONNS,
    ClientConnection,
    DataEnded,
    Limits,
    RemoteProtocolError,
    RequestAborted,
    RequestReceived,
    Role,
    ServerConnection,
    StdinEnded,
)
from fcgi_async.protocol.events import _NeedData

from .helpers import byte_at_a_time, client_events, join, parse_wire
from .strategies import FUZZ_SETTINGS, RECORD_FUZZ_SETTINGS, SETTINGS, record_streams
from .test_splits import CLIENT_STREAM, SERVER_STREAM

Outcome = tuple[list[object], bool, bytes, bytes]
"""Events seen, whether RemoteProtocolError ended the feed, the codec's own answers (from
``data_to_send``) and the responses the driver framed; each is independent of the split."""


def _drive_server(pieces: Iterable[bytes], multiplex: bool = True) -> Outcome:
    """Feed ``pieces``; behave like an application that answers once its input is done."""
    server = ServerConnection(
        limits=Limits(max_params_bytes=600, max_params_pairs=5, max_requests_per_connection=3),
        roles=(Role.RESPONDER, Role.FILTER),
        multiplex=multiplex,
        management_values={FCGI_MAX_CONNS: b"7", FCGI_MPXS_CONNS: b"1" if multiplex else b"0"},
    )
    roles: dict[int, Role] = {}
    events: list[object] = []
    answers = responses = b""
    for piece in pieces:
        server.receive_data(piece)
        while True:
            try:
                event = server.next_event()
            except RemoteProtocolError:
                return events, True, answers + server.data_to_send(), responses
            if isinstance(event, _NeedData):
                break
            events.append(event)
            if isinstance(event, RequestReceived):
                roles[event.request_id] = event.role
            input_done = isinstance(event, DataEnded) or (
                isinstance(event, StdinEnded) and roles[event.request_id] != Role.FILTER
            )
            if (input_done or isinstance(event, RequestAborted)) and server.is_active(
                event.request_id
            ):
                responses += join(server.end_request(event.request_id, b"ok"))
        answers += server.data_to_send()
    return events, False, answers, responses


def _drive_client(pieces: Iterable[bytes]) -> Outcome:
    client = ClientConnection()
    for rid in (1, 2, 3):
        client.begin_request(rid)
    events: list[object] = []
    for piece in pieces:
        client.receive_data(piece)
        while True:
            try:
                event = client.next_event()
            except RemoteProtocolError:
                return events, True, b"", b""
            if isinstance(event, _NeedData):
                break
            events.append(event)
    return events, False, b"", b""


def _check(drive: Callable[[Iterable[bytes]], Outcome], data: bytes) -> None:
    whole = drive([data])
    assert drive(byte_at_a_time(data)) == whole
    # What the server says must itself be valid FastCGI that our client accepts.
    for output in whole[2:]:
        parse_wire(output)
        client = ClientConnection()
        for rid in (1, 2, 3):
            client.begin_request(rid)
        client.receive_data(output)
        client_events(client)


@FUZZ_SETTINGS
@given(data=st.binary(max_size=200))
def test_random_bytes_server(data: bytes) -> None:
    _check(_drive_server, data)
    _check(_drive_server, b"\x01" + data)  # a valid version byte gets past the first check


@FUZZ_SETTINGS
@given(data=st.binary(max_size=200))
def test_random_bytes_client(data: bytes) -> None:
    _check(_drive_client, data)
    _check(_drive_client, b"\x01" + data)


@RECORD_FUZZ_SETTINGS
@given(data=record_streams, multiplex=st.booleans())
def test_random_records_server(data: bytes, multiplex: bool) -> None:
    _check(functools.partial(_drive_server, multiplex=multiplex), data)


@RECORD_FUZZ_SETTINGS
@given(data=record_streams)
def test_random_records_client(data: bytes) -> None:
    _check(_drive_client, data)


@st.composite
def _mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))]))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=9))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 9))]
        else:
            del data[pos:]
    return bytes(data)


@SETTINGS
@given(data=_mutated(SERVER_STREAM), multiplex=st.booleans())
def test_mutated_conversation_server(data: bytes, multiplex: bool) -> None:
    _check(functools.partial(_drive_server, multiplex=multiplex), data)


@SETTINGS
@given(data=_mutated(CLIENT_STREAM))
def test_mutated_conversation_client(data: bytes) -> None:
    _check(_drive_client, data)
