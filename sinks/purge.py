"""Sink purge: carry out ``PurgeCommand``s from ``privacy.purge`` in the ClickHouse sink.

The sink process owns the embedded engine (one chDB engine per process, one process per
data directory), so deletions reach its tables through this consumer rather than from
the request service. For each command it

1. waits until the sink's consumer group has committed the analytics topic up to the
   command's ``after_offsets`` (minus the transaction marker that ends each worker
   transaction): every output of the erased subjects was committed before the command
   was issued, so once the sink has consumed up to there no row can arrive after the
   purge;
2. deletes the rows of the commanded pseudonyms physically (``ALTER TABLE ... DELETE``
   with ``mutations_sync=2``: parts are rewritten before it returns);
3. acknowledges each request with an ``AuditRecord`` (step ``sink_purge``, rows removed).

The same code runs against a ClickHouse server DSN.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import TopicPartition

from sinks.clickhouse_sink import EVENTS_TABLE
from streams import kafka_clients
from streams.codec import default_codec
from streams.errors import BrokerError, SerializationError
from streams.settings import Settings

_LOG = logging.getLogger(__name__)
CATCH_UP_S = 30.0
ACTOR = "sink:clickhouse"
_HEX = re.compile(r"[0-9a-f]{8,64}")


def delete_rows(client: Any, database: str, pseudonyms: list[str]) -> dict[str, int]:
    """Physically delete the rows of ``pseudonyms``; returns rows removed per pseudonym."""
    safe = sorted({p for p in pseudonyms if _HEX.fullmatch(p)})
    if not safe:
        return {}
    table = f"{database}.{EVENTS_TABLE}"
    listed = ", ".join(f"'{p}'" for p in safe)
    result = client.query(f"SELECT subject_pseudonym, count() FROM {table} "
                          f"WHERE subject_pseudonym IN ({listed}) GROUP BY subject_pseudonym")
    counts = {str(p): int(n) for p, n in result.result_rows}
    if counts:
        client.command(f"ALTER TABLE {table} DELETE WHERE subject_pseudonym IN ({listed})",
                       settings={"mutations_sync": 2})
    return counts


class PurgeConsumer:
    """Consumes purge commands for one ClickHouse sink; run it on its own thread."""

    def __init__(self, settings: Settings, client: Callable[[], Any], *, database: str,
                 sink_group: str, destination: str = "analytics") -> None:
        self.settings = settings
        self.client = client
        self.database = database
        self.sink_group = sink_group
        self.destination = destination
        self.codec = default_codec()
        self.stop_event = threading.Event()
        cat = settings.catalog
        self.consumer = kafka_clients.consumer(settings.kafka_bootstrap,
                                               f"{sink_group}.purge",
                                               **{"fetch.wait.max.ms": 20})
        self.producer = kafka_clients.producer(settings.kafka_bootstrap, **{"linger.ms": 2})
        self.consumer.subscribe([cat.purge.name])

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                messages = [m for m in self.consumer.consume(100, timeout=0.2)
                            if m.error() is None]
                for m in messages:
                    self.handle(m.value())
                if messages:
                    if self.producer.flush(30) > 0:
                        raise BrokerError("purge acknowledgements not written")
                    self.consumer.commit(asynchronous=False)
        finally:
            self.consumer.close()

    def _caught_up(self, after: dict[str, int]) -> bool:
        parts = []
        for name, high in after.items():
            topic, _, part = name.rpartition(":")
            parts.append((TopicPartition(topic, int(part)), high))
        deadline = time.monotonic() + CATCH_UP_S
        probe = kafka_clients.consumer(self.settings.kafka_bootstrap, self.sink_group)
        try:
            while True:
                committed = probe.committed([tp for tp, _ in parts], timeout=10)
                if all(c.offset >= high - 1 or high == 0
                       for c, (_, high) in zip(committed, parts, strict=True)):
                    return True
                if time.monotonic() > deadline or self.stop_event.is_set():
                    return False
                time.sleep(0.05)  # polling the sink group's committed offsets
        finally:
            probe.close()

    def handle(self, value: bytes | None) -> None:
        try:
            schema, command = self.codec.decode(value or b"")
            if schema != "PurgeCommand":
                raise SerializationError(f"{schema} on the purge topic")
        except SerializationError as exc:
            _LOG.error("purge: undecodable command: %s", exc)
            return
        caught_up = self._caught_up(command["after_offsets"])
        targets = command["requests"]
        wanted = [t["pseudonyms"][self.destination] for t in targets
                  if self.destination in t["pseudonyms"]]
        started = time.monotonic()
        removed = delete_rows(self.client(), self.database, wanted)
        seconds = round(time.monotonic() - started, 3)
        table = f"{self.database}.{EVENTS_TABLE}"
        for t in targets:
            pseudo = t["pseudonyms"].get(self.destination)
            detail = {"table": table, "rows_removed": removed.get(pseudo, 0) if pseudo else 0,
                      "method": "ALTER TABLE DELETE, mutations_sync=2",
                      "caught_up": caught_up, "seconds": seconds}
            record = {"audit_id": str(uuid.uuid4()), "request_id": t["request_id"],
                      "action": "delete", "step": "sink_purge", "status": "done",
                      "detail": json.dumps(detail, separators=(",", ":")),
                      "occurred_at": int(time.time() * 1000), "actor": ACTOR,
                      "processing_region": command["processing_region"]}
            self.producer.produce(self.settings.catalog.audit.name,
                                  key=t["request_id"].encode(),
                                  value=self.codec.encode("AuditRecord", record))
        _LOG.info("purged %d pseudonyms (%d rows) in %.2fs", len(wanted),
                  sum(removed.values()), seconds)


def start_purge_consumer(settings: Settings, client: Callable[[], Any], *, database: str,
                         sink_group: str) -> tuple[PurgeConsumer, threading.Thread]:
    """Start a purge consumer on a daemon thread; set ``.stop_event`` and join to stop."""
    purge = PurgeConsumer(settings, client, database=database, sink_group=sink_group)
    thread = threading.Thread(target=purge.run, name="sink-purge", daemon=True)
    thread.start()
    return purge, thread
