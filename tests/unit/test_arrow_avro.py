"""The Arrow encoder writes fastavro's bytes for every output schema a destination uses."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.arrow_avro import arrow_type, encode_bodies, frame
from streams.codec import default_codec
from streams.errors import SerializationError
from streams.policy import default_policy

pytestmark = pytest.mark.unit

CODEC = default_codec()
OUTPUTS = sorted({d.output_schema for d in default_policy().destinations.values()})
LONGS = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(max_size=12)


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
    return {"string": TEXT, "long": LONGS, "int": st.integers(-(2**31), 2**31 - 1),
            "double": st.floats(allow_nan=False), "boolean": st.booleans()}[avro_type]


def _schema(name: str) -> pa.Schema:
    fields = CODEC.catalog.by_name(name).raw["fields"]
    return pa.schema([(f["name"], arrow_type(f["type"])) for f in fields])


@st.composite
def tables(draw: st.DrawFn) -> tuple[str, list[dict[str, Any]]]:
    name = draw(st.sampled_from(OUTPUTS))
    fields = CODEC.catalog.by_name(name).raw["fields"]
    rows = draw(st.lists(st.fixed_dictionaries({f["name"]: _values(f["type"]) for f in fields}),
                         min_size=1, max_size=8))
    return name, rows


@settings(max_examples=300, deadline=None)
@given(case=tables())
def test_bodies_equal_fastavro_for_every_output_schema(case: tuple[str, list[dict[str, Any]]]
                                                       ) -> None:
    name, rows = case
    table = pa.Table.from_pylist(rows, schema=_schema(name))
    info = CODEC.catalog.by_name(name)
    header = b"\x00" + info.id.to_bytes(4, "big")
    framed = frame(encode_bodies(table, info.raw), header).to_pylist()
    assert framed == [CODEC.encode(name, r) for r in rows]
    middle = table.slice(1)  # sliced maps and lists keep their children unsliced
    assert encode_bodies(middle, info.raw).to_pylist() == [x[5:] for x in framed[1:]]


def test_null_in_a_required_field_does_not_encode() -> None:
    rows = [{"event_id": None, "subject_pseudonym": None, "source": "s", "event_type": "t",
             "event_time": 1, "processing_region": "r", "policy_version": "v",
             "attributes": {}, "measures": {}}]
    with pytest.raises(SerializationError):
        CODEC.encode("AnalyticsEvent", rows[0])
    table = pa.Table.from_pylist(rows, schema=_schema("AnalyticsEvent"))
    body = encode_bodies(table, CODEC.catalog.by_name("AnalyticsEvent").raw)
    assert body.to_pylist() == [None]
