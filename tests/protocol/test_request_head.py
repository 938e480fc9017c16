"""The request-head fast path (BEGIN_REQUEST + PARAMS + empty STDIN parsed in one go).

It must be invisible: a server connection gives the same events, answers and errors with the
fast path in C, in Python, or switched off (record by record), whatever bytes arrive.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fcgi_async.protocol import (
    NEED_DATA,
    RemoteProtocolError,
    RequestReceived,
    Role,
    ServerConnection,
    StdinEnded,
    encode_pairs,
    records,
    server,
)
from fcgi_async.protocol.constants import BEGIN_REQUEST, PARAMS, STDIN
from fcgi_async.protocol.limits import Limits

from .strategies import FUZZ_SETTINGS, SETTINGS, names, record_streams, split_points

PY = records.select_parse_request_head(False)
C = records.select_parse_request_head(True)
PARSERS = {"off": None, "python": PY, "c": C}


def record(rtype: int, rid: int, content: bytes = b"", padding: int = 0, version: int = 1) -> bytes:
    """One raw record, built here without the codec under test."""
    header = bytes((version, rtype)) + rid.to_bytes(2, "big")
    header += len(content).to_bytes(2, "big") + bytes((padding, 0))
    return header + content + bytes(padding)


def head(
    params: dict[bytes, bytes],
    *,
    rid: int = 1,
    role: int = 1,
    flags: int = 1,
    cuts: tuple[int, ...] = (),
    padding: int = 0,
    stdin: bytes | None = b"",
) -> bytes:
    """BEGIN_REQUEST, the params cut into records at ``cuts``, an empty PARAMS, then STDIN."""
    stream = encode_pairs(params)
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(stream)), len(stream)]
    out = record(BEGIN_REQUEST, rid, bytes((role >> 8, role & 0xFF, flags, 0, 0, 0, 0, 0)))
    for start, end in itertools.pairwise(bounds):
        if end > start:
            out += record(PARAMS, rid, stream[start:end], padding)
    out += record(PARAMS, rid, b"", padding)
    if stdin is not None:
        out += record(STDIN, rid, stdin, padding)
    return out


def run(
    parser: records.ParseRequestHead | None,
    chunks: list[bytes],
    *,
    multiplex: bool = True,
    limits: Limits | None = None,
    roles: tuple[Role, ...] = (Role.RESPONDER, Role.AUTHORIZER, Role.FILTER),
) -> list[object]:
    """Everything a server connection gives for ``chunks``: events, answers, the error."""
    original = server.parse_request_head
    server.parse_request_head = parser  # type: ignore[assignment]
    try:
        conn = ServerConnection(multiplex=multiplex, limits=limits, roles=roles)
    finally:
        server.parse_request_head = original
    out: list[object] = []
    for chunk in chunks:
        conn.receive_data(chunk)
        try:
            while (event := conn.next_event()) is not NEED_DATA:
                out.append(event)
        except RemoteProtocolError as exc:
            out.append(("error", str(exc), exc.request_id))
            return out
        out.append(conn.data_to_send())
    out.append((conn.close_requested, conn.active_requests, conn.has_partial_record))
    return out


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` split at ``points`` (offsets beyond its end are ignored)."""
    bounds = [0, *sorted({p for p in points if 0 < p < len(data)}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def same_everywhere(chunks: list[bytes], **kwargs: object) -> list[object]:
    """Run all three parsers over ``chunks``; assert they agree; return the common result."""
    results = {name: run(parser, chunks, **kwargs) for name, parser in PARSERS.items()}  # type: ignore[arg-type]
    assert results["python"] == results["off"]
    assert results["c"] == results["off"]
    return results["off"]


NGINX = {b"REQUEST_METHOD": b"GET", b"SCRIPT_NAME": b"/", b"HTTP_HOST": b"x" * 200}


def test_the_c_parser_is_built() -> None:
    """CI builds the accelerator; a silent fallback would leave it untested."""
    assert C is not PY


@pytest.mark.parametrize("name", ["python", "c"])
def test_parses_a_whole_get(name: str) -> None:
    parse = PARSERS[name]
    assert parse is not None
    data = head(NGINX, rid=7, flags=1, padding=3)
    assert parse(data, 65535, 100) == (7, 1, 1, NGINX, len(data), True)
    assert parse(bytearray(data) + b"more", 65535, 100) == (7, 1, 1, NGINX, len(data), True)


@pytest.mark.parametrize("name", ["python", "c"])
def test_a_body_is_left_to_the_record_path(name: str) -> None:
    parse = PARSERS[name]
    assert parse is not None
    data = head(NGINX, stdin=b"body")
    without = len(head(NGINX, stdin=None))
    assert parse(data, 65535, 100) == (1, 1, 1, NGINX, without, False)


@pytest.mark.parametrize("name", ["python", "c"])
def test_pairs_spanning_records_are_joined(name: str) -> None:
    parse = PARSERS[name]
    assert parse is not None
    params = {b"A" * 300: b"v" * 1000, b"B": b"", b"": b"empty name"}
    data = head(params, cuts=(1, 2, 5, 700))
    assert parse(data, 65535, 100) == (1, 1, 1, params, len(data), True)


BEGIN = head(NGINX)[:16]
END_PARAMS = record(PARAMS, 1)
P = PARAMS


@pytest.mark.parametrize("name", ["python", "c"])
@pytest.mark.parametrize(
    ("data", "max_bytes", "max_pairs"),
    [
        pytest.param(head(NGINX, stdin=None)[:-1], 65535, 100, id="truncated"),
        pytest.param(head(NGINX, stdin=None)[:-8], 65535, 100, id="params-not-ended"),
        pytest.param(head(NGINX, rid=0), 65535, 100, id="id-0"),
        pytest.param(head(NGINX), 100, 100, id="params-too-large"),
        pytest.param(head(NGINX), 65535, 2, id="too-many-pairs"),
        pytest.param(b"\x00" + head(NGINX)[1:], 65535, 100, id="version-0"),
        pytest.param(record(BEGIN_REQUEST, 1, bytes(9)) + END_PARAMS, 65535, 100, id="long-begin"),
        pytest.param(BEGIN + record(P, 2, b"\x01\x01ab") + END_PARAMS, 999, 9, id="other-id"),
        pytest.param(BEGIN + record(P, 1, b"\x05\x01ab") + END_PARAMS, 999, 9, id="bad-pair"),
        pytest.param(BEGIN + record(P, 1, b"\x85\x00\x00") + END_PARAMS, 999, 9, id="cut-len"),
        pytest.param(BEGIN + record(STDIN, 1) + END_PARAMS, 65535, 100, id="stdin-first"),
        pytest.param(
            BEGIN + record(P, 1, b"\x01\x01ab", version=2) + END_PARAMS, 999, 9, id="version-2"
        ),
    ],
)
def test_anything_unusual_is_left_to_the_record_path(
    name: str, data: bytes, max_bytes: int, max_pairs: int
) -> None:
    parse = PARSERS[name]
    assert parse is not None
    assert parse(data, max_bytes, max_pairs) is None


def test_connection_gives_request_then_stdin_end() -> None:
    events = same_everywhere([head(NGINX, rid=3) + head(NGINX, rid=4, flags=0)])
    assert events[:4] == [
        RequestReceived(3, Role.RESPONDER, True, NGINX),
        StdinEnded(3),
        RequestReceived(4, Role.RESPONDER, False, NGINX),
        StdinEnded(4),
    ]


@pytest.mark.parametrize(
    ("data", "kwargs"),
    [
        pytest.param(head(NGINX) + head(NGINX), {}, id="duplicate-id"),
        pytest.param(head(NGINX, rid=1) + head(NGINX, rid=2), {"multiplex": False}, id="cant-mpx"),
        pytest.param(head(NGINX), {"roles": (Role.FILTER,)}, id="role-not-served"),
        pytest.param(head(NGINX) + record(STDIN, 1, b"late"), {}, id="stdin-after-its-end"),
        pytest.param(head(NGINX) + record(PARAMS, 1, b"\x01\x01ab"), {}, id="params-after-end"),
        pytest.param(head(NGINX, stdin=b"x") + record(STDIN, 1), {}, id="body-then-end"),
        pytest.param(head(NGINX) + record(2, 1), {}, id="abort-after-head"),
        pytest.param(head(NGINX, role=2), {}, id="authorizer"),
        pytest.param(head(NGINX, role=3), {}, id="filter"),
        pytest.param(head(NGINX, role=9), {}, id="unknown-role"),
        pytest.param(head(NGINX) * 2, {"limits": Limits(max_requests_per_connection=1)}, id="full"),
        pytest.param(head(NGINX), {"limits": Limits(max_params_bytes=50)}, id="params-limit"),
        pytest.param(head(NGINX), {"limits": Limits(max_params_pairs=1)}, id="pairs-limit"),
    ],
)
def test_refusals_and_errors_are_the_same(data: bytes, kwargs: dict[str, object]) -> None:
    same_everywhere([data], **kwargs)


def test_not_accepting_refuses_the_same() -> None:
    for parser in PARSERS.values():
        original = server.parse_request_head
        server.parse_request_head = parser  # type: ignore[assignment]
        try:
            conn = ServerConnection()
        finally:
            server.parse_request_head = original
        conn.accepting = False
        conn.receive_data(head(NGINX))
        assert conn.next_event().protocol_status.name == "OVERLOADED"  # type: ignore[union-attr]


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """A request head as web servers send it, sometimes slightly broken."""
    params = draw(st.dictionaries(names, st.binary(max_size=300), max_size=6))
    data = head(
        params,
        rid=draw(st.sampled_from([1, 1, 1, 2, 0, 0xFFFF])),
        role=draw(st.sampled_from([1, 1, 1, 2, 3, 7])),
        flags=draw(st.sampled_from([0, 1, 255])),
        cuts=tuple(draw(st.lists(st.integers(0, 2000), max_size=3))),
        padding=draw(st.sampled_from([0, 0, 3, 7, 255])),
        stdin=draw(st.sampled_from([b"", b"", None, b"body"])),
    )
    if draw(st.booleans()):  # flip one byte, or cut the head short
        at = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data = data[:at] + bytes((draw(st.integers(0, 255)),)) + data[at + 1 :]
        else:
            data = data[:at]
    return data


follow_ups = st.builds(
    record,
    st.sampled_from([PARAMS, STDIN, 2, 8]),  # 2 = ABORT_REQUEST, 8 = DATA
    st.sampled_from([1, 2]),
    st.sampled_from([b"", b"x", encode_pairs({b"A": b"b"})]),
)
"""Records that only mean something to a request already begun."""

streams = st.lists(heads() | follow_ups | record_streams, min_size=1, max_size=6).map(b"".join)


@given(data=streams, points=split_points, multiplex=st.booleans())
@SETTINGS
def test_same_events_whatever_the_stream(data: bytes, points: list[int], multiplex: bool) -> None:
    same_everywhere(cut(data, points), multiplex=multiplex)
    same_everywhere([data], multiplex=multiplex)


@given(data=st.binary(max_size=600), max_bytes=st.integers(0, 700), max_pairs=st.integers(0, 30))
@FUZZ_SETTINGS
def test_c_matches_python_on_any_bytes(data: bytes, max_bytes: int, max_pairs: int) -> None:
    assert C(data, max_bytes, max_pairs) == PY(data, max_bytes, max_pairs)


@given(data=heads(), max_bytes=st.integers(0, 70_000), max_pairs=st.integers(0, 30))
@FUZZ_SETTINGS
def test_c_matches_python_on_heads(data: bytes, max_bytes: int, max_pairs: int) -> None:
    assert C(data, max_bytes, max_pairs) == PY(data, max_bytes, max_pairs)


def _all_splits(data: bytes) -> Iterator[list[bytes]]:
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]


def test_every_single_split_of_a_get() -> None:
    data = head(NGINX, padding=5) + head(NGINX, rid=2)
    for chunks in _all_splits(data):
        assert same_everywhere(chunks)[-1] == (False, 2, False)


def test_reused_names_never_leak_between_requests() -> None:
    """The C parser reuses the name objects of the last request: only when the bytes match."""
    first = {
        b"AAAA": b"1",
        b"BBBB": b"2",
        b"N" * 100: b"long",
        **{b"K%03d" % i: b"" for i in range(70)},
    }
    second = {
        b"AAAB": b"1",
        b"BBBB": b"3",
        b"M" * 100: b"long",
        **{b"K%03d" % i: b"x" for i in range(70)},
    }
    for params in (first, second, first, {}, second):
        data = head(params)
        assert C(data, 65535, 1000) == PY(data, 65535, 1000) == (1, 1, 1, params, len(data), True)
