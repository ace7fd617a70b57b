"""The native batch decoder gives the reference decoder's tables and refusals (D9).

The reference is ``codec.decode`` per message (fastavro) then ``pa.Table.from_pylist``.
Every schema of the catalog is checked: generated records of any shape, the traffic
generator's batches (with their bad records), and hostile bytes from the codec's fuzz
scenario, mixed into batches so that a refused message must not disturb its neighbours.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import avro_kernel
from streams.avro_columns import ColumnDecoder, DecodedBatch, decode_rows
from streams.codec import Codec, MalformedRecordError, default_codec
from streams.schema_catalog import SchemaCatalog, SchemaInfo
from streams.traffic_model import TrafficConfig
from streams.traffic_stream import TrafficStream
from tests.factories import FACTORIES, make_consent, make_record
from tests.unit.test_codec_fuzz import hostile

pytestmark = pytest.mark.unit

CODEC = default_codec()
DECODER = ColumnDecoder(CODEC)
SCHEMAS = sorted(s.name for s in CODEC.catalog)
# Where Avro calls a value invalid but fastavro reads one anyway (Python's negative
# indexing, unbounded ints, any non-zero byte as true), the kernel refuses.
STRICTER = {avro_kernel.BAD_VARINT, avro_kernel.BAD_ENUM, avro_kernel.BAD_BRANCH,
            avro_kernel.BAD_BOOLEAN, avro_kernel.INT_RANGE}


def _values(t: Any) -> st.SearchStrategy[Any]:
    """Any value of Avro type ``t`` (logical types as their base type)."""
    if isinstance(t, list):
        return st.one_of(*[_values(b) for b in t])
    if isinstance(t, dict):
        kind = t["type"]
        if kind == "record":
            return st.fixed_dictionaries({f["name"]: _values(f["type"]) for f in t["fields"]})
        if kind == "enum":
            return st.sampled_from(t["symbols"])
        if kind == "map":
            return st.dictionaries(st.text(max_size=8), _values(t["values"]), max_size=5)
        if kind == "array":
            return st.lists(_values(t["items"]), max_size=5)
        return _values(kind)
    return {"null": st.none(), "string": st.text(max_size=12), "bytes": st.binary(max_size=12),
            "long": st.integers(-(2**63), 2**63 - 1), "int": st.integers(-(2**31), 2**31 - 1),
            "double": st.floats(allow_nan=False), "float": st.floats(allow_nan=False, width=32),
            "boolean": st.booleans()}[t]


@st.composite
def batches(draw: st.DrawFn) -> list[bytes]:
    out = []
    for name in draw(st.lists(st.sampled_from(SCHEMAS), min_size=1, max_size=12)):
        fields = CODEC.catalog.by_name(name).raw["fields"]
        record = draw(st.fixed_dictionaries({f["name"]: _values(f["type"]) for f in fields}))
        out.append(CODEC.encode(name, record))
    return out


def _words(error: Exception) -> str:
    return re.sub(r" at 0x[0-9a-f]+", "", str(error))  # fastavro names its buffer object


def assert_same(messages: list[bytes], decoder: ColumnDecoder = DECODER) -> DecodedBatch:
    """The native result equals the reference, message by message. The native decoder
    may refuse what the reference reads only where it is stricter, even every message of
    a schema (then that schema has no part)."""
    native, reference = decoder.decode(messages), decode_rows(messages, decoder.codec)
    ids = [p.schema.id for p in native.parts]
    assert ids == sorted(ids)
    assert set(ids) <= {p.schema.id for p in reference.parts}
    parts = {p.schema.id: p for p in native.parts}
    for want in reference.parts:
        got = parts.get(want.schema.id)
        got_index = got.index if got is not None else np.empty(0, np.int64)
        for i in np.setdiff1d(want.index, got_index).tolist():  # the kernel stricter
            assert isinstance(native.errors[i], MalformedRecordError)
            assert any(avro_kernel.REASONS[c] in str(native.errors[i]) for c in STRICTER)
        if got is None:
            continue
        keep = np.isin(want.index, got.index)
        assert got.index.tolist() == want.index[keep].tolist()
        assert got.table.schema == want.table.schema
        assert got.table.to_pylist() == want.table.filter(keep).to_pylist(), got.schema.name
    for i, error in reference.errors.items():
        assert type(native.errors[i]) is type(error)
        assert _words(native.errors[i]) == _words(error)
    return native


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_generated_records_of_every_schema_decode_as_the_reference(messages: list[bytes]
                                                                   ) -> None:
    native = assert_same(messages)
    assert not native.errors and len(native) == len(messages)


def test_every_schema_but_the_purge_command_decodes_natively() -> None:
    """Arrays of flat records (the consent record's servers) have a program; the purge
    command's nested records still go through the reference."""
    refused = [s.name for s in CODEC.catalog if DECODER._program(s.id) is None]
    assert refused == ["PurgeCommand"]


def test_sample_records_of_every_input_and_control_schema() -> None:
    rng = random.Random(3)
    messages = [CODEC.encode(s, make_record(s, rng)) for s in sorted(FACTORIES)
                for _ in range(20)]
    messages += [CODEC.encode("ConsentRecord", make_consent(f"acct-{i}", rng))
                 for i in range(20)]
    rng.shuffle(messages)
    native = assert_same(messages)
    assert len(native) == len(messages) and not native.errors


@pytest.mark.parametrize("seed", [1, 2])
def test_traffic_batches_with_their_bad_records(seed: int) -> None:
    stream = TrafficStream(TrafficConfig(seed=seed))
    _, _, values = stream.columns(6_000)
    native = assert_same(list(values))
    assert native.errors, "the generator's bad records are refused"
    assert len(native) == len(values)


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile(), min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_hostile_bytes_among_valid_messages(bad: list[bytes], rng: random.Random) -> None:
    good = [CODEC.encode(s, make_record(s, rng)) for s in sorted(FACTORIES)]
    messages = good + bad
    rng.shuffle(messages)
    native = assert_same(messages)
    assert len(native) == len(messages)


def test_a_byte_moved_between_two_messages_fails_both() -> None:
    """Concatenated bodies must not read across a message boundary."""
    rng = random.Random(5)
    a, b = (CODEC.encode("PlaybackEvent", make_record("PlaybackEvent", rng)) for _ in "ab")
    native = assert_same([a[:-1], b[:5] + a[-1:] + b[5:]])
    assert set(native.errors) == {0, 1}


def test_trailing_bytes_on_the_last_message_are_refused() -> None:
    rng = random.Random(6)
    a, b = (CODEC.encode("PlaybackEvent", make_record("PlaybackEvent", rng)) for _ in "ab")
    native = assert_same([a, b + b"\x00\x00"])
    assert set(native.errors) == {1}
    assert "trailing" in str(native.errors[1])


def test_a_tombstone_is_a_framing_error_not_a_crash() -> None:
    rng = random.Random(7)
    a = CODEC.encode("PlaybackEvent", make_record("PlaybackEvent", rng))
    native = DECODER.decode([a, None])  # type: ignore[list-item]
    assert native.parts[0].index.tolist() == [0]
    assert "NoneType" in str(native.errors[1])


def test_maps_outgrowing_the_first_guess_of_room() -> None:
    """A batch whose maps hold many entries per row takes the kernel's second attempt."""
    record = make_record("PlaybackEvent", random.Random(8))
    analytics = {"event_id": record["event_id"], "subject_pseudonym": None, "source": "s",
                 "event_type": "t", "event_time": 1, "processing_region": "r",
                 "policy_version": "v", "attributes": {f"k{i}": str(i) for i in range(50)},
                 "measures": {f"m{i}": float(i) for i in range(50)}}
    native = assert_same([CODEC.encode("AnalyticsEvent", analytics)] * 3)
    assert native.parts[0].table.column("attributes").to_pylist()[2] == list(
        analytics["attributes"].items())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 90), st.integers(0, 10)), min_size=3,
                         max_size=3), max_size=20), st.integers(0, 5))
