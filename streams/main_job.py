"""The main job on the embedded default: infrastructure up, a flow through it, a summary.

It starts what it needs (the local broker unless ``KAFKA_BOOTSTRAP_SERVERS`` is set, the
embedded ClickHouse unless ``CLICKHOUSE_DSN`` names a server) and stops what it started.
"""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import ExitStack
from typing import Any

from sinks.clickhouse_client import connect
from streams import kafka_clients, topic_admin
from streams.errors import BrokerError
from streams.infra import local_kafka
from streams.settings import Settings
from streams.topics import CATALOG

log = logging.getLogger(__name__)


def smoke_flow(bootstrap: str, dsn: str, records: int = 1_000) -> dict[str, Any]:
    """Round-trip records through the broker and rows through ClickHouse; count both."""
    run_id = uuid.uuid4().hex[:8]
    producer = kafka_clients.producer(bootstrap)
    for i in range(records):
        producer.produce(CATALOG.raw_playback.name, key=f"smoke-{i % 50}", value=f"{run_id}:{i}")
    if producer.flush(30) != 0:
        raise BrokerError("smoke flow: the broker did not acknowledge every record")
    consumer = kafka_clients.consumer(bootstrap, f"smoke-{run_id}")
    consumer.subscribe([CATALOG.raw_playback.name])
    seen = 0
    deadline = time.monotonic() + 60
    try:
        while seen < records and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=1.0):
                if msg.error() is None and (msg.value() or b"").startswith(run_id.encode()):
                    seen += 1
    finally:
        consumer.close()
    client = connect(dsn)
    client.command("CREATE TABLE IF NOT EXISTS smoke_runs (run_id String, records UInt32, "
                   "at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY at")
    client.insert("smoke_runs", [[run_id, seen]], column_names=["run_id", "records"])
    stored = client.query("SELECT records FROM smoke_runs WHERE run_id = %(r)s",
                          parameters={"r": run_id}).result_rows
    return {"produced": records, "consumed": seen, "clickhouse_rows": stored[0][0]}


def run(settings: Settings, *, seconds: float, keep_running: bool) -> dict[str, Any]:
    """Start the infrastructure, run the flow, and report what happened."""
    with ExitStack() as stack:
        if settings.uses_local_kafka:
            broker = local_kafka(settings)
            started = broker.pid() is None
            t0 = time.monotonic()
            broker.start()
            log.info("kafka ready at %s in %.1fs", broker.bootstrap, time.monotonic() - t0)
            if started and not keep_running:
                stack.callback(broker.stop)
        changes = topic_admin.apply(settings.kafka_bootstrap, settings.replication_factor,
                                    settings.catalog)
        log.info("topics: %d changes", len(changes))
        summary = smoke_flow(settings.kafka_bootstrap, settings.clickhouse_dsn)
        summary["bootstrap"] = settings.kafka_bootstrap
        summary["seconds"] = seconds
        return summary
