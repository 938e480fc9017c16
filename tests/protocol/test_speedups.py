"""The optional C pair decoder behaves exactly like the pure-Python reference."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcgi_async.protocol import RemoteProtocolError, encode_pairs, records

PY = records.select_decode_pairs(False)
C = records.select_decode_pairs(True)

needs_c = pytest.mark.skipif(
    C is PY, reason="the C accelerator was not built (no compiler at install time)"
)


def outcome(decode: records.DecodePairs, data: bytes, max_pairs: int) -> object:
    try:
        return decode(data, max_pairs)
    except RemoteProtocolError as exc:
        return ("error", str(exc))


def test_python_reference_is_selected_when_speedups_are_off() -> None:
    assert PY is records._decode_pairs_py


def test_python_reference_is_the_fallback_when_the_extension_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fcgi_async.protocol

    monkeypatch.delattr(fcgi_async.protocol, "_speedups", raising=False)
    monkeypatch.setitem(sys.modules, "fcgi_async.protocol._speedups", None)
    assert records.select_decode_pairs(True) is records._decode_pairs_py


def test_request_head_parser_falls_back_to_python_when_the_extension_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fcgi_async.protocol

    assert records.select_parse_request_head(False) is records._parse_request_head_py
    monkeypatch.delattr(fcgi_async.protocol, "_speedups", raising=False)
    monkeypatch.setitem(sys.modules, "fcgi_async.protocol._speedups", None)
    assert records.select_parse_request_head(True) is records._parse_request_head_py


@needs_c
@given(
    st.lists(st.tuples(st.binary(max_size=300), st.binary(max_size=300)), max_size=20),
    st.integers(min_value=1, max_value=25),
)
@settings(max_examples=300, deadline=None)
def test_same_result_on_valid_streams(pairs: list[tuple[bytes, bytes]], max_pairs: int) -> None:
    data = encode_pairs(pairs)
    assert outcome(C, data, max_pairs) == outcome(PY, data, max_pairs)
    assert outcome(C, bytearray(data), max_pairs) == outcome(PY, bytearray(data), max_pairs)


@needs_c
@given(st.binary(max_size=200), st.integers(min_value=1, max_value=10))
@settings(max_examples=500, deadline=None)
def test_same_result_on_arbitrary_bytes(data: bytes, max_pairs: int) -> None:
    assert outcome(C, data, max_pairs) == outcome(PY, data, max_pairs)


@needs_c
@pytest.mark.parametrize(
    "data",
    [
        b"\x80",  # truncated 4-byte name length
        b"\x01",  # no value length
        b"\x01\x80\x00",  # truncated 4-byte value length
        b"\x01\x01a",  # value missing
        b"\xff\xff\xff\xff\x00",  # 2 GiB name in a 5-byte stream
        b"\x00\xff\xff\xff\xff",  # 2 GiB value
    ],
)
def test_same_errors_on_truncated_pairs(data: bytes) -> None:
    result = outcome(C, data, 10)
    assert result == outcome(PY, data, 10)
    assert isinstance(result, tuple)
    assert result[0] == "error"


def test_the_loader_honours_the_switch_and_a_missing_extension(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fcgi_async.protocol import speedups

    assert speedups.load_speedups(records.SPEEDUPS_MODULE, False) is None
    monkeypatch.setenv(speedups.NO_SPEEDUPS_ENV, "1")
    assert not speedups.speedups_wanted()
    monkeypatch.setitem(sys.modules, records.SPEEDUPS_MODULE, None)
    assert speedups.load_speedups(records.SPEEDUPS_MODULE, True) is None
