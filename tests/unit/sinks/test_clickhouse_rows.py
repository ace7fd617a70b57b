"""Sink batches as Arrow tables: every record becomes exactly its row (C12, C14)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from sinks.base import TopicPartition
from sinks.clickhouse_rows import cell_table, event_table, row_retention
from sinks.errors import SinkWriteError
from sinks.sink_policy import RowRetention, SinkPolicy, load_sink_policy
from streams.settings import Settings
from tests.factories import batch_of


@pytest.fixture
def retention(tmp_path: Path) -> RowRetention:
    policy: SinkPolicy = load_sink_policy(
        Settings.from_env({"PRIVACY_PIPELINE_HOME": str(tmp_path)}))
    return RowRetention(policy)


def _event(i: int, **extra: Any) -> dict[str, Any]:
    return {"event_id": f"e{i}", "subject_pseudonym": f"p{i}", "source": "PlaybackEvent",
            "event_type": "play", "event_time": 1_700_000_000_000 + i,
            "processing_region": "us-east", "policy_version": "2024-06-28", **extra}


def test_event_rows_carry_values_retention_and_source_offsets(retention: RowRetention) -> None:
    records: list[Mapping[str, Any]] = [
        _event(0, attributes={"platform": "ios", "country": "US"},
               measures={"position_ms": 5.0}),
        _event(1, subject_pseudonym=None, attributes={}, measures={}),
        _event(2),  # no maps at all: empty maps, the shortest base retention
        _event(3, attributes={"country": "DE", "platform": "web"}),  # other field order
    ]
    batch = batch_of(TopicPartition("out.analytics", 3), "AnalyticsEvent", records,
                     [40, 41, 42, 43])
    rows = event_table(batch, retention).to_pylist()
    assert rows[0] == {
        "event_id": "e0", "subject_pseudonym": "p0", "source": "PlaybackEvent",
        "event_type": "play", "event_time_ms": 1_700_000_000_000,
        "processing_region": "us-east", "policy_version": "2024-06-28",
        "attributes": [("platform", "ios"), ("country", "US")],
        "measures": [("position_ms", 5.0)],
        "data_category": "geolocation", "retention_hours": 90 * 24,
        "_topic": "out.analytics", "_partition": 3, "_offset": 40}
    assert rows[1]["subject_pseudonym"] is None
    assert [(r["attributes"], r["measures"]) for r in rows[1:3]] == [([], [])] * 2
    # C14: each row's retention is that of its own fields, whatever their order.
    assert [(r["data_category"], r["retention_hours"]) for r in rows] == [
        ("geolocation", 2160), ("internet_activity", 395 * 24),
        ("internet_activity", 395 * 24), ("geolocation", 2160)]
    assert [r["_offset"] for r in rows] == [40, 41, 42, 43]


def test_retention_is_the_policy_rule_per_row_whatever_the_shapes(
        retention: RowRetention) -> None:
    shapes = [("PlaybackEvent", {"platform": "a"}, {}),
              ("PlaybackEvent", {}, {"position_ms": 1.0}),
              ("PlaybackEvent", {"country": "x", "platform": "a"}, {}),
              ("PlaybackEvent", {}, {}),
              ("ActivityEvent", {"platform": "a"}, {}),
              ("PlaybackEvent", {"platform": "a"}, {})]
    categories, hours = row_retention(
        retention, pa.array([s for s, _, _ in shapes]),
        pa.array([a for _, a, _ in shapes], pa.map_(pa.string(), pa.string())),
        pa.array([m for _, _, m in shapes], pa.map_(pa.string(), pa.float64())))
    assert list(zip(categories.to_pylist(), hours.to_pylist(), strict=True)) == [
        retention(s, [*a, *m]) for s, a, m in shapes]


def test_cell_rows(retention: RowRetention) -> None:
    cell = {"metric": "plays", "window_start": 1_700_000_000_000, "window_ms": 3_600_000,
            "dimensions": {"title": "Dune", "country": "US"}, "count": 12,
            "processing_region": "us-east"}
    rows = cell_table(batch_of(TopicPartition("out.aggregates", 0), "AggregateCell", [cell], [7]),
                      720).to_pylist()
    assert rows == [{"metric": "plays", "window_start_ms": 1_700_000_000_000,
                     "window_ms": 3_600_000,
                     "dimensions": [("title", "Dune"), ("country", "US")], "count": 12,
                     "processing_region": "us-east", "retention_hours": 720,
                     "_topic": "out.aggregates", "_partition": 0, "_offset": 7}]


def test_rows_that_do_not_fit_are_a_write_error(retention: RowRetention) -> None:
    """The wrong record type on a topic, or a negative count, fail before the engine."""
    cell = {"metric": "plays", "window_start": 0, "window_ms": 1, "dimensions": {},
            "count": -1, "processing_region": "us-east"}
    cells = batch_of(TopicPartition("out.aggregates", 0), "AggregateCell", [cell], [0])
    with pytest.raises(SinkWriteError, match="analytics_events"):
        event_table(cells, retention)
    with pytest.raises(SinkWriteError, match="aggregate_cells"):
        cell_table(cells, 720)
