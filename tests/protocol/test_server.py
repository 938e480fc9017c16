"""ServerConnection: requests, roles, management records and refusals (spec §4-§6).

Requests are framed by the real ClientConnection and answers are read back by it, so each
test is both codecs talking to each other.
"""

from __future__ import annotations

import pytest

from fcgi_async.protocol import (
    FCGI_MAX_CONNS,
    FCGI_MAX_REQS,
    FCGI_MPXS_CONNS,
    NEED_DATA,
    DataEnded,
    DataReceived,
    GetValuesResult,
    Limits,
    LocalProtocolError,
    ProtocolStatus,
    RecordType,
    RemoteProtocolError,
    RequestAborted,
    RequestEnded,
    RequestReceived,
    RequestRejected,
    Role,
    ServerConnection,
    StdinEnded,
    StdinReceived,
    StdoutReceived,
    UnknownTypeReceived,
    encode_pairs,
    encode_record,
)
from fcgi_async.protocol.records import encode_begin_request

from .helpers import ConnectionPair, join, parse_wire, raw_record

VALUES = {FCGI_MAX_CONNS: b"10", FCGI_MAX_REQS: b"50", FCGI_MPXS_CONNS: b"1"}


class TestResponder:
    """The RESPONDER role: params, then the body."""

    def test_whole_request(self) -> None:
        pair = ConnectionPair()
        events = pair.to_server(pair.request_bytes(1, {b"A": b"1", b"B": b""}, b"body"))
        assert events == [
            RequestReceived(1, Role.RESPONDER, True, {b"A": b"1", b"B": b""}),
            StdinReceived(1, b"body"),
            StdinEnded(1),
        ]
        assert pair.server.is_active(1)
        assert pair.server.active_requests == 1
        assert not pair.server.has_partial_record

    def test_empty_params_and_body(self) -> None:
        pair = ConnectionPair()
        events = pair.to_server(pair.request_bytes(1, {}))
        assert events == [RequestReceived(1, Role.RESPONDER, True, {}), StdinEnded(1)]

    def test_repeated_name_keeps_last_value(self) -> None:
        pair = ConnectionPair()
        c = pair.client
        events = pair.to_server(c.begin_request(1), c.send_params(1, [(b"X", b"1"), (b"X", b"2")]))
        assert events == [RequestReceived(1, Role.RESPONDER, True, {b"X": b"2"})]

    def test_params_event_only_after_the_empty_record(self) -> None:
        pair = ConnectionPair()
        c = pair.client
        begin = c.begin_request(1)
        params = join(c.send_params(1, {b"K": b"V"}))
        close = encode_record(RecordType.PARAMS, 1)
        assert params.endswith(close)
        assert pair.to_server(begin, params[: -len(close)]) == []
        assert pair.to_server(close) == [RequestReceived(1, Role.RESPONDER, True, {b"K": b"V"})]

    def test_stdin_in_many_records(self) -> None:
        pair = ConnectionPair()
        c = pair.client
        pair.to_server(c.begin_request(1), c.send_params(1, {}))
        assert pair.to_server(c.send_stdin(1, b"ab"), c.send_stdin(1, b"cd")) == [
            StdinReceived(1, b"ab"),
            StdinReceived(1, b"cd"),
        ]
        assert pair.to_server(c.end_stdin(1)) == [StdinEnded(1)]

    def test_new_record_type_on_a_request_is_ignored(self) -> None:
        pair = ConnectionPair()
        c = pair.client
        pair.to_server(c.begin_request(1), c.send_params(1, {}))
        assert pair.to_server(raw_record(12, 1, b"future"), raw_record(255, 1)) == []
        assert pair.to_server(c.end_stdin(1)) == [StdinEnded(1)]

    def test_repr(self) -> None:
        pair = ConnectionPair()
        pair.to_server(pair.client.begin_request(3), b"\x01")
        assert repr(pair.server) == "<ServerConnection active=[3] pending=1 close_requested=False>"
        assert pair.server.has_partial_record