def test_gathering_all_slots_row_by_row_equals_gathering_each_slot(
        rows: list[list[tuple[int, int]]], spare: int) -> None:
    """The decoder gathers every string column in one pass over the rows: the same offsets
    and bytes per column as gathering each column alone (rows past ``n`` are ignored)."""
    buf = np.frombuffer(bytes(range(100)), np.uint8)
    spans = np.array(rows + [[(0, 9)] * 3] * spare, np.int64).reshape(-1, 3, 2)
    spans = np.ascontiguousarray(spans.transpose(1, 0, 2))  # (slot, row, 2)
    offsets, data, base = avro_kernel.gather_rows(buf, spans, len(rows))
    for slot in range(3):
        want_offsets, want_data = avro_kernel.gather(buf, spans[slot], len(rows))
        assert offsets[slot].tolist() == want_offsets.tolist()
        assert data[base[slot]:base[slot + 1]].tobytes() == want_data.tobytes()


def test_utf8_checked_at_every_position_around_word_edges() -> None:
    """Strings are checked for ASCII a word at a time, their last bytes in one word read
    from inside the batch (byte by byte at its very end): a non-ASCII byte, valid or not,
    at any position of a string of 0-24 bytes is judged as the codec judges it, also when
    the string ends the batch."""
    name = "CrashReportEvent"
    last = CODEC.catalog.by_name(name).raw["fields"][-1]
    assert last["type"] == "string"  # the string ends the message
    record = make_record(name, random.Random(9))
    messages = []
    for length in range(25):
        message = CODEC.encode(name, {**record, last["name"]: "Q" * length})
        body = message[:len(message) - length]
        for at in range(length):
            for odd in (b"\x80", b"\xff", b"\xc3\xa9", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"):
                text = (b"Q" * at + odd + b"Q" * length)[:length]
                messages.append(body + text)
        messages.append(message)
    for message in messages:  # each alone: its string ends the batch
        assert_same([message])
    native = assert_same(messages)
    assert native.errors and native.parts


def _consents(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [CODEC.encode("ConsentRecord", make_consent(f"acct-{seed}-{i}", rng))
            for i in range(n)]


def test_consent_records_with_every_switch_null_or_set_and_any_number_of_servers() -> None:
    rng = random.Random(10)
    messages = []
    for i in range(60):
        servers = [{"server_id": f"s{i}-{j}", **{
            name: rng.choice((None, True, False)) for name in (
                "crash_reports", "push_notifications", "optional_telemetry",
                "metadata_matching")}} for j in range(i % 7)]
        record = make_consent(f"acct-{i}", rng, servers=servers, age_band=rng.choice(
            (None, "adult", "under_13")), email=rng.choice((None, "a@b.c")))
        messages.append(CODEC.encode("ConsentRecord", record))
    native = assert_same(messages)
    assert not native.errors and native.parts[0].table.num_rows == 60


def test_consent_servers_outgrowing_the_first_guess_of_room() -> None:
    rng = random.Random(11)
    servers = [{"server_id": f"srv-{j}", "crash_reports": j % 3 == 0} for j in range(100)]
    record = make_consent("acct-1", rng, servers=servers)
    native = assert_same([CODEC.encode("ConsentRecord", record)] * 3)
    assert len(native.parts[0].table.column("servers").to_pylist()[2]) == 100


@pytest.mark.parametrize("replacement", [0x00, 0x01, 0x02, 0x03, 0x7F, 0x80, 0xFF])
def test_consent_records_with_any_byte_replaced(replacement: int) -> None:
    """A byte replaced at every position of a consent record (in branches, booleans,
    lengths and block counts of its servers), among valid records: each refused as the
    codec refuses it, or decoded as the codec decodes it (or refused where Avro calls the
    value invalid)."""
    good = _consents(3, seed=12)
    message = good[0]
    messages = [message[:at] + bytes([replacement]) + message[at + 1:]
                for at in range(5, len(message))]
    assert_same([*good, *messages, *good])


def test_consent_records_truncated_or_with_trailing_bytes() -> None:
    good = _consents(2, seed=13)
    message = good[0]
    messages = [message[:end] for end in range(len(message))]
    messages += [message + b"\x00", message + b"\x02\x00", good[1][:-1] + b"\xff"]
    native = assert_same([*good, *messages])
    assert set(native.errors) == set(range(2, 2 + len(messages)))


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile(), min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_hostile_bytes_among_valid_consent_records(bad: list[bytes], rng: random.Random
                                                   ) -> None:
    """As the test above, with valid consent records around (one of the samples the
    hostile bytes come from is a consent record)."""
    good = [CODEC.encode(s, make_record(s, rng)) for s in sorted(FACTORIES)]
    messages = good + _consents(4, seed=14) + bad
    rng.shuffle(messages)
    assert_same(messages)


def _item_fields() -> list[dict[str, Any]]:
    """A field of every scalar kind the kernel reads, plain and nullable in both orders."""
    fields: list[dict[str, Any]] = []
    for t in ("long", "int", "boolean", "double", "float", "string", "bytes", "enum"):
        def typed(n: int, t: str = t) -> Any:
            return {"type": "enum", "name": f"Colour{n}", "symbols": ["red", "green"]} \
                if t == "enum" else t
        fields += [{"name": f"plain_{t}", "type": typed(0)},
                   {"name": f"maybe_{t}", "type": ["null", typed(1)]},
                   {"name": f"later_{t}", "type": [typed(2), "null"]}]
    return fields


ITEM = {"type": "record", "name": "Item", "fields": _item_fields()}
PAIR = {"type": "record", "name": "Pair", "fields": [
    {"name": "a", "type": "string"}, {"name": "b", "type": ["null", "long"]}]}
ITEMS = {"type": "record", "name": "Items", "fields": [
    {"name": "id", "type": "string"},
    {"name": "items", "type": {"type": "array", "items": ITEM}},
    {"name": "pairs", "type": ["null", {"type": "array", "items": PAIR}]},
    {"name": "tail", "type": "long"}]}


def _decoder_of(raw: dict[str, Any]) -> ColumnDecoder:
    info = SchemaInfo(id=900, name=raw["name"], file=Path("test.avsc"), role="control",
                      topic=None, raw=raw, parsed=fastavro.parse_schema(raw), fields=(),
                      personal_when=None)
    return ColumnDecoder(Codec(SchemaCatalog([info])))


ITEMS_DECODER = _decoder_of(ITEMS)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.fixed_dictionaries({f["name"]: _values(f["type"]) for f in ITEMS["fields"]}),
                min_size=1, max_size=8))
