"""Arrow tables -> schemaless Avro bodies, one per row, in native code (numba).

fastavro encodes one record at a time in Python-level calls (about 95k instructions per
output record on the worker's path). Here ``avro_write_kernel`` reads a table's Arrow
buffers where they are and writes each row's bytes once (decision D11): the same bytes as
``fastavro.schemaless_writer`` for the types ``arrow_type`` maps (string, bytes, long,
int, double, float, boolean, two-branch unions with null in either place, and maps and arrays
of those; maps and arrays are written as one block, as fastavro does). Anything else
raises ``TypeError`` when the encoder is made, never silently.

A row whose value is null where its schema has no null branch does not encode: its body
is null (``codec.encode`` raises ``MalformedRecordError`` for the same record).

The worker's encoder for outputs and drop records (docs/decisions.md, D8, D10 and D11).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from streams import avro_write_kernel as k
from streams.errors import SerializationError

__all__ = ["FramedRecords", "arrow_type", "encode_bodies", "encode_framed", "table_schema"]

# Avro primitive -> (the kernel's kind, the Arrow type its values are read as). Bytes are
# written as strings are (a length, then the bytes), from a binary array.
_LEAVES = {"string": (k.STRING, pa.string()), "bytes": (k.STRING, pa.binary()),
           "long": (k.LONG, pa.int64()), "int": (k.LONG, pa.int64()),
           "double": (k.DOUBLE, pa.float64()), "float": (k.FLOAT, pa.float64()),
           "boolean": (k.BOOLEAN, pa.bool_())}


def _strip(t: Any) -> Any:
    """An Avro type without its logical type (``{"type": "long", ...}`` -> ``"long"``)."""
    if isinstance(t, dict) and t.get("type") in _LEAVES:
        return t["type"]
    return t


def _union(t: list[Any]) -> tuple[Any, int]:
    """A two-branch union with null: (its other branch, the null branch's index)."""
    if len(t) != 2 or "null" not in t or t[0] == t[1]:
        raise TypeError(f"no columnar encoding for union {t!r}")
    null_branch = t.index("null")
    return t[1 - null_branch], null_branch


def _unwrap(avro_type: Any) -> tuple[Any, int]:
    """``avro_type`` without its null branch and logical type: (type, null branch index)."""
    t, null_branch = _strip(avro_type), k.NOT_A_UNION
    if isinstance(t, list):
        t, null_branch = _union(t)
        t = _strip(t)
    return t, null_branch


def _leaf(avro_type: Any) -> tuple[int, int, pa.DataType]:
    """A primitive's, or a nullable primitive's, (kind, null branch, Arrow type)."""
    t, null_branch = _unwrap(avro_type)
    if isinstance(t, str) and t in _LEAVES:
        kind, arrow = _LEAVES[t]
        return kind, null_branch, arrow
    raise TypeError(f"no columnar encoding for Avro type {avro_type!r}")


def _field(avro_type: Any) -> tuple[tuple[int, int, int, int], pa.DataType]:
    """A field's program row (shape, leaf kind, null branch, item null branch; a map's
    values or an array's items are primitives or nullable ones, never collections) and
    the Arrow type that holds its values."""
    t, null_branch = _unwrap(avro_type)
    if isinstance(t, dict) and t.get("type") in ("map", "array"):
        shape = k.MAP if t["type"] == "map" else k.ARRAY
        kind, item_null, value = _leaf(t["values" if shape == k.MAP else "items"])
        return (shape, kind, null_branch, item_null), (
            pa.map_(pa.string(), value) if shape == k.MAP else pa.list_(value))
    kind, _, value = _leaf(avro_type)
    return (k.SCALAR, kind, null_branch, k.NOT_A_UNION), value


def arrow_type(avro_type: Any) -> pa.DataType:
    """The Arrow type that holds values of ``avro_type`` (a ``["null", T]`` union -> T);
    ``TypeError`` for a type the encoder does not write."""
    return _field(avro_type)[1]


def table_schema(schema: Mapping[str, Any]) -> pa.Schema:
    """The Arrow schema of a table of ``schema``'s records (an Avro record schema as
    JSON), each field as ``arrow_type`` maps it."""
    return pa.schema([(f["name"], arrow_type(f["type"])) for f in schema["fields"]])


@dataclass(frozen=True, slots=True)
class _Encoder:
    """One record schema's program and the Arrow type each field is read as."""

    names: tuple[str, ...]
    types: tuple[pa.DataType, ...]
    program: np.ndarray  # (fields, 4) int64: shape, leaf kind, null branch, item null branch


_encoders: dict[int, tuple[Mapping[str, Any], _Encoder]] = {}


def _encoder(schema: Mapping[str, Any]) -> _Encoder:
    cached = _encoders.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    fields = schema["fields"]
    encoder = _Encoder(tuple(f["name"] for f in fields),
                       tuple(arrow_type(f["type"]) for f in fields),
                       np.array([_field(f["type"])[0] for f in fields], np.int64).reshape(-1, 4))
    _encoders[id(schema)] = (schema, encoder)
    return encoder


_STRING_BUFFERS = (k.VALID, k.OFFSETS, k.DATA)
_VALUE_BUFFERS = (k.VALID, k.DATA)
_LIST_BUFFERS = (k.VALID, k.OFFSETS)  # a list's or map's own; its children come after


def _describe(arr: pa.Array, slots: tuple[int, ...], out: np.ndarray) -> None:
    """``out`` = the kernel's description of ``arr``: its offset and, per slot, the
    address and size of its buffer there (``arr.buffers()`` in that order)."""
    out[k.OFFSET] = arr.offset
    for slot, buf in zip(slots, arr.buffers()[:len(slots)], strict=True):
        if buf is not None and (slot != k.VALID or arr.null_count):
            out[slot], out[slot + 1] = buf.address, buf.size


def _arrays(table: pa.Table, encoder: _Encoder) -> tuple[np.ndarray, list[pa.Array]]:
    """The array table of ``table``'s columns, and the arrays it points into (kept alive
    by the caller for the kernel call)."""
    arrays = np.zeros((3 * len(encoder.names), k.ARRAY_COLUMNS), np.int64)
    alive = []
    for f, (name, type_, shape) in enumerate(zip(encoder.names, encoder.types,
                                                 encoder.program[:, k.SHAPE].tolist(),
                                                 strict=True)):
        column = table.column(name)
        col = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        if col.type != type_:
            col = col.cast(type_)
        alive.append(col)
        values = col
        if shape != k.SCALAR:
            _describe(col, _LIST_BUFFERS, arrays[3 * f])
            if shape == k.MAP:
                entries = col.values  # a struct array of (key, value)
                values = entries.field(1)
                _describe(entries.field(0), _STRING_BUFFERS, arrays[3 * f + 1])
                alive += [entries.field(0), values]
            else:
                values = col.values
                alive.append(values)
        row = 3 * f if shape == k.SCALAR else 3 * f + 2
        _describe(values, _STRING_BUFFERS if pa.types.is_string(values.type)
                  or pa.types.is_binary(values.type) else _VALUE_BUFFERS, arrays[row])
    return arrays, alive


def encode_framed(table: pa.Table, schema: Mapping[str, Any], header: bytes) -> pa.Array:
    """``header`` (the wire framing: magic byte and schema id) + the schemaless Avro body of
    every row of ``table`` (columns named as the record ``schema``'s fields, an Avro record
    schema as JSON), one binary value per row; null where a row does not encode."""
    encoder = _encoder(schema)
    arrays, alive = _arrays(table, encoder)
    n = table.num_rows
    framing = np.frombuffer(header, np.uint8)
    data = np.empty(k.size_bound(encoder.program, arrays, n, len(header)), np.uint8)
    offsets, ok = np.empty(n + 1, np.int32), np.empty(n, np.uint8)
    total = k.encode(encoder.program, arrays, n, framing, data, offsets, ok)
    del alive  # the kernel has returned: nothing points into those arrays any more
    if total < 0:
        raise ValueError(k.TOO_LARGE)
    data.resize(total, refcheck=False)  # realloc: shrinks in place, copies nothing
    good = ok.view(np.bool_)
    bitmap = None if good.all() else pa.py_buffer(np.packbits(good, bitorder="little"))
    return pa.Array.from_buffers(pa.binary(), n, [bitmap, pa.py_buffer(offsets),
                                                  pa.py_buffer(data)])


def encode_bodies(table: pa.Table, schema: Mapping[str, Any]) -> pa.Array:
    """The schemaless Avro body of every row of ``table``; see ``encode_framed``."""
    return encode_framed(table, schema, b"")


class FramedRecords:
    """The pipeline's own records of one schema (drop records, key-vault entries,
    aggregate partials), framed and encoded a table at a time. Every field it writes is
    set, so a row that does not encode is a bug: it raises, never yields a null body."""

    def __init__(self, schema: Mapping[str, Any], header: bytes) -> None:
        self.avro, self.header = schema, header
        self.arrow = table_schema(schema)  # build the tables with this

    def encode(self, table: pa.Table) -> list[bytes]:
        bodies = encode_framed(table, self.avro, self.header)
        if bodies.null_count:
            raise SerializationError(f"a {self.avro['name']} record does not encode")
        return bodies.to_pylist()