class TestStreamOrder:
    """The transition table: a stream record out of its phase is a protocol error."""

    @pytest.mark.parametrize(
        ("role", "frames"),
        [
            (Role.RESPONDER, [encode_record(RecordType.STDIN, 1, b"early")]),
            (Role.RESPONDER, [encode_record(RecordType.DATA, 1, b"x")]),
            (Role.RESPONDER, ["params", encode_record(RecordType.PARAMS, 1, b"\x00\x00")]),
            (Role.RESPONDER, ["params", "stdin", encode_record(RecordType.STDIN, 1, b"late")]),
            (Role.RESPONDER, ["params", "stdin", encode_record(RecordType.STDIN, 1)]),
            (Role.FILTER, ["params", encode_record(RecordType.DATA, 1, b"before stdin")]),
            (Role.FILTER, ["params", "stdin", "data", encode_record(RecordType.DATA, 1)]),
            (Role.AUTHORIZER, ["params", encode_record(RecordType.DATA, 1, b"x")]),
            (Role.AUTHORIZER, ["params", encode_record(RecordType.PARAMS, 1)]),
        ],
    )
    def test_out_of_order(self, role: Role, frames: list[bytes | str]) -> None:
        pair = ConnectionPair()
        c = pair.client
        pair.server.receive_data(c.begin_request(1, role=role))
        named = {
            "params": join(c.send_params(1, {})),
            "stdin": c.end_stdin(1),
            "data": c.end_data(1),
        }
        for frame in frames[:-1]:
            assert isinstance(frame, str)
            pair.to_server(named[frame])
        last = frames[-1]
        assert isinstance(last, bytes)
        pair.server.receive_data(last)
        with pytest.raises(RemoteProtocolError, match="not allowed in phase") as info:
            pair.server.next_event()
        assert info.value.request_id == 1


class TestAuthorizer:
    """The AUTHORIZER role: params only; a STDIN, if sent at all, is ignored."""

    def test_no_stdin_at_all(self) -> None:
        pair = ConnectionPair()
        c = pair.client
        events = pair.to_server(
            c.begin_request(1, role=Role.AUTHORIZER), c.send_params(1, {b"REMOTE_USER": b"u"})
        )
        assert events == [RequestReceived(1, Role.AUTHORIZER, True, {b"REMOTE_USER": b"u"})]
        wire = pair.server.end_request(1, b"Status: 200\r\n\r\n")
        assert pair.to_client(wire)[-1] == RequestEnded(1, 0, ProtocolStatus.REQUEST_COMPLETE)

    def test_empty_stdin_is_tolerated_and_silent(self) -> None:
        pair = ConnectionPair()
        c = pair.client
        events = pair.to_server(
            c.begin_request(1, role=Role.AUTHORIZER), c.send_params(1, {}), c.end_stdin(1)
        )
        assert events == [RequestReceived(1, Role.AUTHORIZER, True, {})]

    def test_stdin_with_content_is_ignored(self) -> None:
        pair = ConnectionPair()
        c = pair.client
        events = pair.to_server(
            c.begin_request(1, role=Role.AUTHORIZER),
            c.send_params(1, {}),
            c.send_stdin(1, b"ignored"),
            c.end_stdin(1),
            c.end_stdin(1),
        )
        assert events == [RequestReceived(1, Role.AUTHORIZER, True, {})]


class TestFilter:
    """The FILTER role: params, body, then the file as DATA."""

    def test_params_stdin_data(self) -> None:
        pair = ConnectionPair()
        c = pair.client
        params = {b"FCGI_DATA_LENGTH": b"6", b"FCGI_DATA_LAST_MOD": b"0"}
        events = pair.to_server(
            c.begin_request(2, role=Role.FILTER),
            c.send_params(2, params),
            c.send_stdin(2, b"in"),
            c.end_stdin(2),
            c.send_data(2, b"abc"),
            c.send_data(2, b"def"),
            c.end_data(2),
        )
        assert events == [
            RequestReceived(2, Role.FILTER, True, params),
            StdinReceived(2, b"in"),
            StdinEnded(2),
            DataReceived(2, b"abc"),
            DataReceived(2, b"def"),
            DataEnded(2),
        ]


