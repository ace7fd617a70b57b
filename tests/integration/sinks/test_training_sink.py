"""ML-training sink: day-partitioned Parquet equal to the topic, no linkable key (C7, C20)."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow.parquet as pq

from sinks.service import run_training_sink
from streams import kafka_clients
from streams.codec import decode
from streams.schema_catalog import default_catalog
from tests.integration.sinks.helpers import (
    BASE_MS,
    DAY_MS,
    HOUR_MS,
    in_thread,
    private_topics,
    produce,
    sink_settings,
    wait_for,
)

N = 2_500
LINKABLE = {"event_id", "subject_id", "subject_pseudonym", "profile_pseudonym",
            "device_pseudonym", "session_pseudonym", "ip_address", "email"}


def _examples(n: int) -> list[dict[str, Any]]:
    rng = random.Random(5)
    return [{"source": "PlaybackEvent", "event_type": rng.choice(("play", "stop")),
             "event_hour": BASE_MS - rng.randint(0, 1) * DAY_MS + rng.randint(0, 23) * HOUR_MS,
             "processing_region": "us-east", "policy_version": "2024-06-28",
             "features": {"platform": rng.choice(("ios", "web")), "country": "US"},
             "measures": {"position_ms": float(rng.randint(0, 10_000))}} for _ in range(n)]


def _topic_records(bootstrap: str, topic: str, n: int) -> list[dict[str, Any]]:
    c = kafka_clients.consumer(bootstrap, f"reader-{uuid.uuid4().hex}")
    c.subscribe([topic])
    got: list[dict[str, Any]] = []

    def more() -> bool:
        got.extend(decode(m.value())[1] for m in c.consume(num_messages=1000, timeout=0.5)
                   if m.error() is None)
        return len(got) >= n
    try:
        wait_for(more, 60, f"{n} records on {topic}", every=0)
    finally:
        c.close()
    return got


def _canon(record: dict[str, Any]) -> tuple[Any, ...]:
    return (record["source"], record["event_type"], record["event_hour"],
            record["processing_region"], record["policy_version"],
            tuple(sorted(dict(record["features"]).items())),
            tuple(sorted(dict(record["measures"]).items())))


def test_parquet_equals_the_ml_training_topic_and_holds_no_linkable_key(
        kafka_bootstrap: str, unique: str, tmp_path: Path, clickhouse_dsn: str) -> None:
    prefix, catalog = private_topics(kafka_bootstrap, unique)
    settings = sink_settings(kafka_bootstrap, prefix, tmp_path, clickhouse_dsn)
    produce(kafka_bootstrap, catalog.ml_training.name, "MlTrainingExample", _examples(N))
    root = tmp_path / "training"
    thread, stop, out = in_thread(run_training_sink, settings, metrics_port=-1,
                                  flush_seconds=0.5)
    try:
        def manifest_rows() -> bool:
            path = root / "_manifest.json"
            return path.exists() and json.loads(path.read_text())["rows"] == N
        wait_for(manifest_rows, 60, f"{N} rows in the manifest {out}")
    finally:
        stop.set()
        thread.join(30)
    assert not [o for o in out if isinstance(o, BaseException)], out

    manifest = json.loads((root / "_manifest.json").read_text())
    files = sorted(root.glob("day=*/part-*.parquet"))
    assert sorted(str(f.relative_to(root)) for f in files) == sorted(
        f["path"] for f in manifest["files"])
    assert {f.parent.name for f in files} == {
        "day=" + pd.Timestamp(BASE_MS - d * DAY_MS, unit="ms").strftime("%Y-%m-%d")
        for d in (0, 1)}

    # pyarrow: the files hold exactly the topic's records.
    rows = []
    for f in files:
        for r in pq.read_table(f).to_pylist():
            r["event_hour"] = int(r["event_hour"].timestamp() * 1000)
            rows.append(r)
    expected = _topic_records(kafka_bootstrap, catalog.ml_training.name, N)
    assert sorted(map(_canon, rows)) == sorted(map(_canon, expected))

    # No linkable key: the columns are exactly the ML schema's fields (C7).
    ml_fields = {f.name for f in default_catalog().by_name("MlTrainingExample").fields}
    columns = set(pq.read_schema(files[0]).names)
    assert columns == ml_fields
    assert not columns & LINKABLE
    assert not any("pseudonym" in c or c.endswith("_id") for c in columns)
    feature_keys = {k for r in rows for k in dict(r["features"])}
    assert not feature_keys & LINKABLE

    # pandas and polars read the same dataset (hive partitioning adds ``day``).
    assert len(pd.read_parquet(root)) == N
    assert pl.read_parquet(root / "day=*" / "*.parquet").height == N
