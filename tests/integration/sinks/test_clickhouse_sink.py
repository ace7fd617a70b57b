"""ClickHouse sink against the real broker and the embedded engine (C12, C14, C15, C20)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sinks.base import TopicPartition
from sinks.clickhouse_rows import CELLS_SCHEMA, EVENTS_SCHEMA
from sinks.clickhouse_sink import CELLS_TABLE, EVENTS_TABLE, ClickHouseSink
from sinks.errors import QueryRejected, ResidencyError
from sinks.query import QueryServer, _remote, run_query
from sinks.service import run_clickhouse_sink
from sinks.sink_policy import load_sink_policy
from streams import kafka_clients
from tests.factories import batch_of
from tests.integration.sinks.helpers import (
    BASE_MS,
    HOUR_MS,
    analytics_event,
    in_thread,
    private_topics,
    produce,
    sink_settings,
    wait_for,
)

DOCS = Path(__file__).resolve().parents[3] / "docs" / "analytics.md"


def _sink(client: Any, db: str, settings: Any, region: str = "us-east") -> ClickHouseSink:
    return ClickHouseSink(client_factory=lambda: client, catalog=settings.catalog,
                          policy=load_sink_policy(settings), region=region, database=db)


def _count(client: Any, sql: str) -> int:
    return int(client.query(sql).result_rows[0][0])


def _rows(client: Any, db: str) -> int:
    """Rows in analytics_events, 0 before the sink created it."""
    if not _count(client, f"SELECT count() FROM system.tables WHERE database = '{db}' "
                          "AND name = 'analytics_events'"):
        return 0
    return _count(client, f"SELECT count() FROM {db}.analytics_events")


def test_same_batch_twice_is_written_once_dedup_token_on_chdb(
        clickhouse: tuple[Any, str], tmp_path: Path, clickhouse_dsn: str) -> None:
    client, db = clickhouse
    settings = sink_settings("localhost:1", "", tmp_path, clickhouse_dsn)
    sink = _sink(client, db, settings)
    rng = random.Random(1)
    records = [analytics_event(rng, pseudonym=f"p{i}") for i in range(500)]
    batch = batch_of(TopicPartition(settings.catalog.analytics.name, 0), "AnalyticsEvent",
                     records, range(500))
    sink.write(batch)
    sink.write(batch)  # a retry after a lost acknowledgement: same token
    assert _count(client, f"SELECT count() FROM {db}.analytics_events") == 500


def test_an_event_duplicated_upstream_counts_once(
        clickhouse: tuple[Any, str], tmp_path: Path, clickhouse_dsn: str) -> None:
    """Two offsets carrying one event id: both rows are kept (one per offset), the
    ReplacingMergeTree collapses them on merge and FINAL reads one."""
    client, db = clickhouse
    settings = sink_settings("localhost:1", "", tmp_path, clickhouse_dsn)
    event = analytics_event(random.Random(4), pseudonym="p1", platform="ios")
    _sink(client, db, settings).write(
        batch_of(TopicPartition(settings.catalog.analytics.name, 0), "AnalyticsEvent",
                 [event, event], [0, 1]))
    assert _count(client, f"SELECT count() FROM {db}.analytics_events") == 2
    assert _count(client, f"SELECT count() FROM {db}.analytics_events FINAL") == 1


def test_arrow_rows_name_every_insertable_column(
        clickhouse: tuple[Any, str], tmp_path: Path, clickhouse_dsn: str) -> None:
    """A migration that adds a column must add it to the sink's rows too."""
    client, db = clickhouse
    _sink(client, db, sink_settings("localhost:1", "", tmp_path, clickhouse_dsn)).client()
    for table, schema in ((EVENTS_TABLE, EVENTS_SCHEMA), (CELLS_TABLE, CELLS_SCHEMA)):
        plain = client.query("SELECT name FROM system.columns WHERE database = {d:String} "
                             "AND table = {t:String} AND default_kind = ''",
                             parameters={"d": db, "t": table}).result_rows
        assert sorted(schema.names) == sorted(r[0] for r in plain), table