def test_arrays_of_records_of_every_scalar_kind_decode_as_the_reference(
        records: list[dict[str, Any]]) -> None:
    """Item fields of every kind, nullable or not, in a plain and a nullable array; each
    message also cut short by one and two bytes."""
    assert ITEMS_DECODER._program(900) is not None
    messages = [ITEMS_DECODER.codec.encode(900, r) for r in records]
    native = assert_same([*messages, *(m[:-1] for m in messages), *(m[:-2] for m in messages)],
                         ITEMS_DECODER)
    assert native.parts and native.parts[0].table.num_rows == len(records)


def test_items_holding_collections_or_no_field_go_through_the_reference() -> None:
    nested = {**ITEMS, "fields": [{"name": "deep", "type": {"type": "array", "items": {
        "type": "record", "name": "Deep", "fields": [
            {"name": "tags", "type": {"type": "array", "items": "string"}}]}}}]}
    empty = {**ITEMS, "fields": [{"name": "none", "type": {"type": "array", "items": {
        "type": "record", "name": "Empty", "fields": []}}}]}
    values = {"deep": [{"tags": ["t"]}], "none": [{}, {}]}
    for raw in (nested, empty):
        decoder = _decoder_of(raw)
        assert decoder._program(900) is None
        record = {f["name"]: values[f["name"]] for f in raw["fields"]}
        assert_same([decoder.codec.encode(900, record)], decoder)


