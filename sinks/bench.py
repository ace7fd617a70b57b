"""``privacy-pipeline bench sink``: insert throughput of the ClickHouse sink.

Measures ``ClickHouseSink.write_batches``, the sink's own flush path (table building
overlapped with ``client.insert_arrow`` of the batch before, each insert with its
deduplication token), into the migrated ``analytics_events`` table of the embedded engine,
at batch sizes 1k, 10k and 100k, one batch per partition of a four-partition topic per
flush. Its input is what the runner hands the sink: framed Avro AnalyticsEvent messages
decoded into Arrow by ``streams.avro_columns``, each batch with fresh event ids. Decoding
happens in the runner as records are consumed, so it is timed apart and reported as
``decode_rows_per_s``. The bench opens its own chDB directory in a temp dir (never the
pipeline's data) unless ``CLICKHOUSE_DSN`` names a server, where it uses a scratch
database and drops it after. Between batch sizes it waits for the background merges of the
previous size, so that backlog does not slow the next one. Prints progress, then one JSON
object on its last line with the load average, since the figures depend on what else the
machine runs, and the rows per CPU-second of this process, all threads (with the embedded
engine that includes its inserts and merges: what one busy core sustains).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sinks.base import Batch, TopicPartition
from sinks.clickhouse_client import connect, is_embedded
from sinks.clickhouse_sink import ClickHouseSink
from sinks.sink_policy import load_sink_policy
from streams.avro_columns import decode_columns
from streams.codec import default_codec
from streams.settings import Settings

BATCH_SIZES = (1_000, 10_000, 100_000)
PARTITIONS = 4  # batches per flush: one per partition of the input topic
MERGES_SETTLE_S = 120.0
_PLATFORMS = ("ios", "android", "web", "roku", "tvos", "windows")
_COUNTRIES = ("US", "CA", "GB", "DE", "BR", "IN")


def with_fresh_ids(messages: list[bytes]) -> list[bytes]:
    """The messages with new event ids: the uuid is the body's first field, a 36-byte
    string after its one-byte length, so it is spliced in place of the old one."""
    at = 6  # 5 bytes of framing, the length byte
    return [m[:at] + str(uuid.uuid4()).encode() + m[at + 36:] for m in messages]


def synthetic_events(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """AnalyticsEvent records shaped like the worker's playback output."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    return [{
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "subject_pseudonym": f"{rng.getrandbits(128):032x}",
        "source": "PlaybackEvent", "event_type": rng.choice(("play", "pause", "stop")),
        "event_time": now - rng.randint(0, 86_400_000), "processing_region": "us-east",
        "policy_version": "2024-06-28",
        "attributes": {"platform": rng.choice(_PLATFORMS), "country": rng.choice(_COUNTRIES),
                       "content_id": f"cat-{rng.randint(1, 5000)}",
                       "content_source": "catalog"},
        "measures": {"position_ms": float(rng.randint(0, 7_200_000))},
    } for _ in range(n)]


def bench_sink(settings: Settings, *, sizes: Sequence[int] = BATCH_SIZES,
               rows_per_size: int = 300_000,
               echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Insert ``rows_per_size`` rows at each batch size; print and return rows/s per size."""
    scratch = None
    if is_embedded(settings.clickhouse_dsn):
        scratch = tempfile.mkdtemp(prefix="bench-sink-")
        dsn = f"chdb://{scratch}"
    else:
        dsn = settings.clickhouse_dsn
    database = f"bench_{uuid.uuid4().hex[:8]}"
    policy = load_sink_policy(settings)
    region = next(iter(sorted(policy.allowed_regions)))
    client = connect(dsn)
    sink = ClickHouseSink(client_factory=lambda: client, catalog=settings.catalog,
                          policy=policy, region=region, database=database)
    topic = settings.catalog.analytics.name
    results: dict[str, float] = {}
    per_cpu_s: dict[str, float] = {}
    decoded: dict[str, float] = {}
    load_before = os.getloadavg()[0]
    try:
        pool = default_codec().encode_many("AnalyticsEvent", synthetic_events(max(sizes)))
        decode_columns(pool[:10])  # compile (or load) the native decoder outside the timing
        sink.client()  # migrate outside the timing
        for size in sizes:
            _merges_settled(client, database)
            batches = max(1, rows_per_size // size)
            written, elapsed, cpu, decoding = 0, 0.0, 0.0, 0.0
            for first in range(0, batches, PARTITIONS):
                # One flush: a batch per partition, as the runner hands them to the sink.
                values = [with_fresh_ids(pool[:size])
                          for _ in range(first, min(batches, first + PARTITIONS))]
                started = time.perf_counter()
                tables = [decode_columns(v).parts[0].table for v in values]
                decoding += time.perf_counter() - started
                group = [Batch.of(TopicPartition(topic, i % PARTITIONS), table,
                                  range(i * size, (i + 1) * size))
                         for i, table in enumerate(tables, first)]
                started, cpu_started = time.perf_counter(), time.process_time()
                sink.write_batches(group, lambda _: None)
                elapsed += time.perf_counter() - started
                cpu += time.process_time() - cpu_started
                written += sum(len(b) for b in group)
            decoded[str(size)] = round(written / decoding)
            results[str(size)] = round(written / elapsed)
            per_cpu_s[str(size)] = round(written / cpu)
            echo(f"batch {size:>7,}: {written:>9,} rows in {elapsed:6.2f}s = "
                 f"{results[str(size)]:>10,} rows/s ({per_cpu_s[str(size)]:,} per CPU-second; "
                 f"decoding before it {decoded[str(size)]:,} rows/s)")
        count = client.query(f"SELECT count() FROM {database}.analytics_events").result_rows
        echo(f"rows in table: {count[0][0]:,}")
    finally:
        sink.close()
        client.command(f"DROP DATABASE IF EXISTS {database} SYNC")
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    report = {"rows_per_s": results, "rows_per_cpu_s": per_cpu_s,
              "decode_rows_per_s": decoded,
              "engine": "chdb" if scratch else "server",
              "rows_per_size": rows_per_size,
              "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    echo(json.dumps(report))
    return report


def _merges_settled(client: Any, database: str) -> None:
    """Wait (bounded) until no background merge of ``database`` is running."""
    deadline = time.monotonic() + MERGES_SETTLE_S
    while int(client.command(f"SELECT count() FROM system.merges "
                             f"WHERE database = '{database}'")) > 0:
        if time.monotonic() > deadline:
            return
        time.sleep(0.2)  # polling the engine's merge list
