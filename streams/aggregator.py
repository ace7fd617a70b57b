"""The aggregator: merges the workers' aggregate contributions and publishes k-anonymous
hourly cells to ``out.aggregates`` (C20).

Contributions are keyed by cell, so every contribution to a cell meets in one
aggregator. A window closes once the aggregator has seen a window ``LATENESS_WINDOWS``
later, or when its input has been idle for ``IDLE_S`` (end of a bounded run). Offsets
are committed, in the same transaction as the emitted cells, only up to the oldest
contribution of a window still open: after a crash the open windows are rebuilt from
the topic. A window already closed before a crash may be re-emitted from the
contributions after the committed offset; every emitted cell is still >= k, and readers
keep the highest count per cell (the ClickHouse table is a ReplacingMergeTree on it).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streams import kafka_clients, metrics
from streams.aggregates import WINDOW_MS, Windows, cell_key
from streams.codec import Codec, default_codec
from streams.errors import BrokerError
from streams.policy import Policy
from streams.settings import Settings

log = logging.getLogger(__name__)
LATENESS_WINDOWS = 1
IDLE_S = 5.0


class Aggregator:
    def __init__(self, settings: Settings, policy: Policy, *, group: str | None = None,
                 codec: Codec | None = None, idle_s: float = IDLE_S) -> None:
        self.catalog = settings.catalog
        self.bootstrap = settings.kafka_bootstrap
        self.group = group or settings.consumer_group("aggregator")
        self.codec = codec or default_codec()
        self.windows = Windows(policy.k_threshold, policy.processing_region)
        self.idle_s = idle_s
        self.ready = threading.Event()
        self._stop = threading.Event()
        # partition -> window -> offset of the window's first contribution there
        self._first: dict[int, dict[int, int]] = {}
        self._next: dict[int, int] = {}

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        consumer = kafka_clients.consumer(self.bootstrap, self.group,
                                          **{"isolation.level": "read_committed"})
        producer = kafka_clients.producer(
            self.bootstrap, **{"transactional.id": f"{self.group}-{uuid.uuid4().hex}",
                               "transaction.timeout.ms": 10_000})
        try:
            producer.init_transactions(30)
            consumer.subscribe([self.catalog.aggregate_partials.name],
                               on_assign=lambda c, ps: self.ready.set(),
                               on_revoke=self._on_revoke)
            last_input = time.monotonic()
            while not self._stop.is_set():
                batch: list[Any] = consumer.consume(5_000, timeout=0.2)
                cells = self._fold(batch)
                if batch:
                    last_input = time.monotonic()
                closed_before = self.windows.watermark - LATENESS_WINDOWS * WINDOW_MS
                if time.monotonic() - last_input > self.idle_s and self.windows.open:
                    closed_before = max(self.windows.open) + WINDOW_MS  # input idle: drain
                cells += self.windows.close(closed_before)
                for windows in self._first.values():
                    for w in [w for w in windows if w not in self.windows.open]:
                        del windows[w]
                if cells or batch:
                    self._commit(consumer, producer, cells)
        finally:
            self.ready.clear()
            consumer.close()

    def _fold(self, batch: list[Any]) -> list[dict[str, Any]]:
        cells: list[dict[str, Any]] = []
        closed_before = self.windows.watermark - LATENESS_WINDOWS * WINDOW_MS
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF or err.retriable():
                    continue
                raise BrokerError(f"aggregator: {err.str()}")
            partial = self.codec.decode(msg.value())[1]
            part = msg.partition()
            self._first.setdefault(part, {}).setdefault(partial["window_start"], msg.offset())
            self._next[part] = msg.offset() + 1
            cells += self.windows.add(partial, closed_before)
        return cells

    def _commit(self, consumer: Consumer, producer: Any, cells: list[dict[str, Any]]) -> None:
        producer.begin_transaction()
        topic = self.catalog.aggregates.name
        for cell in cells:
            values = tuple(cell["dimensions"].values())
            producer.produce(topic, key=cell_key(cell["window_start"], values),
                             value=self.codec.encode("AggregateCell", cell))
        offsets = []
        for part, nxt in self._next.items():
            open_firsts = self._first.get(part, {}).values()
            offsets.append(TopicPartition(self.catalog.aggregate_partials.name, part,
                                          min([nxt, *open_firsts])))
        if offsets:
            producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(60)
        if cells:
            metrics.EVENTS_OUT.labels(destination="aggregates").inc(len(cells))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Eager rebalance: every partition restarts from its committed offset, which
        # covers every open window, so the open state is rebuilt rather than kept.
        self._first.clear()
        self._next.clear()
        self.windows.open.clear()