class TestGetValues:
    """GET_VALUES answered with only the names asked and known."""

    def test_only_names_asked_and_known(self) -> None:
        pair = ConnectionPair(management_values=VALUES)
        c = pair.client
        assert pair.to_server(c.get_values([FCGI_MAX_REQS, b"FCGI_NOT_A_THING"])) == []
        assert pair.replies() == [GetValuesResult(0, {FCGI_MAX_REQS: b"50"})]

    def test_all_names_in_order_asked(self) -> None:
        pair = ConnectionPair(management_values=VALUES)
        pair.to_server(pair.client.get_values([FCGI_MPXS_CONNS, FCGI_MAX_CONNS, FCGI_MAX_REQS]))
        (rec,) = parse_wire(pair.server.data_to_send())
        assert rec.type == RecordType.GET_VALUES_RESULT
        assert rec.request_id == 0
        assert rec.content == encode_pairs(
            [(FCGI_MPXS_CONNS, b"1"), (FCGI_MAX_CONNS, b"10"), (FCGI_MAX_REQS, b"50")]
        )

    def test_nothing_known_gives_empty_result(self) -> None:
        pair = ConnectionPair()
        pair.to_server(pair.client.get_values([FCGI_MAX_CONNS]))
        assert pair.replies() == [GetValuesResult(0, {})]

    def test_repeated_names_answered_once(self) -> None:
        limits = Limits(max_management_bytes=65535, max_params_pairs=10_000)
        pair = ConnectionPair(limits=limits, management_values=VALUES)
        # 4000 * 16 bytes asked; answering each repeat would not fit in one record.
        pair.to_server(pair.client.get_values([FCGI_MAX_CONNS] * 4000))
        assert pair.replies() == [GetValuesResult(0, {FCGI_MAX_CONNS: b"10"})]

    def test_values_sent_by_the_asker_are_ignored(self) -> None:
        pair = ConnectionPair(management_values=VALUES)
        pair.to_server(encode_record(RecordType.GET_VALUES, 0, encode_pairs({FCGI_MAX_REQS: b"9"})))
        assert pair.replies() == [GetValuesResult(0, {FCGI_MAX_REQS: b"50"})]

    def test_too_large(self) -> None:
        pair = ConnectionPair(limits=Limits(max_management_bytes=16))
        pair.server.receive_data(pair.client.get_values([b"x" * 15]))
        with pytest.raises(RemoteProtocolError, match="too large"):
            pair.server.next_event()

    def test_truncated(self) -> None:
        pair = ConnectionPair()
        pair.server.receive_data(encode_record(RecordType.GET_VALUES, 0, b"\x05\x00ab"))
        with pytest.raises(RemoteProtocolError):
            pair.server.next_event()

    def test_values_too_large_for_one_record(self) -> None:
        with pytest.raises(ValueError, match="management_values"):
            ServerConnection(management_values={FCGI_MAX_CONNS: b"1" * 65535})
        with pytest.raises(ValueError, match="management_values"):
            ServerConnection(management_values={b"%d" % i: b"1" * 100 for i in range(600)})

    def test_largest_values_still_answered(self) -> None:
        values = {FCGI_MAX_CONNS: b"9" * 65_000}
        pair = ConnectionPair(management_values=values)
        pair.to_server(pair.client.get_values([FCGI_MAX_CONNS, FCGI_MAX_CONNS]))
        assert pair.replies() == [GetValuesResult(0, values)]

    def test_management_answers_between_requests(self) -> None:
        pair = ConnectionPair(management_values=VALUES)
        c = pair.client
        events = pair.to_server(
            c.begin_request(1),
            c.get_values([FCGI_MPXS_CONNS]),
            c.send_params(1, {}),
            raw_record(99, 0),
        )
        assert events == [RequestReceived(1, Role.RESPONDER, True, {})]
        assert pair.replies() == [
            GetValuesResult(0, {FCGI_MPXS_CONNS: b"1"}),
            UnknownTypeReceived(0, 99),
        ]
        assert pair.server.data_to_send() == b""


class TestUnknownType:
    """Unknown management record types are answered with UNKNOWN_TYPE."""

    @pytest.mark.parametrize(
        "rtype", [0, RecordType.BEGIN_REQUEST, RecordType.STDIN, RecordType.GET_VALUES_RESULT, 12]
    )
    def test_answered(self, rtype: int) -> None:
        pair = ConnectionPair()
        assert pair.to_server(raw_record(rtype, 0, b"whatever", 3)) == []
        assert pair.replies() == [UnknownTypeReceived(0, rtype)]