def test_rows_are_the_codecs_dicts_with_their_key_order() -> None:
    """A consent table's rows are ``codec.decode``'s dicts, key order included: the
    consent changelog is their JSON."""
    messages = _consents(20, seed=15)
    (part,) = DECODER.decode(messages).parts
    got = part.table.to_pylist()
    want = [CODEC.decode(m)[1] for m in messages]
    assert got == want
    assert [list(r) for r in got] == [list(r) for r in want]
    assert [[list(s) for s in r["servers"]] for r in got] == [
        [list(s) for s in r["servers"]] for r in want]


def test_a_schema_whose_every_message_only_the_kernel_refuses() -> None:
    """The batch's one consent record has a boolean byte 2 (fastavro reads True): the
    kernel refuses it, so the native result has no consent part at all."""
    record = make_consent("acct-1", random.Random(16))
    yes = CODEC.encode("ConsentRecord", {**record, "limit_sensitive": True})
    no = CODEC.encode("ConsentRecord", {**record, "limit_sensitive": False})
    (at,) = [i for i in range(len(yes)) if yes[i] != no[i]]
    playback = CODEC.encode("PlaybackEvent", make_record("PlaybackEvent", random.Random(16)))
    native = assert_same([playback, yes[:at] + b"\x02" + yes[at + 1:]])
    assert [p.schema.name for p in native.parts] == ["PlaybackEvent"]
    assert avro_kernel.REASONS[avro_kernel.BAD_BOOLEAN] in str(native.errors[1])
