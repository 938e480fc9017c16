"""Record framing and name-value pairs (spec §3.3, §3.4), checked byte for byte."""

from __future__ import annotations

import pytest

from fcgi_async.protocol import (
    MAX_CONTENT_LENGTH,
    LocalProtocolError,
    RecordType,
    RemoteProtocolError,
    encode_pairs,
    encode_record,
    records,
)
from fcgi_async.protocol._buffer import RecordBuffer
from fcgi_async.protocol.records import (
    DecodePairs,
    encode_begin_request,
    encode_end_request,
    encode_stream,
    encode_unknown_type,
    pack_header,
)

from .helpers import join, parse_wire, raw_record


class TestHeader:
    """The 8-byte record header and its range checks."""

    def test_layout(self) -> None:
        assert pack_header(RecordType.STDOUT, 0x1234, 0x5678, 7) == bytes(
            (1, 6, 0x12, 0x34, 0x56, 0x78, 7, 0)
        )

    @pytest.mark.parametrize("length", [-1, MAX_CONTENT_LENGTH + 1])
    def test_content_length_out_of_range(self, length: int) -> None:
        with pytest.raises(LocalProtocolError, match="content length"):
            pack_header(RecordType.STDOUT, 1, length)

    @pytest.mark.parametrize("request_id", [-1, 0x10000])
    def test_request_id_out_of_range(self, request_id: int) -> None:
        with pytest.raises(LocalProtocolError, match="request id"):
            encode_record(RecordType.STDOUT, request_id, b"x")

    def test_record_too_long(self) -> None:
        with pytest.raises(LocalProtocolError):
            encode_record(RecordType.STDOUT, 1, b"x" * (MAX_CONTENT_LENGTH + 1))


class TestPadding:
    """Output is padded to a multiple of 8 with zero bytes."""

    @pytest.mark.parametrize("n", range(17))
    def test_encode_record_pads_to_8(self, n: int) -> None:
        (rec,) = parse_wire(encode_record(RecordType.STDIN, 3, b"a" * n))
        assert rec.content == b"a" * n
        assert (n + len(rec.padding)) % 8 == 0
        assert len(rec.padding) < 8
        assert rec.padding == b"\x00" * len(rec.padding)

    @pytest.mark.parametrize("n", [1, 7, 8, 9, 16383, 16384, 65528, 65535, 65536, 200_000])
    def test_encode_stream_pads_every_record(self, n: int) -> None:
        records = parse_wire(encode_stream(RecordType.STDOUT, 9, b"z" * n))
        assert b"".join(r.content for r in records) == b"z" * n
        for rec in records:
            assert rec.version == 1
            assert rec.type == RecordType.STDOUT
            assert rec.request_id == 9
            assert 0 < len(rec.content) <= MAX_CONTENT_LENGTH
            assert (len(rec.content) + len(rec.padding)) % 8 == 0

    def test_empty_stream_frames_nothing(self) -> None:
        assert encode_stream(RecordType.STDOUT, 1, b"") == []


class TestEncodeStreamBuffers:
    """Small payloads become one buffer; large ones are sliced, not copied."""

    def test_small_payload_is_one_buffer(self) -> None:
        out = encode_stream(RecordType.STDOUT, 1, memoryview(b"hello"))
        assert len(out) == 1
        assert isinstance(out[0], bytes)

    def test_large_payload_is_sliced_not_joined(self) -> None:
        payload = bytes(range(256)) * 600  # 153600 bytes: 65528 + 65528 + 22544
        out = encode_stream(RecordType.STDOUT, 1, payload)
        views = [b for b in out if isinstance(b, memoryview)]
        assert [len(v) for v in views] == [65528, 65528, 22544]
        assert all(v.obj is payload for v in views)
        # Full records are a multiple of 8 long: no padding buffer follows them.
        assert len(out) == 2 + 2 + 2  # header+view, header+view, header+view (22544 % 8 == 0)
        assert join(out)[8 : 8 + 65528] == payload[:65528]

    def test_large_payload_with_padded_tail(self) -> None:
        payload = b"q" * (65528 + 5)
        out = encode_stream(RecordType.STDERR, 2, payload)
        assert len(out) == 5
        assert out[-1] == b"\x00" * 3
        records = parse_wire(out)
        assert [len(r.content) for r in records] == [65528, 5]
        assert [len(r.padding) for r in records] == [0, 3]


class TestFixedBodies:
    """BEGIN_REQUEST, END_REQUEST and UNKNOWN_TYPE bodies, byte for byte."""

    def test_begin_request(self) -> None:
        (rec,) = parse_wire(encode_begin_request(7, 3, keep_conn=True))
        assert (rec.type, rec.request_id) == (RecordType.BEGIN_REQUEST, 7)
        assert rec.content == bytes((0, 3, 1, 0, 0, 0, 0, 0))
        (rec,) = parse_wire(encode_begin_request(7, 1, keep_conn=False))
        assert rec.content == bytes((0, 1, 0, 0, 0, 0, 0, 0))

    def test_end_request_masks_app_status(self) -> None:
        (rec,) = parse_wire(encode_end_request(5, -1, 2))
        assert (rec.type, rec.request_id) == (RecordType.END_REQUEST, 5)
        assert rec.content == b"\xff\xff\xff\xff\x02\x00\x00\x00"

    def test_unknown_type(self) -> None:
        (rec,) = parse_wire(encode_unknown_type(0x1FF))
        assert (rec.type, rec.request_id) == (RecordType.UNKNOWN_TYPE, 0)
        assert rec.content == bytes((0xFF, 0, 0, 0, 0, 0, 0, 0))