class TestRefusals:
    """BEGIN_REQUESTs refused at once: UNKNOWN_ROLE, CANT_MPX_CONN, OVERLOADED."""

    def test_unknown_role(self) -> None:
        pair = ConnectionPair(roles=[Role.RESPONDER])
        c = pair.client
        events = pair.to_server(
            c.begin_request(1, role=Role.FILTER),
            c.send_params(1, {b"K": b"V"}),
            c.end_stdin(1),
        )
        assert events == [RequestRejected(1, ProtocolStatus.UNKNOWN_ROLE)]
        assert not pair.server.is_active(1)
        assert pair.replies() == [RequestEnded(1, 0, ProtocolStatus.UNKNOWN_ROLE)]
        assert not pair.client.is_active(1)
        assert not pair.server.close_requested

    def test_role_number_nobody_defines(self) -> None:
        pair = ConnectionPair()
        pair.client.begin_request(1)
        assert pair.to_server(encode_begin_request(1, 9, keep_conn=True)) == [
            RequestRejected(1, ProtocolStatus.UNKNOWN_ROLE)
        ]

    @pytest.mark.parametrize("bad", [4, 0, "responder"])
    def test_roles_must_be_fastcgi_roles(self, bad: object) -> None:
        with pytest.raises(ValueError, match="FastCGI roles"):
            ServerConnection(roles=[Role.RESPONDER, bad])  # type: ignore[list-item]

    def test_roles_as_plain_ints(self) -> None:
        pair = ConnectionPair(roles=[2])
        assert pair.to_server(pair.client.begin_request(1, role=Role.AUTHORIZER)) == []
        assert pair.to_server(pair.client.send_params(1, {})) == [
            RequestReceived(1, Role.AUTHORIZER, True, {})
        ]
        assert pair.to_server(pair.client.begin_request(2)) == [
            RequestRejected(2, ProtocolStatus.UNKNOWN_ROLE)
        ]

    def test_cant_mpx_conn(self) -> None:
        pair = ConnectionPair(multiplex=False)
        c = pair.client
        assert pair.to_server(c.begin_request(1), c.send_params(1, {})) == [
            RequestReceived(1, Role.RESPONDER, True, {})
        ]
        assert pair.to_server(c.begin_request(2), c.send_params(2, {}), c.end_stdin(2)) == [
            RequestRejected(2, ProtocolStatus.CANT_MPX_CONN)
        ]
        assert pair.replies() == [RequestEnded(2, 0, ProtocolStatus.CANT_MPX_CONN)]
        # The first request is untouched, and once it ends the next one is served.
        assert pair.to_server(c.end_stdin(1)) == [StdinEnded(1)]
        pair.to_client(pair.server.end_request(1))
        assert pair.to_server(c.begin_request(2), c.send_params(2, {})) == [
            RequestReceived(2, Role.RESPONDER, True, {})
        ]

    def test_multiplexed(self) -> None:
        pair = ConnectionPair()
        c = pair.client
        events = pair.to_server(
            c.begin_request(1),
            c.begin_request(2),
            c.send_params(2, {b"n": b"2"}),
            c.send_params(1, {b"n": b"1"}),
            c.send_stdin(1, b"one"),
            c.send_stdin(2, b"two"),
            c.end_stdin(2),
            c.end_stdin(1),
        )
        assert events == [
            RequestReceived(2, Role.RESPONDER, True, {b"n": b"2"}),
            RequestReceived(1, Role.RESPONDER, True, {b"n": b"1"}),
            StdinReceived(1, b"one"),
            StdinReceived(2, b"two"),
            StdinEnded(2),
            StdinEnded(1),
        ]
        assert pair.server.active_requests == 2
        assert pair.to_client(
            pair.server.end_request(2, b"2"), pair.server.end_request(1, b"1")
        ) == [
            StdoutReceived(2, b"2"),
            RequestEnded(2, 0, ProtocolStatus.REQUEST_COMPLETE),
            StdoutReceived(1, b"1"),
            RequestEnded(1, 0, ProtocolStatus.REQUEST_COMPLETE),
        ]

    def test_overloaded_over_max_requests(self) -> None:
        pair = ConnectionPair(limits=Limits(max_requests_per_connection=2))
        c = pair.client
        events = pair.to_server(c.begin_request(1), c.begin_request(2), c.begin_request(3))
        assert events == [RequestRejected(3, ProtocolStatus.OVERLOADED)]
        assert pair.replies() == [RequestEnded(3, 0, ProtocolStatus.OVERLOADED)]
        assert pair.server.active_requests == 2

    def test_overloaded_when_not_accepting(self) -> None:
        pair = ConnectionPair()
        c = pair.client
        pair.to_server(c.begin_request(1), c.send_params(1, {}))
        pair.server.accepting = False
        assert pair.to_server(c.begin_request(2)) == [RequestRejected(2, ProtocolStatus.OVERLOADED)]
        assert pair.replies() == [RequestEnded(2, 0, ProtocolStatus.OVERLOADED)]
        # The running request still finishes normally.
        assert pair.to_server(c.end_stdin(1)) == [StdinEnded(1)]
        assert pair.to_client(pair.server.end_request(1))[-1] == RequestEnded(
            1, 0, ProtocolStatus.REQUEST_COMPLETE
        )

    def test_refused_without_keep_conn_requests_close(self) -> None:
        pair = ConnectionPair()
        pair.server.accepting = False
        pair.to_server(pair.client.begin_request(1, keep_conn=False))
        assert pair.server.close_requested

    def test_refused_id_is_reusable(self) -> None:
        pair = ConnectionPair()
        pair.server.accepting = False
        pair.to_server(pair.client.begin_request(1))
        pair.replies()
        pair.server.accepting = True
        assert pair.to_server(pair.client.begin_request(1), pair.client.send_params(1, {})) == [
            RequestReceived(1, Role.RESPONDER, True, {})
        ]


