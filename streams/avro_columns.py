"""Framed Avro messages -> Arrow tables, one per schema, without a Python object per value.

``ColumnDecoder.decode`` takes a batch of Confluent-framed messages (``streams.codec``) and
returns, per schema present, one Arrow table of its records (fields in schema order; enums
as strings, timestamps as int64 millis, ``int`` as int64, ``float`` as float64, ``["null",
T]`` as a nullable T: the types ``arrow_avro.arrow_type`` gives) and the position of each
row in the batch. A message that ``codec.decode`` would refuse is refused here too, with
the same error class, and only that message: ``errors`` maps its position to the error.

``ColumnDecoder`` decodes in native code (``avro_kernel``, decision D9): one pass over the
batch's bytes per schema, then Arrow arrays straight from the resulting buffers, about a
hundredth of fastavro's instructions per record; arrays of flat records (the consent
record's servers) too. Schemas with other nested records (the purge command) and
messages the kernel refuses go through ``decode_rows``, the reference: ``codec.decode``
per message, then ``pa.Table.from_pylist``. Differential tests hold the two to the same
tables and the same refusals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from streams import avro_kernel as k
from streams.arrow_avro import arrow_type
from streams.codec import MAX_MESSAGE_BYTES, Codec, MalformedRecordError, default_codec
from streams.errors import SerializationError
from streams.schema_catalog import SchemaInfo

__all__ = ["ColumnDecoder", "DecodedBatch", "SchemaRows", "arrow_schema", "arrow_value_type",
           "decode_columns", "decode_rows"]


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
    """Enums are strings in memory (fastavro), so in Arrow too; maps and arrays of enums."""
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
            pa.field(f["name"], arrow_value_type(f["type"]), nullable=_nullable(f["type"]))
            for f in info.raw["fields"]])
    return schema


def arrow_value_type(t: Any) -> pa.DataType:
    """The Arrow type a decoded value of Avro type ``t`` has: ``arrow_avro.arrow_type`` with
    enums as strings, plus bytes and nested records (control schemas)."""
    if isinstance(t, list):
        (branch,) = [b for b in t if b != "null"]
        return arrow_value_type(branch)
    if t == "bytes" or (isinstance(t, dict) and t.get("type") == "bytes"):
        return pa.binary()
    if isinstance(t, dict) and t.get("type") == "record":
        return pa.struct([pa.field(f["name"], arrow_value_type(f["type"]),
                                   nullable=_nullable(f["type"])) for f in t["fields"]])
    if isinstance(t, dict) and t.get("type") == "array":
        return pa.list_(arrow_value_type(t["items"]))
    if isinstance(t, dict) and t.get("type") == "map":
        return pa.map_(pa.string(), arrow_value_type(t["values"]))
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


# --- the native decoder -----------------------------------------------------------------
_SCALARS = {"long": k.LONG, "int": k.INT, "boolean": k.BOOLEAN, "double": k.DOUBLE,
            "float": k.FLOAT, "string": k.STRING, "bytes": k.BYTES}
_MAPS = {"string": k.MAP_STRING, "double": k.MAP_DOUBLE, "long": k.MAP_LONG}
_INT_KINDS = (k.LONG, k.INT, k.BOOLEAN, k.ENUM)
_FLOAT_KINDS = (k.DOUBLE, k.FLOAT)
_SPAN_KINDS = (k.STRING, k.BYTES)


@dataclass(frozen=True, slots=True)
class _Program:
    """How the kernel reads one schema: a program row per field, and the output slots."""

    info: SchemaInfo
    schema: pa.Schema
    rows: np.ndarray  # (fields, 4) int64: kind, null branch, slot, enum symbol count
    # (collection slots, widest item record, 4): per array of records, in its slot, a
    # program row per item field (its slot an entry slot, a collection slot of its own)
    items: np.ndarray
    slots: tuple[int, int, int, int]  # ints, floats, spans, collections
    symbols: dict[tuple[int, ...], pa.Array]  # (field[, item field]) -> its enum's symbols


def _kind(t: Any) -> tuple[int, list[str] | None]:
    """The kernel's kind for a (non-union) Avro type; ``TypeError`` if it has none. An
    array of records is ARRAY_RECORD; ``_item_rows`` checks its items."""
    if isinstance(t, dict) and t.get("type") in _SCALARS:
        t = t["type"]  # a logical type reads as its base type
    if isinstance(t, str) and t in _SCALARS:
        return _SCALARS[t], None
    if isinstance(t, dict) and t.get("type") == "enum":
        return k.ENUM, list(t["symbols"])
    if isinstance(t, dict) and t.get("type") == "map" and t["values"] in _MAPS:
        return _MAPS[t["values"]], None
    if isinstance(t, dict) and t.get("type") == "array" and t["items"] == "string":
        return k.ARRAY_STRING, None
    if (isinstance(t, dict) and t.get("type") == "array" and isinstance(t["items"], dict)
            and t["items"].get("type") == "record"):
        return k.ARRAY_RECORD, None
    raise TypeError(f"no native decoding for Avro type {t!r}")


def _branches(t: Any) -> tuple[Any, int]:
    """A field type without its null branch, and that branch (``NOT_A_UNION`` if none)."""
    if not isinstance(t, list):
        return t, k.NOT_A_UNION
    if len(t) != 2 or "null" not in t:
        raise TypeError(f"no native decoding for the union {t!r}")
    null_branch = t.index("null")
    return t[1 - null_branch], null_branch


def _program(info: SchemaInfo) -> _Program:
    rows, items = [], {}
    symbols: dict[tuple[int, ...], pa.Array] = {}
    used = [0, 0, 0, 0]
    for i, field in enumerate(info.raw["fields"]):
        t, null_branch = _branches(field["type"])
        kind, enum = _kind(t)
        group = (0 if kind in _INT_KINDS else 1 if kind in _FLOAT_KINDS
                 else 2 if kind in _SPAN_KINDS else 3)
        slot = used[group]
        used[group] += 1
        if kind == k.ARRAY_RECORD:
            items[slot] = _item_rows(t["items"], i, used, symbols)
        rows.append((kind, null_branch, slot, len(items[slot]) if kind == k.ARRAY_RECORD
                     else len(enum or ())))
        if enum is not None:
            symbols[(i,)] = pa.array(enum, pa.string())
    return _Program(info, arrow_schema(info), np.array(rows, np.int64).reshape(-1, 4),
                    _item_table(items, used[3]), (used[0], used[1], used[2], used[3]),
                    symbols)


def _item_rows(record: Any, field: int, used: list[int],
               symbols: dict[tuple[int, ...], pa.Array]) -> list[tuple[int, int, int, int]]:
    """The item program of an array of records: a row per item field, each given the next
    collection slot as its entry slot. Items of scalars only, and at least one field (each
    item then takes a byte at least, which the kernel's block check relies on)."""
    rows = []
    for j, item_field in enumerate(record["fields"]):
        t, null_branch = _branches(item_field["type"])
        kind, enum = _kind(t)
        if kind >= k.MAP_STRING:
            raise TypeError(f"no native decoding for a collection in the record {record!r}")
        rows.append((kind, null_branch, used[3], len(enum or ())))
        used[3] += 1
        if enum is not None:
            symbols[(field, j)] = pa.array(enum, pa.string())
    if not rows:
        raise TypeError(f"no native decoding for the empty record {record!r}")
    return rows


def _item_table(items: dict[int, list[tuple[int, int, int, int]]], slots: int) -> np.ndarray:
    """The item programs by collection slot, as the kernel takes them."""
    table = np.zeros((slots, max(map(len, items.values()), default=0), 4), np.int64)
    for slot, rows in items.items():
        table[slot, :len(rows)] = rows
    return table


class ColumnDecoder:
    """Decodes batches of framed messages of one schema catalog (programs made once)."""

    def __init__(self, codec: Codec | None = None) -> None:
        self.codec = codec or default_codec()
        self._programs: dict[int, _Program | None] = {}

    def _program(self, schema_id: int) -> _Program | None:
        """The schema's program; None when the catalog lacks it or its records nest deeper."""
        if schema_id not in self._programs:
            info = self.codec.catalog.get(schema_id)
            try:
                self._programs[schema_id] = _program(info) if info is not None else None
            except TypeError:
                self._programs[schema_id] = None
        return self._programs[schema_id]

    def decode(self, messages: Sequence[bytes]) -> DecodedBatch:
        """One table per schema present and the error of each message that does not decode."""
        try:
            lengths = np.fromiter(map(len, messages), np.int64, len(messages))
            buf = np.frombuffer(b"".join(messages), np.uint8)
        except TypeError:  # a None (tombstone) or not bytes at all: the reference says why
            return decode_rows(messages, self.codec)
        ends = np.cumsum(lengths)
        starts = ends - lengths
        ids = k.headers(buf, starts, ends)
        ids[lengths > MAX_MESSAGE_BYTES] = -1
        parts: list[SchemaRows] = []
        errors: dict[int, SerializationError] = {}
        for schema_id, where in _groups(ids):
            program = self._program(schema_id) if schema_id >= 0 else None
            if program is None:  # framing errors, unknown ids, nested records
                self._by_rows(messages, where, parts, errors)
                continue
            out = _run(program, buf, starts[where], ends[where])
            for i in np.flatnonzero(out.status).tolist():
                errors[int(where[i])] = self._error(program.info, messages[where[i]],
                                                    int(out.status[i]))
            if out.n:
                parts.append(SchemaRows(program.info, _table(program, buf, out),
                                        where[out.rows]))
        return DecodedBatch(tuple(sorted(parts, key=lambda p: p.schema.id)), errors)

    def _by_rows(self, messages: Sequence[bytes], where: np.ndarray, parts: list[SchemaRows],
                 errors: dict[int, SerializationError]) -> None:
        decoded = decode_rows([messages[i] for i in where.tolist()], self.codec)
        parts.extend(SchemaRows(p.schema, p.table, where[p.index]) for p in decoded.parts)
        errors.update((int(where[i]), e) for i, e in decoded.errors.items())

    def _error(self, info: SchemaInfo, message: bytes, status: int) -> SerializationError:
        """The codec's own error for a refused message (the same class and words), else the
        kernel's reason: it is stricter than fastavro where Avro says a value is invalid."""
        try:
            self.codec.decode_info(message)
        except SerializationError as exc:
            return exc
        return MalformedRecordError(f"{info.name} (id {info.id}): {k.REASONS[status]}")


def _groups(ids: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Each distinct id, ascending, with the positions holding it (ascending): one stable
    sort, a radix sort when the ids fit 16 bits (a hashed ``np.unique`` and a comparison
    of the whole batch per id cost about 5x more)."""
    if not ids.size:
        return []
    if ids.max() < 2**15:  # ids are at least -1 (a framing error)
        ids = ids.astype(np.int16)
    order = np.argsort(ids, kind="stable")
    ordered = ids[order]
    bounds = (np.flatnonzero(ordered[1:] != ordered[:-1]) + 1).tolist()
    return [(int(ordered[start]), order[start:end])
            for start, end in zip([0, *bounds], [*bounds, ids.size], strict=True)]


@dataclass(frozen=True, slots=True)
class _Decoded:
    """What the kernel wrote for one schema's messages (see ``avro_kernel.decode``)."""

    n: int  # rows decoded
    ints: np.ndarray
    floats: np.ndarray
    spans: np.ndarray
    valid: np.ndarray
    counts: np.ndarray
    keys: np.ndarray
    values: np.ndarray
    numbers: np.ndarray
    reals: np.ndarray
    present: np.ndarray
    rows: np.ndarray  # per row, the position of its message among those decoded
    status: np.ndarray  # per message, 0 or why it was refused


def _run(program: _Program, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray
         ) -> _Decoded:
    """The kernel over one schema's messages; entry arrays grow until the maps fit."""
    n = len(starts)
    n_ints, n_floats, n_spans, n_colls = program.slots
    # Not zeroed: the kernel writes every value of the rows it returns (and every status),
    # and entries only up to each collection's total.
    ints = np.empty((n_ints, n), np.int64)
    floats = np.empty((n_floats, n), np.float64)
    spans = np.empty((n_spans, n, 2), np.int64)
    valid = np.empty((len(program.rows), n), np.uint8)
    counts = np.empty((n_colls, n), np.int64)
    rows = np.empty(n, np.int64)
    status = np.empty(n, np.uint8)
    room = 4 * n + 16
    while True:
        keys = np.empty((n_colls, room if n_colls else 0, 2), np.int64)
        values = np.empty_like(keys)
        numbers = np.empty(keys.shape[:2], np.int64)
        reals = np.empty(keys.shape[:2], np.float64)
        present = np.empty(keys.shape[:2], np.uint8)
        r = k.decode(buf, starts, ends, program.rows, program.items, ints, floats, spans,
                     valid, counts, keys, values, numbers, reals, present, rows, status)
        if r != k.NEEDS_ROOM:
            return _Decoded(r, ints, floats, spans, valid, counts, keys, values, numbers,
                            reals, present, rows[:r], status)
        room *= 2


def _table(program: _Program, buf: np.ndarray, out: _Decoded) -> pa.Table:
    """The kernel's outputs as Arrow arrays (numbers zero-copy, strings gathered once, all
    of a row's together)."""
    r, arrays = out.n, []
    offsets, data, base = k.gather_rows(buf, out.spans, r)
    for f, (kind, null_branch, slot, _) in enumerate(program.rows.tolist()):
        type_ = program.schema.field(f).type
        present = out.valid[f, :r].view(np.bool_)
        nulls = None if null_branch == k.NOT_A_UNION or present.all() else ~present
        if kind in _SPAN_KINDS:
            arrays.append(pa.Array.from_buffers(type_, r, [
                _bitmap(present, nulls), pa.py_buffer(offsets[slot]),
                pa.py_buffer(data[base[slot]:base[slot + 1]])]))
        elif kind >= k.MAP_STRING:
            arrays.append(_collection(program, f, buf, out, nulls))
        else:
            values = out.floats[slot, :r] if kind in _FLOAT_KINDS else out.ints[slot, :r]
            arrays.append(_scalar(kind, r, present, nulls, values, program.symbols.get((f,))))
    return pa.Table.from_arrays(arrays, schema=program.schema)


def _bitmap(present: np.ndarray, nulls: np.ndarray | None) -> pa.Buffer | None:
    return None if nulls is None else pa.py_buffer(np.packbits(present, bitorder="little"))


def _scalar(kind: int, n: int, present: np.ndarray, nulls: np.ndarray | None,
            values: np.ndarray, symbols: pa.Array | None) -> pa.Array:
    """A column of numbers, booleans or enums from the kernel's int64 or float64 values
    (zero-copy where Arrow's layout allows)."""
    if kind in (k.LONG, k.INT):
        return _fixed(pa.int64(), n, _bitmap(present, nulls), values)
    if kind == k.BOOLEAN:
        return pa.array(values.astype(np.bool_), mask=nulls)
    if kind == k.ENUM:
        assert symbols is not None
        return symbols.take(_fixed(pa.int64(), n, _bitmap(present, nulls), values))
    return _fixed(pa.float64(), n, _bitmap(present, nulls), values)


def _collection(program: _Program, f: int, buf: np.ndarray, out: _Decoded,
                nulls: np.ndarray | None) -> pa.Array:
    """A map or array column: offsets from the per-row counts, then its entries."""
    kind, _, slot, fields = program.rows[f].tolist()
    type_ = program.schema.field(f).type
    offsets = np.zeros(out.n + 1, np.int32)
    np.cumsum(out.counts[slot, :out.n], out=offsets[1:])
    total = int(offsets[-1])
    mask = None if nulls is None else pa.array(nulls)
    if kind == k.ARRAY_RECORD:
        items = _records(program, f, program.items[slot, :fields].tolist(), buf, out, total)
        return pa.ListArray.from_arrays(offsets, items, type=type_, mask=mask)
    if kind == k.ARRAY_STRING:
        items = _strings(pa.string(), buf, out.values[slot], total, None)
        return pa.ListArray.from_arrays(offsets, items, type=type_, mask=mask)
    names = _strings(pa.string(), buf, out.keys[slot], total, None)
    if kind == k.MAP_STRING:
        items = _strings(pa.string(), buf, out.values[slot], total, None)
    elif kind == k.MAP_LONG:
        items = _fixed(pa.int64(), total, None, out.numbers[slot, :total])
    else:
        items = _fixed(pa.float64(), total, None, out.reals[slot, :total])
    return pa.MapArray.from_arrays(offsets, names, items, type=type_, mask=mask)


def _records(program: _Program, f: int, rows: list[list[int]], buf: np.ndarray,
             out: _Decoded, total: int) -> pa.StructArray:
    """The ``total`` items of an array of records: a child column per item field, read
    from that field's entry slot."""
    struct = program.schema.field(f).type.value_type
    children = []
    for j, (kind, null_branch, slot, _) in enumerate(rows):
        present = out.present[slot, :total].view(np.bool_)
        nulls = None if null_branch == k.NOT_A_UNION or present.all() else ~present
        if kind in _SPAN_KINDS:
            children.append(_strings(struct.field(j).type, buf, out.values[slot], total,
                                     _bitmap(present, nulls)))
        else:
            values = (out.reals if kind in _FLOAT_KINDS else out.numbers)[slot, :total]
            children.append(_scalar(kind, total, present, nulls, values,
                                    program.symbols.get((f, j))))
    return pa.StructArray.from_arrays(children, fields=list(struct))


def _fixed(type_: pa.DataType, n: int, bitmap: pa.Buffer | None, data: np.ndarray) -> pa.Array:
    return pa.Array.from_buffers(type_, n, [bitmap, pa.py_buffer(np.ascontiguousarray(data))])


def _strings(type_: pa.DataType, buf: np.ndarray, spans: np.ndarray, n: int,
             bitmap: pa.Buffer | None) -> pa.Array:
    offsets, data = k.gather(buf, spans, n)
    return pa.Array.from_buffers(type_, n, [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)])


_default: ColumnDecoder | None = None


def decode_columns(messages: Sequence[bytes]) -> DecodedBatch:
    """Decode with the shipped catalog; see ``ColumnDecoder.decode``."""
    global _default
    if _default is None:
        _default = ColumnDecoder()
    return _default.decode(messages)
