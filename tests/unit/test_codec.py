"""Codec: Confluent framing + schemaless Avro; every failure is a SerializationError."""

from __future__ import annotations

import contextlib
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import codec
from streams.codec import FramingError, MalformedRecordError, UnknownSchemaError
from streams.errors import SerializationError
from tests.factories import FACTORIES, make_consent, make_record, make_request

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("schema", sorted(FACTORIES))
def test_round_trip_every_input_schema(schema: str) -> None:
    rng = random.Random(3)
    for _ in range(50):
        rec = make_record(schema, rng)
        data = codec.encode(schema, rec)
        assert data[0] == 0
        assert codec.schema_id_of(data) == codec.default_codec().catalog.by_name(schema).id
        assert codec.decode(data) == (schema, rec)


def test_round_trip_control_records_by_id() -> None:
    rng = random.Random(4)
    consent = make_consent("acct-1", rng)
    request = make_request("acct-1", rng)
    assert codec.decode(codec.encode(20, consent)) == ("ConsentRecord", consent)
    assert codec.decode(codec.encode(21, request)) == ("SubjectRequest", request)


def test_framing_header_is_magic_then_big_endian_id() -> None:
    rec = make_record("RelayTransferEvent", random.Random(1))
    data = codec.encode("RelayTransferEvent", rec)
    assert data[:5] == struct.pack(">bI", 0, 9)


def test_wrong_magic_byte() -> None:
    data = bytearray(codec.encode("PlaybackEvent", make_record("PlaybackEvent", random.Random(1))))
    data[0] = 1
    with pytest.raises(FramingError, match="magic"):
        codec.decode(bytes(data))


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x00\x00\x00"])
def test_too_short(data: bytes) -> None:
    with pytest.raises(FramingError, match="shorter"):
        codec.decode(data)


def test_unknown_schema_id() -> None:
    with pytest.raises(UnknownSchemaError, match="9999"):
        codec.decode(struct.pack(">bI", 0, 9999) + b"\x00")


def test_unknown_schema_name_on_encode() -> None:
    with pytest.raises(UnknownSchemaError):
        codec.encode("NoSuchSchema", {})


def test_truncated_body() -> None:
    data = codec.encode("PlaybackEvent", make_record("PlaybackEvent", random.Random(1)))
    for cut in (6, 20, len(data) - 1):
        with pytest.raises(MalformedRecordError):
            codec.decode(data[:cut])


def test_trailing_garbage() -> None:
    data = codec.encode("RelayTransferEvent", make_record("RelayTransferEvent", random.Random(1)))
    with pytest.raises(MalformedRecordError, match="trailing"):
        codec.decode(data + b"\x00")


def test_invalid_utf8() -> None:
    # DropRecord: event_id union branch 1 (string) of length 1 holding 0xff.
    with pytest.raises(MalformedRecordError, match="UTF-8"):
        codec.decode(struct.pack(">bI", 0, 39) + b"\x02\x02\xff")


@pytest.mark.timeout(10)
def test_huge_length_prefixes_do_not_allocate_or_hang() -> None:
    """A string length of 2**62 and an array count of 2**62 fail fast."""
    huge = b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f"
    with pytest.raises(MalformedRecordError):
        codec.decode(struct.pack(">bI", 0, 39) + b"\x02" + huge)
    # CrashTriageReport-like arrays: AnalyticsEvent attributes map with a huge count.
    body = b"\x02a\x00\x02s\x02t\x00\x02r\x02v" + huge
    with pytest.raises(MalformedRecordError):
        codec.decode(struct.pack(">bI", 0, 30) + body)


def test_record_that_does_not_encode() -> None:
    rec = make_record("PlaybackEvent", random.Random(1))
    rec["position_ms"] = "not a number"
    with pytest.raises(MalformedRecordError, match="PlaybackEvent"):
        codec.encode("PlaybackEvent", rec)
    del rec["event_id"]
    with pytest.raises(SerializationError):
        codec.encode("PlaybackEvent", rec)


def test_not_bytes() -> None:
    with pytest.raises(FramingError):
        codec.decode("text")  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(schema_id=st.sampled_from([1, 2, 6, 20, 30, 38]), body=st.binary(max_size=200))
def test_garbage_never_escapes_as_another_exception(schema_id: int, body: bytes) -> None:
    data = struct.pack(">bI", 0, schema_id) + body
    with contextlib.suppress(SerializationError):
        codec.decode(data)


def test_errors_are_serialization_errors() -> None:
    for cls in (FramingError, UnknownSchemaError, MalformedRecordError):
        assert issubclass(cls, SerializationError)
