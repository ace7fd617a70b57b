"""The native Arrow encoder writes fastavro's bytes for every output schema a destination
uses, and for every type ``arrow_type`` maps (D8, D11)."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import arrow_avro, avro_write_kernel
from streams.arrow_avro import arrow_type, encode_bodies, encode_framed
from streams.codec import default_codec
from streams.errors import SerializationError
from streams.policy import default_policy

pytestmark = pytest.mark.unit

CODEC = default_codec()
OUTPUTS = sorted({d.output_schema for d in default_policy().destinations.values()}
                 | {"DropRecord"})
LONGS = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(max_size=12)  # any code point: 1- to 4-byte UTF-8
LEAVES: dict[str, st.SearchStrategy[Any]] = {
    "string": TEXT, "bytes": st.binary(max_size=12), "long": LONGS,
    "int": st.integers(-(2**31), 2**31 - 1),
    "double": st.floats(),  # NaN (any payload), infinities, subnormals
    "float": st.floats(),  # rounded to float32 on the way, beyond its range to inf
    "boolean": st.booleans()}
# Every shape arrow_type maps: each leaf plain and in both union orders, in maps and arrays,
# and nullable collections of nullable leaves.
EVERY_TYPE: dict[str, Any] = {
    "type": "record", "name": "EveryType", "fields": [
        *({"name": name, "type": name} for name in LEAVES),
        *({"name": f"null_{name}", "type": ["null", name]} for name in LEAVES),
        *({"name": f"{name}_null", "type": [name, "null"]} for name in LEAVES),
        *({"name": f"map_{name}", "type": {"type": "map", "values": name}} for name in LEAVES),
        *({"name": f"array_{name}", "type": {"type": "array", "items": name}}
          for name in LEAVES),
        {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "maybe_map", "type": ["null", {"type": "map", "values": ["string", "null"]}]},
        {"name": "array_maybe", "type": [{"type": "array", "items": ["null", "long"]}, "null"]},
    ]}
PARSED_EVERY_TYPE = fastavro.parse_schema(EVERY_TYPE)


def _values(avro_type: Any) -> st.SearchStrategy[Any]:
    if isinstance(avro_type, list):
        (branch,) = [b for b in avro_type if b != "null"]
        return st.one_of(st.none(), _values(branch))
    if isinstance(avro_type, dict):
        kind = avro_type["type"]
        if kind == "map":
            return st.dictionaries(TEXT, _values(avro_type["values"]), max_size=6)
        if kind == "array":
            return st.lists(_values(avro_type["items"]), max_size=6)
        return _values(kind)
    return LEAVES[avro_type]


def _arrow_schema(fields: list[dict[str, Any]]) -> pa.Schema:
    return pa.schema([(f["name"], arrow_type(f["type"])) for f in fields])


def _rows(fields: list[dict[str, Any]]) -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.lists(st.fixed_dictionaries({f["name"]: _values(f["type"]) for f in fields}),
                    min_size=1, max_size=8)


@st.composite
def _layouts(draw: st.DrawFn, rows: int) -> tuple[int, int, list[int]]:
    """A slice (start, length) of ``rows`` rows and chunk sizes to split the table into."""
    start = draw(st.integers(0, rows - 1))
    length = draw(st.integers(0, rows - start))
    cuts = sorted(draw(st.lists(st.integers(0, rows), max_size=3)))
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, rows], strict=True)]
    return start, length, sizes


def _chunked(table: pa.Table, sizes: list[int]) -> pa.Table:
    """The same rows in chunks of ``sizes`` rows (every column then has several chunks,
    each a slice of the original arrays: offsets into unsliced children)."""
    parts, at = [], 0
    for size in sizes:
        parts.append(table.slice(at, size))
        at += size
    return pa.concat_tables(parts)


def _fastavro(record: dict[str, Any]) -> bytes | None:
    buf = io.BytesIO()
    try:
        fastavro.schemaless_writer(buf, PARSED_EVERY_TYPE, record)
    except (TypeError, ValueError):
        return None
    return buf.getvalue()


@st.composite
def output_tables(draw: st.DrawFn) -> tuple[str, list[dict[str, Any]], tuple[int, int, list[int]]]:
    name = draw(st.sampled_from(OUTPUTS))
    rows = draw(_rows(CODEC.catalog.by_name(name).raw["fields"]))
    return name, rows, draw(_layouts(len(rows)))


@settings(max_examples=400, deadline=None)
@given(case=output_tables())
def test_framed_bodies_equal_codec_encode_for_every_output_schema(
        case: tuple[str, list[dict[str, Any]], tuple[int, int, list[int]]]) -> None:
    name, rows, (start, length, sizes) = case
    info = CODEC.catalog.by_name(name)
    table = pa.Table.from_pylist(rows, schema=_arrow_schema(info.raw["fields"]))
    expected = [CODEC.encode(name, r) for r in rows]
    header = CODEC.header(name)
    assert encode_framed(table, info.raw, header).to_pylist() == expected
    # sliced maps and lists keep their children unsliced; chunks are such slices too
    middle = table.slice(start, length)
    assert encode_bodies(middle, info.raw).to_pylist() == [
        x[5:] for x in expected[start:start + length]]
    assert encode_framed(_chunked(table, sizes), info.raw, header).to_pylist() == expected


@settings(max_examples=300, deadline=None)
@given(rows=_rows(EVERY_TYPE["fields"]), data=st.data())
def test_every_type_arrow_type_maps_encodes_as_fastavro(rows: list[dict[str, Any]],
                                                        data: st.DataObject) -> None:
    table = pa.Table.from_pylist(rows, schema=_arrow_schema(EVERY_TYPE["fields"]))
    expected = [_fastavro(r) for r in rows]
    assert encode_bodies(table, EVERY_TYPE).to_pylist() == expected
    start, length, sizes = data.draw(_layouts(len(rows)))
    assert encode_bodies(table.slice(start, length), EVERY_TYPE).to_pylist() == expected[
        start:start + length]
    assert encode_bodies(_chunked(table, sizes), EVERY_TYPE).to_pylist() == expected


def test_extreme_and_special_values_encode_as_fastavro() -> None:
    row = {f["name"]: None for f in EVERY_TYPE["fields"] if isinstance(f["type"], list)}
    specials = [
        {"long": -(2**63), "int": -(2**31), "double": float("nan"), "float": 3.4028235e38,
         "string": "\U0010ffff\u00e9\x00", "boolean": True},
        {"long": 2**63 - 1, "int": 2**31 - 1, "double": float("-inf"), "float": 1e300,
         "string": "", "boolean": False},
        {"long": 0, "int": 64, "double": -0.0, "float": 1.1, "string": "é" * 70,
         "boolean": True},
    ]
    rows = [{**row, **s, **{f"map_{k}": {"k": v, "": v} for k, v in s.items()},
             **{f"array_{k}": [v] * 200 for k, v in s.items()}} for s in specials]
    table = pa.Table.from_pylist(rows, schema=_arrow_schema(EVERY_TYPE["fields"]))
    assert encode_bodies(table, EVERY_TYPE).to_pylist() == [_fastavro(r) for r in rows]


def test_null_in_a_required_field_does_not_encode() -> None:
    good = {"event_id": "e", "subject_pseudonym": None, "source": "s", "event_type": "t",
            "event_time": 1, "processing_region": "r", "policy_version": "v",
            "attributes": {}, "measures": {"m": 1.0}}
    bad = [{**good, "event_id": None}, {**good, "attributes": None},
           {**good, "measures": {"m": None}}]
    for row in bad:
        with pytest.raises(SerializationError):
            CODEC.encode("AnalyticsEvent", row)
    info = CODEC.catalog.by_name("AnalyticsEvent")
    table = pa.Table.from_pylist([bad[0], good, *bad[1:], good],
                                 schema=_arrow_schema(info.raw["fields"]))
    body = encode_framed(table, info.raw, CODEC.header("AnalyticsEvent")).to_pylist()
    assert body == [None, CODEC.encode("AnalyticsEvent", good), None, None,
                    CODEC.encode("AnalyticsEvent", good)]


def test_an_empty_table_encodes_to_no_bodies() -> None:
    info = CODEC.catalog.by_name("AnalyticsEvent")
    table = _arrow_schema(info.raw["fields"]).empty_table()
    assert encode_framed(table, info.raw, b"\x00\x00\x00\x00\x01").to_pylist() == []


def test_a_column_of_another_arrow_type_is_cast_first() -> None:
    schema = {"type": "record", "name": "Cast", "fields": [
        {"name": "n", "type": "int"}, {"name": "s", "type": "string"}]}
    table = pa.table({"n": pa.array([1, -2], pa.int32()),
                      "s": pa.array(["a", "é"], pa.large_string()).dictionary_encode()})
    assert encode_bodies(table, schema).to_pylist() == [b"\x02\x02a", b"\x03\x04\xc3\xa9"]


@pytest.mark.parametrize("avro_type", [
    {"type": "enum", "name": "E", "symbols": ["a"]},
    {"type": "record", "name": "R", "fields": []}, ["null", "string", "long"], ["null"],
    ["string", "long"], {"type": "map", "values": {"type": "map", "values": "string"}},
    {"type": "array", "items": {"type": "array", "items": "string"}},
    {"type": "fixed", "name": "F", "size": 4}])
def test_types_without_a_columnar_encoding_are_refused_when_the_encoder_is_made(
        avro_type: Any) -> None:
    with pytest.raises(TypeError):
        arrow_type(avro_type)
    schema = {"type": "record", "name": "Refused", "fields": [{"name": "x", "type": avro_type}]}
    with pytest.raises(TypeError):
        encode_bodies(pa.table({"x": pa.array([None], pa.null())}), schema)


def test_values_at_their_widest_stay_within_the_size_bound() -> None:
    """The kernel writes into a buffer sized by ``size_bound`` (each value at its widest);
    values whose varints take the most bytes, lengths past two varint bytes and blocks of
    thousands of entries must fit it, and the bodies' buffer is trimmed to their bytes."""
    text = "\U0010ffff" * 20_000 + "é"  # 80,002 bytes: a 3-byte length
    widest = {"long": -(2**63), "int": -(2**31), "double": float("nan"), "float": 1e300,
              "string": text, "bytes": bytes(range(256)) * 2, "boolean": True}
    row: dict[str, Any] = {"timestamp": 2**63 - 1, "maybe_map": {text: None, "": text},
                           "array_maybe": [None, -(2**63)] * 5_000}
    for name, value in widest.items():
        row |= {name: value, f"null_{name}": value, f"{name}_null": None,
                f"map_{name}": {f"{i}": value for i in range(3)},
                f"array_{name}": [value] * 10_000}
    rows = [row, {**row, "string": ""}]
    table = pa.Table.from_pylist(rows, schema=_arrow_schema(EVERY_TYPE["fields"]))
    bodies = encode_bodies(table, EVERY_TYPE)
    assert bodies.to_pylist() == [_fastavro(r) for r in rows]
    total = sum(len(b) for b in bodies.to_pylist())
    assert bodies.buffers()[2].size == total
    encoder = arrow_avro._encoder(EVERY_TYPE)
    arrays, _alive = arrow_avro._arrays(table, encoder)
    bound = avro_write_kernel.size_bound(encoder.program, arrays, table.num_rows, 0)
    assert total <= bound < 2 * total