def test_sink_delivers_dead_letters_and_commits(
        kafka_bootstrap: str, clickhouse: tuple[Any, str], clickhouse_dsn: str,
        unique: str, tmp_path: Path) -> None:
    """Rows carry region and a per-category TTL (C12, C14); bad records are dead-lettered."""
    client, db = clickhouse
    prefix, catalog = private_topics(kafka_bootstrap, unique)
    settings = sink_settings(kafka_bootstrap, prefix, tmp_path, clickhouse_dsn)
    rng = random.Random(2)
    good = [analytics_event(rng, pseudonym=f"p{i % 50}", country="US", platform="ios")
            for i in range(3000)]
    outside = analytics_event(rng, pseudonym="px", region="eu-west")
    produce(kafka_bootstrap, catalog.analytics.name, "AnalyticsEvent", [*good, outside],
            raw=[b"\x00\x00\x00\x00\x1e garbage", b"not avro at all"])
    thread, stop, out = in_thread(run_clickhouse_sink, settings, database=db,
                                  client_factory=lambda: client, query_port=-1,
                                  metrics_port=-1, flush_seconds=0.5)
    try:
        wait_for(lambda: _rows(client, db) >= 3000,
                 60, f"3000 rows {out}")
        runner_committed = wait_for(
            lambda: sum(_committed(kafka_bootstrap, settings, catalog.analytics.name)) == 3003,
            60, "offsets committed")
        assert runner_committed
    finally:
        stop.set()
        thread.join(30)
    assert not [o for o in out if isinstance(o, BaseException)], out
    rows = client.query(f"SELECT count(), uniqExact(event_id), any(processing_region), "
                        f"min(retention_hours), any(data_category) "
                        f"FROM {db}.analytics_events").result_rows[0]
    # 'country' is geolocation (90 days), the shortest category the rows hold.
    assert rows == (3000, 3000, "us-east", 90 * 24, "geolocation")
    dead = _read_all(kafka_bootstrap, catalog.dead_letters.name, 3)
    classes = sorted(h["error_class"] for h in dead)
    assert classes == ["FramingError", "MalformedRecordError", "RecordRejected"]
    assert all(h["source_topic"] == catalog.analytics.name for h in dead)
    assert {h["value"] for h in dead} >= {b"not avro at all"}


def _committed(bootstrap: str, settings: Any, topic: str) -> list[int]:
    from confluent_kafka import TopicPartition as KTP

    from sinks.service import group_id

    c = kafka_clients.consumer(bootstrap, group_id(settings, "clickhouse"))
    try:
        parts = c.committed([KTP(topic, p) for p in range(4)], timeout=10)
        return [max(p.offset, 0) for p in parts]
    finally:
        c.close()


def _read_all(bootstrap: str, topic: str, n: int) -> list[dict[str, Any]]:
    import uuid

    c = kafka_clients.consumer(bootstrap, f"reader-{uuid.uuid4().hex}")
    c.subscribe([topic])
    got: list[dict[str, Any]] = []

    def more() -> bool:
        for m in c.consume(num_messages=100, timeout=0.5):
            if m.error() is None:
                headers: Any = m.headers() or []
                got.append({**{k: bytes(v).decode() for k, v in headers}, "value": m.value()})
        return len(got) >= n
    try:
        wait_for(more, 30, f"{n} records on {topic}", every=0)
    finally:
        c.close()
    return got


def test_sink_outside_allowed_regions_refuses_to_start_c12(
        clickhouse: tuple[Any, str], tmp_path: Path, clickhouse_dsn: str) -> None:
    client, db = clickhouse
    settings = sink_settings("localhost:1", "", tmp_path, clickhouse_dsn)
    with pytest.raises(ResidencyError, match="eu-west"):
        _sink(client, db, settings, region="eu-west")