class _HugeName(bytes):
    """Claims a length beyond FastCGI's 31-bit limit without allocating 2 GiB."""

    __slots__ = ()

    def __len__(self) -> int:
        return 0x80000000


DECODERS = {"python": records.select_decode_pairs(False), "selected": records.decode_pairs}


@pytest.fixture(params=sorted(DECODERS))
def decode(request: pytest.FixtureRequest) -> DecodePairs:
    """Each pair decoder: the pure-Python reference and the one in use (C when built)."""
    return DECODERS[request.param]


class TestNameValuePairs:
    """Name-value pairs of every length class, and truncated ones (spec §3.4)."""

    @pytest.mark.parametrize(
        ("length", "prefix"),
        [
            (0, b"\x00"),
            (1, b"\x01"),
            (127, b"\x7f"),
            (128, b"\x80\x00\x00\x80"),
            (65535, b"\x80\x00\xff\xff"),
            (1 << 20, b"\x80\x10\x00\x00"),
        ],
    )
    def test_length_classes(self, decode: DecodePairs, length: int, prefix: bytes) -> None:
        name = b"n" * length
        value = b"v" * length
        wire = encode_pairs({name: value})
        assert wire == prefix + prefix + name + value
        assert decode(wire, 10) == [(name, value)]

    def test_mixed_lengths_and_order(self, decode: DecodePairs) -> None:
        pairs = [(b"", b""), (b"a", b"x" * 200), (b"b" * 300, b""), (b"c", b"d")]
        assert decode(encode_pairs(pairs), 10) == pairs

    def test_mapping_and_iterable_agree(self) -> None:
        assert encode_pairs({b"a": b"1", b"b": b"2"}) == encode_pairs([(b"a", b"1"), (b"b", b"2")])

    def test_any_bytes_survive(self, decode: DecodePairs) -> None:
        odd = bytes(range(256))
        assert decode(encode_pairs({odd: odd[::-1]}), 1) == [(odd, odd[::-1])]

    def test_bytearray_input_gives_bytes(self, decode: DecodePairs) -> None:
        ((name, value),) = decode(bytearray(encode_pairs({b"k": b"v"})), 1)
        assert (name, value) == (b"k", b"v")
        assert type(name) is bytes
        assert type(value) is bytes

    def test_too_long_for_fastcgi(self) -> None:
        with pytest.raises(LocalProtocolError, match="too long"):
            encode_pairs([(_HugeName(), b"")])

    def test_max_pairs(self, decode: DecodePairs) -> None:
        wire = encode_pairs([(b"a", b"1")] * 3)
        assert len(decode(wire, 3)) == 3
        with pytest.raises(RemoteProtocolError, match="more than 2"):
            decode(wire, 2)

    @pytest.mark.parametrize(
        ("wire", "match"),
        [
            pytest.param(b"\x01", "in its lengths", id="value-length-missing"),
            pytest.param(b"\x80\x00\x00", "4-byte length", id="4-byte-name-length-truncated"),
            pytest.param(b"\x01\x80\x00", "4-byte length", id="4-byte-value-length-truncated"),
            pytest.param(b"\x01\x01a", "longer than the stream", id="value-missing"),
            pytest.param(b"\x05\x00abc", "longer than the stream", id="name-short"),
            pytest.param(b"\xff\xff\xff\xff\x00abc", "longer than the stream", id="huge-name"),
            pytest.param(b"\x00\xff\xff\xff\xff", "longer than the stream", id="huge-value"),
            pytest.param(encode_pairs({b"a": b"b"}) + b"\x03", "in its lengths", id="garbage"),
        ],
    )
    def test_truncated_pairs_fail_cleanly(
        self, decode: DecodePairs, wire: bytes, match: str
    ) -> None:
        with pytest.raises(RemoteProtocolError, match=match):
            decode(wire, 10)

    def test_top_bit_is_masked(self, decode: DecodePairs) -> None:
        # A 4-byte length is 31 bits: the top bit is the marker, never part of the length.
        assert decode(b"\x80\x00\x00\x01\x00a", 1) == [(b"a", b"")]


class TestRecordBuffer:
    """Cutting received bytes into records."""

    @pytest.mark.parametrize("padding", [0, 1, 7, 8, 100, 255])
    def test_padding_is_skipped(self, padding: int) -> None:
        buf = RecordBuffer()
        buf.feed(raw_record(RecordType.STDIN, 1, b"abc", padding) + raw_record(6, 2, b"d"))
        assert buf.next_record() == (RecordType.STDIN, 1, b"abc")
        assert buf.next_record() == (6, 2, b"d")
        assert buf.next_record() is None
        assert buf.pending == 0

    def test_waits_for_the_whole_record(self) -> None:
        buf = RecordBuffer()
        rec = raw_record(RecordType.STDIN, 1, b"hello", 3)
        for i in range(len(rec) - 1):
            buf.feed(rec[i : i + 1])
            assert buf.next_record() is None
            assert buf.pending == i + 1
        buf.feed(rec[-1:])
        assert buf.next_record() == (RecordType.STDIN, 1, b"hello")

    @pytest.mark.parametrize("version", [0, 2, 255])
    def test_bad_version(self, version: int) -> None:
        buf = RecordBuffer()
        buf.feed(raw_record(RecordType.STDIN, 1, b"", version=version))
        with pytest.raises(RemoteProtocolError, match="version"):
            buf.next_record()

    def test_version_checked_before_content_arrives(self) -> None:
        buf = RecordBuffer()
        buf.feed(raw_record(RecordType.STDIN, 1, b"x" * 100, version=2)[:8])
        with pytest.raises(RemoteProtocolError):
            buf.next_record()
