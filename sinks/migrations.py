"""Versioned ClickHouse migrations, recorded in ``schema_migrations``.

Each migration runs once per database, in version order; the applied version is recorded
after its statements succeed. Statements are idempotent (``IF NOT EXISTS``), so a crash
between a statement and its record is harmless on the next start. Never edit an applied
migration: add a new one.

Tables (C12, C14):
- ``analytics_events``: cleaned events (out.analytics). ReplacingMergeTree keyed by
  event id, so an event delivered twice upstream collapses on merge; the sink itself never
  writes an offset twice (``clickhouse_sink``). Every row carries ``processing_region``
  and ``retention_hours`` (the shortest retention among the data categories it holds,
  from the policy file); the row TTL deletes it when that period is over.
- ``aggregate_cells``: k-anonymous counts produced by the stream worker (out.aggregates).
- ``sink_settings``: policy values the views read (the k-threshold, C20).
- views ``plays_per_title_hour_region`` and ``viewers_per_platform_day``: analyst
  aggregates that suppress cells with fewer than k distinct pseudonymous subjects.
"""

from __future__ import annotations

from typing import Any, NamedTuple

K_THRESHOLD = ("(SELECT ifNull(toUInt64OrNull(argMax(value, updated_at)), 1000000000) "
               "FROM {db}.sink_settings WHERE key = 'k_threshold')")


class Migration(NamedTuple):
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "analytics_events, aggregate_cells, sink_settings", (
        """CREATE TABLE IF NOT EXISTS {db}.analytics_events (
            event_id String,
            subject_pseudonym Nullable(String),
            source String,
            event_type String,
            event_time_ms Int64,
            event_time DateTime64(3, 'UTC')
                MATERIALIZED fromUnixTimestamp64Milli(event_time_ms, 'UTC'),
            processing_region String,
            policy_version String,
            attributes Map(String, String),
            measures Map(String, Float64),
            data_category String,
            retention_hours UInt32,
            _topic String,
            _partition UInt16,
            _offset UInt64,
            inserted_at DateTime DEFAULT now()
        ) ENGINE = ReplacingMergeTree
        PARTITION BY toYYYYMM(event_time)
        ORDER BY (source, event_type, toStartOfHour(event_time), event_id)
        TTL toDateTime(event_time) + toIntervalHour(retention_hours)
        SETTINGS non_replicated_deduplication_window = 10000""",
        """CREATE TABLE IF NOT EXISTS {db}.aggregate_cells (
            metric String,
            window_start_ms Int64,
            window_start DateTime64(3, 'UTC')
                MATERIALIZED fromUnixTimestamp64Milli(window_start_ms, 'UTC'),
            window_ms Int64,
            dimensions Map(String, String),
            count UInt64,
            processing_region String,
            retention_hours UInt32,
            _topic String,
            _partition UInt16,
            _offset UInt64
        ) ENGINE = ReplacingMergeTree
        PARTITION BY toYYYYMM(window_start)
        ORDER BY (metric, window_start_ms, _topic, _partition, _offset)
        TTL toDateTime(window_start) + toIntervalHour(retention_hours)
        SETTINGS non_replicated_deduplication_window = 10000""",
        """CREATE TABLE IF NOT EXISTS {db}.sink_settings (
            key String, value String, updated_at DateTime64(6) DEFAULT now64(6)
        ) ENGINE = ReplacingMergeTree(updated_at) ORDER BY key""",
    )),
    Migration(2, "analyst views with k-threshold suppression", (
        f"""CREATE VIEW IF NOT EXISTS {{db}}.plays_per_title_hour_region AS
        SELECT toStartOfHour(event_time) AS hour,
               attributes['content_id'] AS title_id,
               anyIf(attributes['title'], attributes['title'] != '') AS title,
               attributes['country'] AS region,
               uniqExact(event_id) AS plays,
               uniqExact(subject_pseudonym) AS viewers
        FROM {{db}}.analytics_events
        WHERE source = 'PlaybackEvent' AND event_type = 'play'
          AND attributes['content_source'] = 'catalog'
        GROUP BY hour, title_id, region
        HAVING viewers >= {K_THRESHOLD}""",
        f"""CREATE VIEW IF NOT EXISTS {{db}}.viewers_per_platform_day AS
        SELECT toDate(event_time) AS day,
               attributes['platform'] AS platform,
               uniqExact(subject_pseudonym) AS viewers
        FROM {{db}}.analytics_events
        WHERE source = 'PlaybackEvent'
        GROUP BY day, platform
        HAVING viewers >= {K_THRESHOLD}""",
    )),
)


def applied_versions(client: Any, db: str) -> set[int]:
    client.command(f"""CREATE TABLE IF NOT EXISTS {db}.schema_migrations (
        version UInt32, name String, applied_at DateTime DEFAULT now()
    ) ENGINE = MergeTree ORDER BY version""")
    return {int(r[0]) for r in client.query(
        f"SELECT version FROM {db}.schema_migrations").result_rows}


def migrate(client: Any, db: str) -> list[int]:
    """Create ``db`` if needed and apply every pending migration; return the versions applied."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    done = applied_versions(client, db)
    applied = []
    for m in MIGRATIONS:
        if m.version in done:
            continue
        for statement in m.statements:
            client.command(statement.format(db=db))
        client.insert(f"{db}.schema_migrations", [[m.version, m.name]],
                      column_names=["version", "name"])
        applied.append(m.version)
    return applied


def set_k_threshold(client: Any, db: str, k: int) -> None:
    """Record the policy's k-threshold for the views (C20)."""
    client.insert(f"{db}.sink_settings", [["k_threshold", str(int(k))]],
                  column_names=["key", "value"])