class TestKeepConn:
    """FCGI_KEEP_CONN decides whether the connection closes after the request."""

    @pytest.mark.parametrize("keep_conn", [True, False])
    def test_close_requested_after_end(self, keep_conn: bool) -> None:
        pair = ConnectionPair()
        c = pair.client
        events = pair.to_server(pair.request_bytes(1, {}, keep_conn=keep_conn))
        assert events[0] == RequestReceived(1, Role.RESPONDER, keep_conn, {})
        assert not pair.server.close_requested
        pair.to_client(pair.server.end_request(1, b"x"))
        assert pair.server.close_requested is not keep_conn
        assert not c.is_active(1)


class TestAbort:
    """ABORT_REQUEST handling."""

    def test_aborted_once(self) -> None:
        pair = ConnectionPair()
        c = pair.client
        pair.to_server(pair.request_bytes(1, {}))
        assert pair.to_server(c.abort_request(1), c.abort_request(1)) == [RequestAborted(1)]
        assert pair.server.is_active(1)  # still ours to end
        assert pair.server.data_to_send() == b""
        assert pair.to_client(pair.server.end_request(1)) == [
            RequestEnded(1, 0, ProtocolStatus.REQUEST_COMPLETE)
        ]
        # Once ended, the id is inactive: a late abort is ignored.
        assert pair.to_server(encode_record(RecordType.ABORT_REQUEST, 1)) == []

    def test_abort_while_reading_body(self) -> None:
        pair = ConnectionPair()
        c = pair.client
        pair.to_server(c.begin_request(1), c.send_params(1, {}), c.send_stdin(1, b"part"))
        assert pair.to_server(c.abort_request(1)) == [RequestAborted(1)]
        # A web server may still send the rest of the body; it is delivered as usual.
        assert pair.to_server(c.end_stdin(1)) == [StdinEnded(1)]

    @pytest.mark.parametrize("keep_conn", [True, False])
    def test_abort_before_params_complete_is_answered_by_the_codec(self, keep_conn: bool) -> None:
        pair = ConnectionPair()
        c = pair.client
        begin = c.begin_request(1, keep_conn=keep_conn)
        params = join(c.send_params(1, {b"K": b"V"}))
        events = pair.to_server(begin, params[:-8], c.abort_request(1), params[-8:])
        assert events == []
        assert not pair.server.is_active(1)
        assert pair.server.close_requested is not keep_conn
        assert pair.replies() == [RequestEnded(1, 0, ProtocolStatus.REQUEST_COMPLETE)]

    def test_abort_for_inactive_id_is_ignored(self) -> None:
        pair = ConnectionPair()
        assert pair.to_server(encode_record(RecordType.ABORT_REQUEST, 5)) == []
        assert pair.server.data_to_send() == b""


class TestInactiveIds:
    """Records for request ids that are not active are ignored."""

    @pytest.mark.parametrize(
        "rtype", [RecordType.PARAMS, RecordType.STDIN, RecordType.DATA, RecordType.ABORT_REQUEST]
    )
    def test_never_begun(self, rtype: RecordType) -> None:
        pair = ConnectionPair()
        assert pair.to_server(encode_record(rtype, 7, b"\x00\x00"), encode_record(rtype, 7)) == []

    def test_after_we_ended_it(self) -> None:
        pair = ConnectionPair()
        c = pair.client
        pair.to_server(c.begin_request(1), c.send_params(1, {}))
        pair.server.end_request(1, b"early answer")
        assert pair.to_server(c.send_stdin(1, b"rest of body"), c.end_stdin(1)) == []


