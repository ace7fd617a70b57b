"""Sink purge: carry out ``PurgeCommand``s from ``privacy.purge`` in the ClickHouse sink.

The sink process owns the embedded engine (one chDB engine per process, one process per
data directory), so deletions reach its tables through this consumer rather than from
the request service. It carries out the commands in hand together (concurrent
deletions share one wait and one mutation):

1. waits until the sink's consumer group has committed the analytics topic up to the
   commands' ``after_offsets`` (minus the transaction marker that ends each worker
   transaction): every output of the erased subjects was committed before a command
   was issued, so once the sink has consumed up to there no row can arrive after the
   purge. Meanwhile it asks the sink runner to flush now rather than at its interval;
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

from sinks.clickhouse_sink import EVENTS_TABLE
from streams import kafka_clients
from streams.codec import default_codec
from streams.errors import BrokerError, SerializationError
from streams.group_progress import GroupProgress
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
    """Consumes purge commands for one ClickHouse sink; run it on its own thread.

    ``flush_asked`` is set while a command waits for the sink to commit: the sink runner
    then flushes its pending rows at once instead of at its next interval.
    """

    def __init__(self, settings: Settings, client: Callable[[], Any], *, database: str,
                 sink_group: str, destination: str = "analytics",
                 flush_asked: threading.Event | None = None) -> None:
        self.settings = settings
        self.client = client
        self.database = database
        self.sink_group = sink_group
        self.destination = destination
        self.flush_asked = flush_asked or threading.Event()
        self.codec = default_codec()
        self.stop_event = threading.Event()
        cat = settings.catalog
        self.consumer = kafka_clients.consumer(settings.kafka_bootstrap,
                                               f"{sink_group}.purge",
                                               **{"fetch.wait.max.ms": 20})
        self.producer = kafka_clients.producer(settings.kafka_bootstrap, **{"linger.ms": 2})
        self.consumer.subscribe([cat.purge.name])
        self._progress: dict[str, GroupProgress] = {}  # per topic: the sink group's offsets

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                # consume() waits out its timeout unless 100 commands come: keep it short.
                messages = [m for m in self.consumer.consume(100, timeout=0.05)
                            if m.error() is None]
                if messages:
                    self.handle([m.value() for m in messages])
                    if self.producer.flush(30) > 0:
                        raise BrokerError("purge acknowledgements not written")
                    self.consumer.commit(asynchronous=False)
        finally:
            self.consumer.close()
            for progress in self._progress.values():
                progress.close()

    def _caught_up(self, after: dict[str, int]) -> bool:
        """Wait until the sink group committed every partition up to ``after`` (less the
        transaction marker that ends each worker transaction), asking for flushes."""
        targets: dict[str, dict[int, int]] = {}
        for name, high in after.items():
            topic, _, part = name.rpartition(":")
            if high > 0:
                targets.setdefault(topic, {})[int(part)] = high - 1
        deadline = time.monotonic() + CATCH_UP_S
        for topic, offsets in targets.items():
            progress = self._progress.get(topic)
            if progress is None:
                progress = self._progress[topic] = GroupProgress(
                    self.settings.kafka_bootstrap, self.sink_group, topic)
            if not progress.wait_past(offsets, max(0.0, deadline - time.monotonic()),
                                      on_wait=self.flush_asked.set, stop=self.stop_event):
                return False
        return True

    def handle(self, values: list[bytes | None]) -> None:
        """Carry out the commands in hand together: one catch-up, one mutation."""
        commands = []
        for value in values:
            try:
                schema, command = self.codec.decode(value or b"")
                if schema != "PurgeCommand":
                    raise SerializationError(f"{schema} on the purge topic")
            except SerializationError as exc:
                _LOG.error("purge: undecodable command: %s", exc)
                continue
            commands.append(command)
        if not commands:
            return
        after: dict[str, int] = {}
        for command in commands:
            for name, high in command["after_offsets"].items():
                after[name] = max(after.get(name, 0), high)
        caught_up = self._caught_up(after)
        targets = [(t, c["processing_region"]) for c in commands for t in c["requests"]]
        wanted = [t["pseudonyms"][self.destination] for t, _ in targets
                  if self.destination in t["pseudonyms"]]
        started = time.monotonic()
        removed = delete_rows(self.client(), self.database, wanted)
        seconds = round(time.monotonic() - started, 3)
        table = f"{self.database}.{EVENTS_TABLE}"
        for t, region in targets:
            pseudo = t["pseudonyms"].get(self.destination)
            detail = {"table": table, "rows_removed": removed.get(pseudo, 0) if pseudo else 0,
                      "method": "ALTER TABLE DELETE, mutations_sync=2",
                      "caught_up": caught_up, "seconds": seconds}
            record = {"audit_id": str(uuid.uuid4()), "request_id": t["request_id"],
                      "action": "delete", "step": "sink_purge", "status": "done",
                      "detail": json.dumps(detail, separators=(",", ":")),
                      "occurred_at": int(time.time() * 1000), "actor": ACTOR,
                      "processing_region": region}
            self.producer.produce(self.settings.catalog.audit.name,
                                  key=t["request_id"].encode(),
                                  value=self.codec.encode("AuditRecord", record))
        _LOG.info("purged %d pseudonyms of %d commands (%d rows) in %.2fs", len(wanted),
                  len(commands), sum(removed.values()), seconds)


def start_purge_consumer(settings: Settings, client: Callable[[], Any], *, database: str,
                         sink_group: str, flush_asked: threading.Event | None = None
                         ) -> tuple[PurgeConsumer, threading.Thread]:
    """Start a purge consumer on a daemon thread; set ``.stop_event`` and join to stop."""
    purge = PurgeConsumer(settings, client, database=database, sink_group=sink_group,
                          flush_asked=flush_asked)
    thread = threading.Thread(target=purge.run, name="sink-purge", daemon=True)
    thread.start()
    return purge, thread