def _populate(client: Any, db: str, settings: Any) -> None:
    """Known counts: two cells above k=10, three below it."""
    rng = random.Random(3)
    recs: list[dict[str, Any]] = []
    h0, h1 = BASE_MS, BASE_MS + HOUR_MS
    cat = {"content_source": "catalog"}
    for i in range(12):  # title cat-1, hour 0, US: 12 viewers, 2 plays each -> shown
        for _ in range(2):
            recs.append(analytics_event(rng, pseudonym=f"a{i}", time_ms=h0 + 60_000 * i,
                                        content_id="cat-1", title="Dune", country="US",
                                        platform="ios", **cat))
    for i in range(9):  # title cat-1, hour 0, CA: 9 viewers -> suppressed
        recs.append(analytics_event(rng, pseudonym=f"b{i}", time_ms=h0, content_id="cat-1",
                                    country="CA", platform="ios", **cat))
    for i in range(10):  # title cat-2, hour 1, US: exactly k viewers -> shown
        recs.append(analytics_event(rng, pseudonym=f"c{i}", time_ms=h1, content_id="cat-2",
                                    country="US", platform="web", **cat))
    for i in range(3):  # title cat-3: 3 viewers -> suppressed
        recs.append(analytics_event(rng, pseudonym=f"d{i}", time_ms=h1, content_id="cat-3",
                                    country="US", platform="roku", **cat))
    for i in range(20):  # pauses and personal media never count as catalog plays
        recs.append(analytics_event(rng, event_type="pause", pseudonym=f"a{i % 12}",
                                    time_ms=h0, content_id="cat-1", country="US",
                                    platform="ios", **cat))
        recs.append(analytics_event(rng, pseudonym=f"e{i}", time_ms=h0, content_id="local-9",
                                    content_source="personal", country="US",
                                    platform="ios"))
    sink = _sink(client, db, settings)
    sink.write(batch_of(TopicPartition(settings.catalog.analytics.name, 0), "AnalyticsEvent",
                        recs, range(len(recs))))


def _doc_query(name: str, db: str) -> str:
    """The example query of ``docs/analytics.md`` tagged ``<!-- query: name -->``."""
    text = DOCS.read_text()
    block = text.split(f"<!-- query: {name} -->", 1)[1].split("```sql", 1)[1].split("```")[0]
    return block.replace("privacy_pipeline.", f"{db}.")


def test_documented_analyst_queries_on_known_counts_c20(
        clickhouse: tuple[Any, str], tmp_path: Path, clickhouse_dsn: str) -> None:
    client, db = clickhouse
    settings = sink_settings("localhost:1", "", tmp_path, clickhouse_dsn)
    _populate(client, db, settings)
    plays = run_query(settings, _doc_query("plays", db))
    assert [(r["title_id"], r["region"], r["plays"], r["viewers"]) for r in plays] == [
        ("cat-1", "US", 24, 12), ("cat-2", "US", 10, 10)]
    assert plays[0]["title"] == "Dune"
    hour0 = datetime.fromtimestamp(BASE_MS / 1000, UTC).strftime("%Y-%m-%dT%H:%M")
    assert plays[0]["hour"].startswith(hour0)
    viewers = run_query(settings, _doc_query("viewers", db))
    # ios: 12 (a) + 9 (b) + 20 (e, personal media still counts as viewing) = 41; web 10;
    # roku 3 is suppressed.
    assert [(r["platform"], r["viewers"]) for r in viewers] == [("ios", 41), ("web", 10)]
    suppressed = run_query(settings, _doc_query("suppressed", db))
    assert suppressed == [{"suppressed_cells": 2}]


def test_purge_removes_every_row_of_a_pseudonym_c15(
        clickhouse: tuple[Any, str], tmp_path: Path, clickhouse_dsn: str) -> None:
    client, db = clickhouse
    settings = sink_settings("localhost:1", "", tmp_path, clickhouse_dsn)
    _populate(client, db, settings)
    sink = _sink(client, db, settings)
    assert sink.purge("a3") == 2 + 2  # two plays, and pauses 3 and 15
    assert _count(client, f"SELECT count() FROM {db}.analytics_events "
                          f"WHERE subject_pseudonym = 'a3'") == 0
    # Physically gone: the mutation rewrote the parts, nothing hidden behind a mask.
    assert _count(client, f"SELECT count() FROM {db}.analytics_events "
                          f"WHERE subject_pseudonym = 'a3' SETTINGS apply_deleted_mask = 0") == 0
    assert _count(client, f"SELECT count() FROM {db}.analytics_events") == 24 + 9 + 10 + 3 + 40 - 4


def test_query_endpoint_is_read_only(clickhouse: tuple[Any, str]) -> None:
    client, db = clickhouse
    server = QueryServer(lambda: client, 0)
    try:
        assert _remote(server.port, "SELECT 1 AS one") == [{"one": 1}]
        for sql in (f"DROP DATABASE {db}", "SELECT 1; DROP TABLE x",
                    "INSERT INTO t VALUES (1)", "SELECT * FROM file('/etc/passwd')",
                    f"ALTER TABLE {db}.x DELETE WHERE 1"):
            with pytest.raises(QueryRejected):
                _remote(server.port, sql)
    finally:
        server.close()
    assert _count(client, f"SELECT count() FROM system.databases WHERE name = '{db}'") == 1