class TestPeerErrors:
    """A web server breaking the protocol gets RemoteProtocolError, and a dead codec."""

    def test_duplicate_begin_request(self) -> None:
        pair = ConnectionPair()
        pair.server.receive_data(encode_begin_request(1, 1, True) * 2)
        with pytest.raises(RemoteProtocolError, match="active request 1") as info:
            pair.server.next_event()
        assert info.value.request_id == 1

    @pytest.mark.parametrize("size", [0, 7, 9])
    def test_begin_body_size(self, size: int) -> None:
        server = ServerConnection()
        body = b"\x00\x01" + b"\x00" * 7
        server.receive_data(encode_record(RecordType.BEGIN_REQUEST, 1, body[:size]))
        with pytest.raises(RemoteProtocolError, match="expected 8"):
            server.next_event()

    @pytest.mark.parametrize(
        "rtype",
        [
            RecordType.END_REQUEST,
            RecordType.STDOUT,
            RecordType.STDERR,
            RecordType.GET_VALUES,
            RecordType.GET_VALUES_RESULT,
            RecordType.UNKNOWN_TYPE,
        ],
    )
    def test_wrong_direction(self, rtype: RecordType) -> None:
        server = ServerConnection()
        server.receive_data(encode_record(rtype, 1, b"x"))
        with pytest.raises(RemoteProtocolError, match="not valid from a web server"):
            server.next_event()

    def test_params_too_large(self) -> None:
        pair = ConnectionPair(limits=Limits(max_params_bytes=100))
        c = pair.client
        assert (
            pair.to_server(c.begin_request(1), encode_record(RecordType.PARAMS, 1, b"\x00" * 100))
            == []
        )
        pair.server.receive_data(encode_record(RecordType.PARAMS, 1, b"\x00"))
        with pytest.raises(RemoteProtocolError, match="exceed 100 bytes"):
            pair.server.next_event()

    def test_too_many_pairs(self) -> None:
        pair = ConnectionPair(limits=Limits(max_params_pairs=2))
        c = pair.client
        pair.server.receive_data(c.begin_request(1) + join(c.send_params(1, [(b"a", b"")] * 3)))
        with pytest.raises(RemoteProtocolError, match="more than 2"):
            pair.server.next_event()

    def test_truncated_pair_in_params(self) -> None:
        pair = ConnectionPair()
        c = pair.client
        pair.server.receive_data(
            c.begin_request(1)
            + encode_record(RecordType.PARAMS, 1, b"\x04\x00ab")
            + encode_record(RecordType.PARAMS, 1)
        )
        with pytest.raises(RemoteProtocolError, match="longer than the stream"):
            pair.server.next_event()

    def test_bad_version(self) -> None:
        server = ServerConnection()
        server.receive_data(raw_record(RecordType.BEGIN_REQUEST, 1, b"\x00" * 8, version=0))
        with pytest.raises(RemoteProtocolError, match="version"):
            server.next_event()

    def test_dead_after_error(self) -> None:
        server = ServerConnection()
        server.receive_data(raw_record(1, 1, version=9))
        with pytest.raises(RemoteProtocolError):
            server.next_event()
        with pytest.raises(RemoteProtocolError, match="already failed"):
            server.next_event()


class TestLocalErrors:
    """Asking the codec for something the protocol forbids."""

    def test_send_on_inactive_request(self) -> None:
        server = ServerConnection()
        with pytest.raises(LocalProtocolError, match="not active"):
            server.send_stdout(1, b"x")
        with pytest.raises(LocalProtocolError, match="not active"):
            server.send_stderr(1, b"x")
        with pytest.raises(LocalProtocolError, match="not active") as info:
            server.end_request(1)
        assert info.value.request_id == 1

    def test_end_twice(self) -> None:
        pair = ConnectionPair()
        pair.to_server(pair.request_bytes(1, {}))
        pair.server.end_request(1)
        with pytest.raises(LocalProtocolError):
            pair.server.end_request(1)


class TestLimits:
    """Limits validation."""

    @pytest.mark.parametrize(
        "field",
        [
            "max_params_bytes",
            "max_params_pairs",
            "max_requests_per_connection",
            "max_management_bytes",
        ],
    )
    def test_must_be_positive(self, field: str) -> None:
        with pytest.raises(ValueError, match=field):
            Limits(**{field: 0})

    def test_defaults(self) -> None:
        assert ServerConnection().next_event() is NEED_DATA
