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

from streams import avro_columns, kafka_clients, metrics
from streams.aggregates import DIMENSIONS, WINDOW_MS, Windows, cell_key
from streams.codec import Codec, default_codec
from streams.errors import BrokerError, SerializationError
from streams.event_columns import map_values
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
        messages = []
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF or err.retriable():
                    continue
                raise BrokerError(f"aggregator: {err.str()}")
            messages.append(msg)
        for i, window, values, tokens in decode_partials([m.value() for m in messages],
                                                         self.codec):
            part, offset = messages[i].partition(), messages[i].offset()
            self._first.setdefault(part, {}).setdefault(window, offset)
            self._next[part] = offset + 1
            cells += self.windows.add_cell(window, values, tokens, closed_before)
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


def decode_partials(values: list[bytes], codec: Codec
                    ) -> list[tuple[int, int, tuple[str, ...], list[str]]]:
    """Per aggregate contribution, in batch order: its position, window, dimension values
    (``DIMENSIONS`` order, "unknown" where absent) and subject tokens, decoded in columns
    (a batch's thousand partials, one fastavro call each, took a tenth of a worker's drain
    on the aggregator's thread, holding the GIL). A record that does not decode, or of
    another schema, raises: the workers write them, so it is a bug, never skipped."""
    if not values:
        return []
    decoded = (avro_columns.decode_columns(values) if codec is default_codec()
               else avro_columns.decode_rows(values, codec))
    if decoded.errors:
        raise decoded.errors[min(decoded.errors)]
    rows: list[tuple[int, int, tuple[str, ...], list[str]]] = []
    for part in decoded.parts:
        if part.schema.name != "AggregatePartial":
            raise SerializationError(f"a {part.schema.name} record among aggregate partials")
        table = part.table
        dims = [[v if v is not None else "unknown" for v in d.to_pylist()]
                for d in map_values(table.column("dimensions").combine_chunks(), DIMENSIONS)]
        rows += zip(part.index.tolist(), table.column("window_start").to_pylist(),
                    zip(*dims, strict=True), table.column("subject_tokens").to_pylist(),
                    strict=True)
    return rows  # one schema, so one part, in batch order
