"""Hypothesis strategies and settings shared by the property and fuzz tests.

Example counts are bounded so the whole ``tests/protocol`` folder stays well under 30 s;
raise them locally with ``--hypothesis-seed`` and a bigger profile when hunting.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from fcgi_async.protocol import RecordType, encode_pairs

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""Settings of the property tests: bounded examples, no per-example deadline (CI jitter)."""

FUZZ_SETTINGS = settings(SETTINGS, max_examples=300)
"""Settings of the random-bytes fuzz tests: cheap examples, so more of them."""

RECORD_FUZZ_SETTINGS = settings(SETTINGS, max_examples=200)
"""Settings of the record-stream fuzz tests, whose examples cost more to generate."""

names = st.binary(max_size=140)
"""Param names: empty, 1-byte and 4-byte length classes."""

values = st.binary(max_size=300)
"""Param values: both length classes."""

big_value = st.integers(min_value=65_000, max_value=70_000).map(lambda n: b"v" * n)
"""A value longer than one record: at most one per PARAMS set, to stay under the limit."""

params = st.builds(
    lambda small, big: {**small, **big},
    st.dictionaries(names, values, max_size=8),
    st.dictionaries(names, big_value, max_size=1),
)
"""A PARAMS set, sometimes with a pair spanning records."""

bodies = st.one_of(
    st.binary(max_size=3000),
    st.integers(min_value=16_000, max_value=140_000).map(
        lambda size: (bytes(range(251)) * (size // 251 + 1))[:size]
    ),
)
"""Request or response bodies: small and random, or large enough to span records."""

split_points = st.lists(st.integers(min_value=1, max_value=400_000), max_size=12)
"""Offsets at which a byte stream is cut before feeding."""


@st.composite
def records(draw: st.DrawFn) -> bytes:
    """One record with a plausible header and arbitrary type, id, content and padding."""
    rtype = draw(st.one_of(st.sampled_from(list(RecordType)), st.integers(0, 255)))
    rid = draw(st.sampled_from([0, 1, 2, 3, 0xFFFF]))
    content = draw(
        st.one_of(
            st.just(b""),
            st.binary(max_size=40),
            st.builds(encode_pairs, st.dictionaries(names, st.binary(max_size=20), max_size=3)),
            st.builds(
                lambda role, flags: bytes((0, role, flags, 0, 0, 0, 0, 0)),
                st.integers(0, 4),
                st.integers(0, 3),
            ),
        )
    )
    # Mostly what real peers send (0-7), sometimes anything up to the 255 maximum.
    padding = draw(st.sampled_from([0, 0, 1, 3, 7, 7, 8, 255]) | st.integers(0, 7))
    version = draw(st.sampled_from([1] * 30 + [0, 2]))
    header = bytes((version, rtype)) + rid.to_bytes(2, "big")
    header += len(content).to_bytes(2, "big") + bytes((padding, 0))
    return header + content + bytes(padding)


record_streams = st.lists(records(), max_size=16).map(b"".join)
"""Streams of records that parse as framing but mean anything at all."""
