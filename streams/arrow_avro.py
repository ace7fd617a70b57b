"""Arrow tables -> schemaless Avro bodies, one per row, with pyarrow compute kernels.

fastavro encodes one record at a time in Python-level calls (about 95k instructions per
output record on the worker's path). Here every field of a table is turned into one
binary column of its Avro encoding (varint lengths and zig-zag longs with numpy, the
byte joins with ``binary_join_element_wise``), and a row's body is the join of its field
columns: the same bytes as ``fastavro.schemaless_writer`` for the types the output
schemas use (string, long, int, double, float, boolean, ``["null", T]`` unions, arrays
and maps of those; maps and arrays are written as one block, as fastavro does).
Anything else raises ``TypeError`` when the encoder is made, never silently.

A row whose value is null where its schema has no null branch does not encode: its body
is null (``codec.encode`` raises ``MalformedRecordError`` for the same record).

The worker's encoder for outputs and drop records (docs/decisions.md, D8 and D10).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["arrow_type", "encode_bodies", "frame", "varints", "zigzag_varints"]

_EMPTY = pa.scalar(b"", pa.binary())
_NULL = pa.scalar(None, pa.binary())
_ZERO = pa.scalar(b"\x00", pa.binary())
_PRIMITIVE_ARROW = {
    "string": pa.string(),
    "long": pa.int64(),
    "int": pa.int64(),
    "double": pa.float64(),
    "float": pa.float64(),
    "boolean": pa.bool_(),
}

Segment = Callable[[pa.Array], pa.Array]


def _strip(t: Any) -> Any:
    """An Avro type without its logical type (``{"type": "long", ...}`` -> ``"long"``)."""
    if isinstance(t, dict) and t.get("type") in _PRIMITIVE_ARROW:
        return t["type"]
    return t


def arrow_type(avro_type: Any) -> pa.DataType:
    """The Arrow type that holds values of ``avro_type`` (a ``["null", T]`` union -> T)."""
    t = _strip(avro_type)
    if isinstance(t, list):
        (branch,) = [b for b in t if b != "null"]
        return arrow_type(branch)
    if isinstance(t, str) and t in _PRIMITIVE_ARROW:
        return _PRIMITIVE_ARROW[t]
    if isinstance(t, dict) and t["type"] == "map":
        return pa.map_(pa.string(), arrow_type(t["values"]))
    if isinstance(t, dict) and t["type"] == "array":
        return pa.list_(arrow_type(t["items"]))
    raise TypeError(f"no columnar encoding for Avro type {avro_type!r}")


def varints(z: np.ndarray) -> pa.Array:
    """Unsigned LEB128 varints of a uint64 array, as one binary array."""
    z = np.asarray(z, dtype=np.uint64)
    n = len(z)
    if n == 0 or int(z.max()) < 0x80:  # one byte each: lengths, counts and small longs
        offsets = np.arange(n + 1, dtype=np.int32)
        data = z.astype(np.uint8)
        return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets),
                                                     pa.py_buffer(data)])
    sizes = np.ones(n, np.int32)
    rest = z >> np.uint64(7)
    while rest.any():
        sizes += rest != 0
        rest >>= np.uint64(7)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(sizes, out=offsets[1:])
    data = np.empty(int(offsets[-1]), np.uint8)
    starts = offsets[:-1]
    for k in range(int(sizes.max()) if n else 0):
        sel = sizes > k
        byte = ((z[sel] >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        byte |= np.where(sizes[sel] > k + 1, 0x80, 0).astype(np.uint8)
        data[starts[sel] + k] = byte
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.binary(), n, buffers)


def zigzag_varints(values: np.ndarray) -> pa.Array:
    """Avro longs (zig-zag varints) of an int64 array."""
    v = np.asarray(values, dtype=np.int64)
    return varints(((v << 1) ^ (v >> 63)).view(np.uint64))


def _with_nulls(encoded: pa.Array, values: pa.Array) -> pa.Array:
    if values.null_count == 0:
        return encoded
    return pc.if_else(values.is_valid(), encoded, _NULL)


def _long(values: pa.Array) -> pa.Array:
    ints = values.fill_null(0).to_numpy(zero_copy_only=False)
    return _with_nulls(zigzag_varints(ints), values)


def _fixed(dtype: str) -> Segment:
    def encode(values: pa.Array) -> pa.Array:
        raw = values.fill_null(0).to_numpy(zero_copy_only=False).astype(dtype)
        fixed = pa.Array.from_buffers(
            pa.binary(raw.itemsize), len(raw), [None, pa.py_buffer(raw.tobytes())]
        )
        return _with_nulls(fixed.cast(pa.binary()), values)

    return encode


def _string(values: pa.Array) -> pa.Array:
    raw = values.cast(pa.binary())
    lengths = pc.binary_length(raw).fill_null(0).to_numpy(zero_copy_only=False)
    return pc.binary_join_element_wise(zigzag_varints(lengths), raw, _EMPTY)


def _boolean(values: pa.Array) -> pa.Array:
    return pc.if_else(values, pa.scalar(b"\x01", pa.binary()), _ZERO)


def _union(branches: list[Any]) -> Segment:
    others = [b for b in branches if b != "null"]
    if len(others) != 1 or len(branches) != 2:
        raise TypeError(f"no columnar encoding for union {branches!r}")
    null_tag = pa.scalar(zigzag_varints(np.array([branches.index("null")])).to_pylist()[0],
                         pa.binary())
    value_tag = pa.scalar(zigzag_varints(np.array([branches.index(others[0])])).to_pylist()[0],
                          pa.binary())
    inner = _segment(others[0])

    def encode(values: pa.Array) -> pa.Array:
        tagged = pc.binary_join_element_wise(value_tag, inner(values), _EMPTY)
        return pc.if_else(values.is_valid(), tagged, null_tag) if values.null_count else tagged

    return encode


def _child_offsets(values: pa.Array) -> tuple[np.ndarray, int, int]:
    """A list or map array's offsets from 0, and the span of its children they cover
    (a sliced array's children are not sliced)."""
    offsets = values.offsets.to_numpy(zero_copy_only=False)
    start = int(offsets[0]) if len(offsets) else 0
    end = int(offsets[-1]) if len(offsets) else 0
    return offsets - start, start, end - start


def _blocks(values: pa.Array, offsets: np.ndarray, entries: pa.Array) -> pa.Array:
    """One block (count, entries, 0) per non-empty list or map row; an empty one is 0."""
    lists = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), entries)
    joined = pc.binary_join(lists, _EMPTY)
    counts = np.diff(offsets)
    block = pc.binary_join_element_wise(zigzag_varints(counts), joined, _ZERO, _EMPTY)
    out = pc.if_else(pa.array(counts > 0), block, _ZERO)
    return _with_nulls(out, values)


