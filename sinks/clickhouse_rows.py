"""Sink batches as Arrow tables shaped like the ClickHouse tables (pure: no I/O).

The sink inserts these with ``client.insert_arrow``: pyarrow builds every column in C,
where clickhouse-connect's row encoder walks each value (and each map entry) in Python,
which capped the sink far below the engine. The schemas below name the exact column
types, so a record that does not fit fails here with ``SinkWriteError`` naming the table,
before anything reaches the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import accumulate, chain
from typing import Any

import pyarrow as pa

from sinks.base import Batch
from sinks.errors import SinkWriteError
from sinks.sink_policy import RowRetention

EVENTS_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("subject_pseudonym", pa.string()), ("source", pa.string()),
    ("event_type", pa.string()), ("event_time_ms", pa.int64()),
    ("processing_region", pa.string()), ("policy_version", pa.string()),
    ("attributes", pa.map_(pa.string(), pa.string())),
    ("measures", pa.map_(pa.string(), pa.float64())), ("data_category", pa.string()),
    ("retention_hours", pa.uint32()), ("_topic", pa.string()), ("_partition", pa.uint16()),
    ("_offset", pa.uint64()),
])
CELLS_SCHEMA = pa.schema([
    ("metric", pa.string()), ("window_start_ms", pa.int64()), ("window_ms", pa.int64()),
    ("dimensions", pa.map_(pa.string(), pa.string())), ("count", pa.uint64()),
    ("processing_region", pa.string()), ("retention_hours", pa.uint32()),
    ("_topic", pa.string()), ("_partition", pa.uint16()), ("_offset", pa.uint64()),
])


def map_array(maps: Sequence[Mapping[str, Any]], value_type: pa.DataType) -> pa.MapArray:
    """One Arrow map per mapping, from flat keys, values and offsets (no per-row lists)."""
    offsets = pa.array(accumulate(map(len, maps), initial=0), pa.int32())
    keys = pa.array(chain.from_iterable(maps), pa.string())
    values = pa.array(chain.from_iterable(m.values() for m in maps), value_type)
    return pa.MapArray.from_arrays(offsets, keys, values)


def _source_columns(batch: Batch, schema: pa.Schema) -> list[pa.Array]:
    """``_topic``, ``_partition`` and ``_offset``: where each row was read from."""
    n = len(batch)
    return [pa.array([batch.tp.topic] * n, schema.field("_topic").type),
            pa.array([batch.tp.partition] * n, schema.field("_partition").type),
            pa.array(batch.offsets, schema.field("_offset").type)]


def event_table(batch: Batch, retention: RowRetention) -> pa.Table:
    """AnalyticsEvent records as an ``analytics_events`` table."""
    return _checked("analytics_events", lambda: _events(batch, retention))


def cell_table(batch: Batch, retention_hours: int) -> pa.Table:
    """AggregateCell records as an ``aggregate_cells`` table."""
    return _checked("aggregate_cells", lambda: _cells(batch, retention_hours))


def _checked(table: str, build: Callable[[], pa.Table]) -> pa.Table:
    try:
        return build()
    except (KeyError, TypeError, ValueError) as exc:  # pyarrow's errors are Type/ValueError
        raise SinkWriteError(f"a record does not fit {table}: "
                             f"{type(exc).__name__}: {exc}") from exc


def _events(batch: Batch, retention: RowRetention) -> pa.Table:
    recs = batch.records
    sources = [r["source"] for r in recs]
    attributes = [r.get("attributes") or {} for r in recs]
    measures = [r.get("measures") or {} for r in recs]
    categories, hours = retention.of_rows(sources, attributes, measures)
    columns = [
        pa.array([r["event_id"] for r in recs], pa.string()),
        pa.array([r.get("subject_pseudonym") for r in recs], pa.string()),
        pa.array(sources, pa.string()),
        pa.array([r["event_type"] for r in recs], pa.string()),
        pa.array([r["event_time"] for r in recs], pa.int64()),
        pa.array([r["processing_region"] for r in recs], pa.string()),
        pa.array([r["policy_version"] for r in recs], pa.string()),
        map_array(attributes, pa.string()),
        map_array(measures, pa.float64()),
        pa.array(categories, pa.string()),
        pa.array(hours, pa.uint32()),
        *_source_columns(batch, EVENTS_SCHEMA),
    ]
    return pa.Table.from_arrays(columns, schema=EVENTS_SCHEMA)


def _cells(batch: Batch, retention_hours: int) -> pa.Table:
    recs = batch.records
    columns = [
        pa.array([r["metric"] for r in recs], pa.string()),
        pa.array([r["window_start"] for r in recs], pa.int64()),
        pa.array([r["window_ms"] for r in recs], pa.int64()),
        map_array([r.get("dimensions") or {} for r in recs], pa.string()),
        pa.array([r["count"] for r in recs], pa.uint64()),
        pa.array([r["processing_region"] for r in recs], pa.string()),
        pa.array([retention_hours] * len(recs), pa.uint32()),
        *_source_columns(batch, CELLS_SCHEMA),
    ]
    return pa.Table.from_arrays(columns, schema=CELLS_SCHEMA)