@pytest.mark.parametrize("header", [b"", b"\x00\x00\x00\x00\x07"])
def test_a_row_that_does_not_encode_leaves_no_bytes_first_or_last(header: bytes) -> None:
    info = CODEC.catalog.by_name("AnalyticsEvent")
    good = {"event_id": "é" * 40, "subject_pseudonym": "p", "source": "", "event_type": "t",
            "event_time": -1, "processing_region": "r", "policy_version": "v",
            "attributes": {"": "", "k": "v" * 300}, "measures": {}}
    rows = [{**good, "event_id": None}, good, {**good, "measures": {"m": None}}]
    table = pa.Table.from_pylist(rows, schema=_arrow_schema(info.raw["fields"]))
    bodies = encode_framed(table, info.raw, header)
    body = CODEC.encode("AnalyticsEvent", good)[5:]
    assert bodies.to_pylist() == [None, header + body, None]
    assert bodies.buffers()[2].size == len(header + body)


def test_strings_of_every_length_around_the_inline_copies() -> None:
    """Strings of up to 16 bytes are copied in two overlapping words (or halves, or byte by
    byte), longer ones by memcpy: every length from 0 to 40, ASCII and not, keys too."""
    rows = []
    for length in range(41):
        for text in ("a" * length, ("é" * length)[:length // 2] + "x" * (length % 2)):
            rows.append({**{f["name"]: None for f in EVERY_TYPE["fields"]
                            if isinstance(f["type"], list)},
                         **LEAVES_AT_ZERO,
                         "string": text, "null_string": text,
                         "map_string": {text: text, "k" * length: ""},
                         "array_string": [text, "", text]})
    table = pa.Table.from_pylist(rows, schema=_arrow_schema(EVERY_TYPE["fields"]))
    assert encode_bodies(table, EVERY_TYPE).to_pylist() == [_fastavro(r) for r in rows]


LEAVES_AT_ZERO: dict[str, Any] = {
    "long": 0, "int": 0, "double": 0.0, "float": 0.0, "boolean": False, "timestamp": 0,
    **{f"map_{name}": {} for name in LEAVES}, **{f"array_{name}": [] for name in LEAVES}}