def _map(value_type: Any) -> Segment:
    value_segment = _segment(value_type)

    def encode(values: pa.Array) -> pa.Array:
        offsets, start, size = _child_offsets(values)
        # A map's keys are a few field names repeated on every row: encode each once.
        names = values.keys.slice(start, size).dictionary_encode()
        keys = _string(names.dictionary).take(names.indices)
        items = values.items.slice(start, size)
        if pa.types.is_string(items.type):  # attribute values repeat too (titles, countries)
            distinct = items.dictionary_encode(null_encoding="encode")  # null: one more value
            items = value_segment(distinct.dictionary).take(distinct.indices)
        else:
            items = value_segment(items)
        return _blocks(values, offsets, pc.binary_join_element_wise(keys, items, _EMPTY))

    return encode


def _array(item_type: Any) -> Segment:
    item_segment = _segment(item_type)

    def encode(values: pa.Array) -> pa.Array:
        offsets, start, size = _child_offsets(values)
        return _blocks(values, offsets, item_segment(values.values.slice(start, size)))

    return encode


_PRIMITIVE_SEGMENTS: dict[str, Segment] = {
    "string": _string,
    "long": _long,
    "int": _long,
    "double": _fixed("<f8"),
    "float": _fixed("<f4"),
    "boolean": _boolean,
}


def _segment(avro_type: Any) -> Segment:
    t = _strip(avro_type)
    if isinstance(t, list):
        return _union(t)
    if isinstance(t, str) and t in _PRIMITIVE_SEGMENTS:
        return _PRIMITIVE_SEGMENTS[t]
    if isinstance(t, dict) and t["type"] == "map":
        return _map(t["values"])
    if isinstance(t, dict) and t["type"] == "array":
        return _array(t["items"])
    raise TypeError(f"no columnar encoding for Avro type {avro_type!r}")


_encoders: dict[int, tuple[Mapping[str, Any], list[tuple[str, Segment]]]] = {}


def _record_encoder(schema: Mapping[str, Any]) -> list[tuple[str, Segment]]:
    cached = _encoders.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    fields = [(f["name"], _segment(f["type"])) for f in schema["fields"]]
    _encoders[id(schema)] = (schema, fields)
    return fields


def encode_bodies(table: pa.Table, schema: Mapping[str, Any]) -> pa.Array:
    """The schemaless Avro body of every row of ``table`` (columns named as the record
    ``schema``'s fields, an Avro record schema as JSON); null where a row does not encode."""
    segments = [
        encode(table.column(name).combine_chunks()) for name, encode in _record_encoder(schema)
    ]
    if table.num_rows == 0:
        return pa.array([], pa.binary())
    return pc.binary_join_element_wise(*segments, _EMPTY)


def frame(bodies: pa.Array, header: bytes) -> pa.Array:
    """Bodies with the wire header (magic byte and schema id) in front of each."""
    return pc.binary_join_element_wise(pa.scalar(header, pa.binary()), bodies, _EMPTY)
