"""Sink batches as Arrow tables shaped like the ClickHouse tables (pure: no I/O).

The sink inserts these with ``client.insert_arrow``. The rows arrive as the batch
decoder's Arrow tables (``streams.avro_columns``), so building a table is picking its
columns and adding the ones the sink derives (retention per row, where each row was
consumed): no Python object per value. The schemas name the exact column types, so a
record that does not fit fails here with ``SinkWriteError`` naming the table, before
anything reaches the engine.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from sinks.base import Batch
from sinks.errors import SinkWriteError
from sinks.sink_policy import RowRetention

_STR = pa.string()
_ATTRIBUTES = pa.map_(_STR, _STR)
_MEASURES = pa.map_(_STR, pa.float64())
EVENTS_SCHEMA = pa.schema([
    ("event_id", _STR), ("subject_pseudonym", _STR), ("source", _STR),
    ("event_type", _STR), ("event_time_ms", pa.int64()), ("processing_region", _STR),
    ("policy_version", _STR), ("attributes", _ATTRIBUTES), ("measures", _MEASURES),
    ("data_category", _STR), ("retention_hours", pa.uint32()),
    ("_topic", _STR), ("_partition", pa.uint16()), ("_offset", pa.uint64()),
])
CELLS_SCHEMA = pa.schema([
    ("metric", _STR), ("window_start_ms", pa.int64()), ("window_ms", pa.int64()),
    ("dimensions", _ATTRIBUTES), ("count", pa.uint64()), ("processing_region", _STR),
    ("retention_hours", pa.uint32()),
    ("_topic", _STR), ("_partition", pa.uint16()), ("_offset", pa.uint64()),
])
# Field names are Avro names ([A-Za-z_][A-Za-z0-9_]*), so these never occur in them.
_FIELD_SEP, _PART_SEP = "\x1f", "\x1e"


def warm_up() -> None:
    """pyarrow imports pandas on its first conversion of Python objects (about a second);
    the sink pays that when it connects rather than inside its first write."""
    pa.array([], _STR)


def event_table(batch: Batch, retention: RowRetention) -> pa.Table:
    """AnalyticsEvent records as an ``analytics_events`` table."""
    return _checked("analytics_events", lambda: _events(batch, retention))


def cell_table(batch: Batch, retention_hours: int) -> pa.Table:
    """AggregateCell records as an ``aggregate_cells`` table."""
    return _checked("aggregate_cells", lambda: _cells(batch, retention_hours))


def _checked(table: str, build: Callable[[], pa.Table]) -> pa.Table:
    try:
        return build()
    except (KeyError, TypeError, ValueError, pa.ArrowException) as exc:
        raise SinkWriteError(f"a record does not fit {table}: "
                             f"{type(exc).__name__}: {exc}") from exc


def _events(batch: Batch, retention: RowRetention) -> pa.Table:
    rows = batch.rows
    sources, attributes, measures = (rows.column(c).chunk(0) if rows.num_rows else
                                     pa.array([], t) for c, t in
                                     (("source", _STR), ("attributes", _ATTRIBUTES),
                                      ("measures", _MEASURES)))
    categories, hours = row_retention(retention, sources, attributes, measures)
    return pa.Table.from_arrays([
        rows.column("event_id"), rows.column("subject_pseudonym"), sources,
        rows.column("event_type"), rows.column("event_time"),
        rows.column("processing_region"), rows.column("policy_version"),
        attributes, measures, categories, hours,
        *_read_from(batch, EVENTS_SCHEMA),
    ], schema=EVENTS_SCHEMA)


def _cells(batch: Batch, retention_hours: int) -> pa.Table:
    rows = batch.rows
    return pa.Table.from_arrays([
        rows.column("metric"), rows.column("window_start"), rows.column("window_ms"),
        rows.column("dimensions"), rows.column("count").cast(pa.uint64()),
        rows.column("processing_region"),
        _repeat(retention_hours, rows.num_rows, pa.uint32()),
        *_read_from(batch, CELLS_SCHEMA),
    ], schema=CELLS_SCHEMA)


def _repeat(value: object, n: int, type_: pa.DataType) -> pa.Array:
    return pa.repeat(pa.scalar(value, type_), n)


def _read_from(batch: Batch, schema: pa.Schema) -> list[pa.Array]:
    """``_topic``, ``_partition``, ``_offset``: where each row was consumed."""
    n = len(batch)
    return [_repeat(batch.tp.topic, n, schema.field("_topic").type),
            _repeat(batch.tp.partition, n, schema.field("_partition").type),
            pa.array(batch.offsets.astype("uint64"), schema.field("_offset").type)]


def row_retention(retention: RowRetention, sources: pa.Array, attributes: pa.MapArray,
                  measures: pa.MapArray) -> tuple[pa.Array, pa.Array]:
    """``data_category`` and ``retention_hours`` of each row (C14).

    A row's retention depends only on its source and field names, and a batch holds few
    such shapes: Arrow groups the rows by shape, the policy is asked once per shape.
    """
    shapes = pc.binary_join_element_wise(
        sources, _field_names(attributes), _field_names(measures), _PART_SEP
    ).dictionary_encode()
    found = []
    for shape in shapes.dictionary.to_pylist():
        source, *parts = shape.split(_PART_SEP)
        found.append(retention(source, [f for p in parts for f in p.split(_FIELD_SEP) if f]))
    categories = pa.array([c for c, _ in found], _STR).take(shapes.indices)
    hours = pa.array([h for _, h in found], pa.uint32()).take(shapes.indices)
    return categories, hours


def _field_names(maps: pa.MapArray) -> pa.Array:
    """Each row's map keys joined into one string, in order."""
    return pc.binary_join(pa.ListArray.from_arrays(maps.offsets, maps.keys), _FIELD_SEP)
