"""Scenario R3a (issue 9, item 3): the decoder against hostile bytes.

Valid records of every schema are mutated the ways an attacker or a broken producer
would: truncated, a huge or negative varint (string/bytes lengths, array/map block
counts, union and enum indexes are all zig-zag varints) spliced in anywhere, invalid
UTF-8 in a string, a wrong magic byte, an unknown schema id, random bodies. The decoder
either returns a record or raises a ``SerializationError`` subclass: nothing else, in
bounded time (hypothesis deadline per example) and bounded memory (tracemalloc peak).
"""

from __future__ import annotations

import contextlib
import random
import tracemalloc
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import codec
from streams.errors import SerializationError
from tests.factories import FACTORIES, make_consent, make_record

pytestmark = pytest.mark.unit

SEED = 9  # the sample records; hypothesis derandomized below, so runs are reproducible
MEMORY_BOUND = 256 * 1024  # bytes of peak allocation allowed to decode one hostile record
FUZZ = settings(max_examples=400, deadline=timedelta(seconds=2), derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def _samples() -> list[bytes]:
    rng = random.Random(SEED)
    out = [codec.encode(s, make_record(s, rng)) for s in sorted(FACTORIES) for _ in range(3)]
    out.append(codec.encode("ConsentRecord", make_consent("acct-1", rng)))
    return out


SAMPLES = _samples()


def _zigzag(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    z &= (1 << 64) - 1
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


@st.composite
def hostile(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    kind = draw(st.sampled_from(["truncate", "varint", "utf8", "magic", "schema_id",
                                 "random_body", "flip"]))
    if kind == "truncate":
        return bytes(data[:draw(st.integers(0, len(data) - 1))])
    if kind == "magic":
        data[0] = draw(st.integers(1, 255))
        return bytes(data)
    if kind == "schema_id":
        known = {s.id for s in codec.default_codec().catalog}
        sid = draw(st.integers(0, 2**32 - 1).filter(lambda i: i not in known))
        return bytes(data[:1]) + sid.to_bytes(4, "big") + bytes(data[5:])
    if kind == "random_body":
        return bytes(data[:5]) + draw(st.binary(max_size=200))
    at = draw(st.integers(5, len(data)))
    if kind == "varint":  # huge lengths / block counts, negative union or enum indexes
        n = draw(st.one_of(st.integers(-(2**63), -1), st.integers(2**20, 2**63 - 1),
                           st.sampled_from([-1, -2, 2**31, 2**62, -(2**63), 2**63 - 1])))
        cut = draw(st.integers(at, min(len(data), at + 10)))
        return bytes(data[:at]) + _zigzag(n) + bytes(data[cut:])
    if kind == "utf8":  # a short string of invalid UTF-8
        bad = draw(st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]))
        return bytes(data[:at]) + _zigzag(len(bad)) + bad + bytes(data[at:])
    pos = draw(st.integers(5, len(data) - 1))  # flip one byte
    data[pos] ^= draw(st.integers(1, 255))
    return bytes(data)


def _decode_bounded(data: bytes) -> None:
    tracemalloc.start()
    try:
        # The only allowed failure; anything else propagates and fails the test.
        with contextlib.suppress(SerializationError):
            codec.decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND + 64 * len(data), f"peak {peak} B for {len(data)} input bytes"


@FUZZ
@given(hostile())
def test_r3_hostile_records_raise_serialization_errors_only(data: bytes) -> None:
    _decode_bounded(data)


@FUZZ
@given(st.binary(max_size=512))
def test_r3_arbitrary_bytes_raise_serialization_errors_only(data: bytes) -> None:
    _decode_bounded(data)


@pytest.mark.parametrize("n", [2**62, 2**63 - 1, -1, -(2**63)])
def test_r3_huge_block_count_or_length_after_every_header(n: int) -> None:
    """A huge varint as the first body value of every schema (a string length, an enum or
    union index, an array block count, whatever comes first)."""
    for info in codec.default_codec().catalog:
        _decode_bounded(b"\x00" + info.id.to_bytes(4, "big") + _zigzag(n) + b"\x02a" * 4)
