"""Framed Avro messages -> Arrow tables, one per schema, without a Python object per value.

``ColumnDecoder.decode`` takes a batch of Confluent-framed messages (``streams.codec``) and
returns, per schema present, one Arrow table of its records (fields in schema order; enums
as strings, timestamps as int64 millis, ``int`` as int64, ``float`` as float64, ``["null",
T]`` as a nullable T: the types ``arrow_avro.arrow_type`` gives) and the position of each
row in the batch. A message that ``codec.decode`` would refuse is refused here too, with
the same error class, and only that message: ``errors`` maps its position to the error.

``decode_rows`` is the reference: ``codec.decode`` per message, then ``pa.Table.from_pylist``.
The native decoder (``avro_kernel``) must give the same tables (differential tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from streams.arrow_avro import arrow_type
from streams.codec import Codec, default_codec
from streams.errors import SerializationError
from streams.schema_catalog import SchemaInfo

__all__ = ["DecodedBatch", "SchemaRows", "arrow_schema", "decode_columns", "decode_rows"]


@dataclass(frozen=True, slots=True)
class SchemaRows:
    """The records of one schema in a batch, in batch order."""

    schema: SchemaInfo
    table: pa.Table
    index: np.ndarray  # int64, ascending: the position in the batch of each row


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    parts: tuple[SchemaRows, ...]  # one per schema present, by schema id
    errors: dict[int, SerializationError]  # position -> why that message does not decode

    def __len__(self) -> int:
        return sum(p.table.num_rows for p in self.parts) + len(self.errors)


def _as_strings(t: Any) -> Any:
    """Enums are strings in memory (fastavro), so in Arrow too."""
    if isinstance(t, list):
        return [_as_strings(b) for b in t]
    if isinstance(t, dict) and t.get("type") == "enum":
        return "string"
    if isinstance(t, dict) and t.get("type") in ("array", "map"):
        key = "items" if t["type"] == "array" else "values"
        return {**t, key: _as_strings(t[key])}
    return t


def _nullable(t: Any) -> bool:
    return isinstance(t, list) and "null" in t


_schemas: dict[int, pa.Schema] = {}


def arrow_schema(info: SchemaInfo) -> pa.Schema:
    """The Arrow schema of ``info``'s records."""
    schema = _schemas.get(info.id)
    if schema is None:
        schema = _schemas[info.id] = pa.schema([
            pa.field(f["name"], _arrow(f["type"]), nullable=_nullable(f["type"]))
            for f in info.raw["fields"]])
    return schema


def _arrow(t: Any) -> pa.DataType:
    """``arrow_avro.arrow_type``, plus bytes and nested records (control schemas)."""
    if isinstance(t, list):
        (branch,) = [b for b in t if b != "null"]
        return _arrow(branch)
    if t == "bytes" or (isinstance(t, dict) and t.get("type") == "bytes"):
        return pa.binary()
    if isinstance(t, dict) and t.get("type") == "record":
        return pa.struct([pa.field(f["name"], _arrow(f["type"]), nullable=_nullable(f["type"]))
                          for f in t["fields"]])
    if isinstance(t, dict) and t.get("type") == "array":
        return pa.list_(_arrow(t["items"]))
    if isinstance(t, dict) and t.get("type") == "map":
        return pa.map_(pa.string(), _arrow(t["values"]))
    return arrow_type(_as_strings(t))


def decode_rows(messages: Sequence[bytes], codec: Codec | None = None) -> DecodedBatch:
    """The reference decoder: one ``codec.decode`` per message."""
    codec = codec or default_codec()
    rows: dict[int, tuple[SchemaInfo, list[int], list[dict[str, Any]]]] = {}
    errors: dict[int, SerializationError] = {}
    for i, message in enumerate(messages):
        try:
            info, record = codec.decode_info(message)
        except SerializationError as exc:
            errors[i] = exc
            continue
        part = rows.setdefault(info.id, (info, [], []))
        part[1].append(i)
        part[2].append(record)
    parts = tuple(
        SchemaRows(info, pa.Table.from_pylist(records, schema=arrow_schema(info)),
                   np.array(index, np.int64))
        for _, (info, index, records) in sorted(rows.items()))
    return DecodedBatch(parts, errors)


# The batch decoder the pipeline calls; the native one replaces this reference when it lands.
decode_columns = decode_rows
