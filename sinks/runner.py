"""The sink runner: consume in batches, decode, add, flush, then commit.

One runner drives one sink in its own consumer group. Records are consumed with
``consume(num_messages=...)`` (no per-message callbacks), decoded a consumed batch at a
time into Arrow tables (``streams.avro_columns``) and handed to the sink per
topic-partition. The sink is flushed when it holds ``flush_rows`` rows, every
``flush_seconds``, or at once when ``flush_asked`` is set (a deletion's sink purge waits
for the rows written before it); offsets are committed only after a flush succeeded
(design decision 5).
A record that does not decode, or that the sink rejects, is dead-lettered with its original
bytes and its source in headers, and consumption goes on.

Backpressure: a flush that raises ``SinkBackpressure`` is retried with backoff a bounded
number of times; then the runner pauses its partitions (``consumer.pause``), keeps polling
so it stays in the group, retries the same batches every ``retry.max_seconds`` and resumes
when a flush succeeds. Nothing is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from confluent_kafka import KafkaError, Message
from confluent_kafka import TopicPartition as KafkaTP

from sinks.base import BatchingSink, RetryPolicy, TopicPartition
from sinks.errors import RecordRejected, SinkBackpressure
from streams import metrics
from streams.avro_columns import DecodedBatch
from streams.errors import BrokerError, SerializationError

_LOG = logging.getLogger(__name__)

Decoder = Callable[[Sequence[bytes]], DecodedBatch]


class SinkRunner:
    """Drive ``sink`` from ``consumer``; dead letters go to ``dead_letter_topic``."""

    def __init__(self, *, sink: BatchingSink, consumer: Any, producer: Any,
                 schemas: Mapping[str, str], dead_letter_topic: str, decode: Decoder,
                 region: str, flush_rows: int = 10_000, flush_seconds: float = 2.0,
                 consume_batch: int = 5_000, retry: RetryPolicy | None = None,
                 stop_event: threading.Event | None = None,
                 flush_asked: threading.Event | None = None) -> None:
        self.sink = sink
        self.consumer = consumer
        self.producer = producer
        self.schemas = dict(schemas)  # topic -> the schema its records must have
        self.dead_letter_topic = dead_letter_topic
        self.decode = decode
        self.region = region
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.consume_batch = consume_batch
        self.retry = retry or RetryPolicy()
        self.stop_event = stop_event or threading.Event()
        self.flush_asked = flush_asked or threading.Event()
        self.paused = False
        self.committed: dict[TopicPartition, int] = {}
        self.dead_lettered = 0
        self._dlq_offsets: dict[TopicPartition, int] = {}
        self._assigned: list[KafkaTP] = []
        self._last_flush = time.monotonic()
        self._next_retry = 0.0

    # --- consumer group ---------------------------------------------------------------
    def _on_assign(self, consumer: Any, partitions: list[KafkaTP]) -> None:
        self._assigned = list({(p.topic, p.partition): p for p in
                               self._assigned + partitions}.values())
        committed = consumer.committed(partitions, timeout=30)
        for p in committed:
            start = p.offset if p.offset >= 0 else 0
            self.sink.recover(TopicPartition(p.topic, p.partition), start)
        if self.paused:
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Any, partitions: list[KafkaTP]) -> None:
        try:
            self._flush_and_commit()
        except SinkBackpressure:
            _LOG.warning("%s: partitions revoked before a flush succeeded; their new owner "
                         "re-reads them", self.sink.name)
        gone = {(p.topic, p.partition) for p in partitions}
        self.sink.drop_partitions([TopicPartition(*tp) for tp in gone])
        self._assigned = [p for p in self._assigned if (p.topic, p.partition) not in gone]

    # --- the loop ---------------------------------------------------------------------
    def run(self) -> None:
        """Consume until ``stop_event`` is set; flush and commit what is pending on the way out."""
        self.consumer.subscribe(list(self.schemas), on_assign=self._on_assign,
                                on_revoke=self._on_revoke)
        try:
            while not self.stop_event.is_set():
                self.step()
            if not self.paused:
                self._flush_with_retries()
        finally:
            self.consumer.close()
            self.sink.close()

    def step(self) -> None:
        """One poll; flush when the batch is full, old enough or asked for, or retry while
        paused."""
        # consume() waits out its timeout unless the batch fills: short, so an asked-for
        # flush happens within a tenth of a second.
        messages = self.consumer.consume(num_messages=self.consume_batch, timeout=0.1)
        self._handle(messages)
        now = time.monotonic()
        if self.paused:
            if now >= self._next_retry:
                self._flush_with_retries(attempts=0)
            return
        due = now - self._last_flush >= self.flush_seconds
        if self.flush_asked.is_set():
            self.flush_asked.clear()
            due = True
        if self.sink.pending() >= self.flush_rows or (due and (self.sink.pending()
                                                              or self._dlq_offsets)):
            self._flush_with_retries()
        elif due:
            self._last_flush = now

    def _handle(self, messages: list[Message]) -> None:
        consumed, values = [], []
        for m in messages:
            err = m.error()
            if err is None:
                value = m.value()
                if value is None:
                    self._dead_letter(m, RecordRejected("empty value (tombstone) on a sink "
                                                        "input topic"))
                else:
                    consumed.append(m)
                    values.append(value)
                continue
            if err.code() == KafkaError._PARTITION_EOF:
                continue
            if err.fatal():
                raise BrokerError(f"{self.sink.name}: fatal consumer error: {err.str()}")
            _LOG.warning("%s: consumer error: %s", self.sink.name, err.str())
        if not consumed:
            return
        decoded = self.decode(values)
        for i, exc in decoded.errors.items():
            self._dead_letter(consumed[i], exc)
        tps = [TopicPartition(m.topic() or "", m.partition() or 0) for m in consumed]
        offsets = np.fromiter((m.offset() or 0 for m in consumed), np.int64, len(consumed))
        for part in decoded.parts:
            by_tp: dict[TopicPartition, list[int]] = {}
            for row, i in enumerate(part.index.tolist()):
                by_tp.setdefault(tps[i], []).append(row)
            for tp, rows in by_tp.items():
                at = part.index[rows]
                expected = self.schemas.get(tp.topic)
                if expected is not None and part.schema.name != expected:
                    refused = RecordRejected(f"{part.schema.name} record on {tp.topic}, "
                                             f"which carries {expected}")
                    for i in at.tolist():
                        self._dead_letter(consumed[i], refused)
                    continue
                table = part.table.take(rows) if len(rows) < part.table.num_rows else part.table
                rejected = self.sink.add(table, tp, offsets[at])
                for row, exc in rejected.items():
                    self._dead_letter(consumed[at[row]], exc)

    def _dead_letter(self, m: Message, exc: SerializationError) -> None:
        headers = [("source_topic", m.topic() or ""), ("source_partition", str(m.partition())),
                   ("source_offset", str(m.offset())), ("error_class", type(exc).__name__),
                   ("error_message", str(exc)[:2000]), ("processing_region", self.region)]
        self.producer.produce(self.dead_letter_topic, value=m.value(), key=m.key(),
                              headers=headers)
        self.producer.poll(0)
        metrics.DEAD_LETTERS.labels(error_class=type(exc).__name__).inc()
        self.dead_lettered += 1
        tp = TopicPartition(m.topic() or "", m.partition() or 0)
        self._dlq_offsets[tp] = max(self._dlq_offsets.get(tp, 0), (m.offset() or 0) + 1)
        _LOG.warning("%s: dead-lettered %s[%d]@%d: %s: %s", self.sink.name, m.topic(),
                     m.partition(), m.offset(), type(exc).__name__, exc)

    # --- flush, backpressure, commit --------------------------------------------------
    def _flush_with_retries(self, attempts: int | None = None) -> bool:
        limit = self.retry.attempts if attempts is None else attempts
        for attempt in range(limit + 1):
            try:
                self._flush_and_commit()
            except SinkBackpressure as exc:
                metrics.SINK_ERRORS.labels(sink=self.sink.name,
                                           error_class=type(exc).__name__).inc()
                if attempt == limit:
                    self._pause(exc)
                    return False
                delay = self.retry.delay(attempt + 1, exc)
                _LOG.warning("%s: %s; retry %d/%d in %.1fs", self.sink.name, exc,
                             attempt + 1, limit, delay)
                if self.stop_event.wait(delay):
                    return False
            else:
                if self.paused:
                    self._resume()
                return True
        return False

    def _flush_and_commit(self) -> None:
        _LOG.debug("%s: flushing %d rows", self.sink.name, self.sink.pending())
        self.sink.flush()
        self._last_flush = time.monotonic()
        offsets = self.sink.flushed_offsets()
        for tp, off in self._dlq_offsets.items():
            offsets[tp] = max(off, offsets.get(tp, 0))
        self._dlq_offsets.clear()
        # Everything consumed is flushed now: commit the consumer's position, which steps
        # over transaction markers, so a caught-up sink shows zero lag.
        for pos in self.consumer.position([KafkaTP(tp.topic, tp.partition) for tp in offsets]):
            tp = TopicPartition(pos.topic, pos.partition)
            if pos.offset > offsets.get(tp, 0):
                offsets[tp] = pos.offset
        if not offsets:
            return
        if self.producer.flush(30) > 0:
            raise BrokerError(f"{self.sink.name}: dead letters not acknowledged by the broker")
        self.consumer.commit(offsets=[KafkaTP(tp.topic, tp.partition, off)
                                      for tp, off in offsets.items()], asynchronous=False)
        self.committed.update(offsets)
        for tp, off in offsets.items():
            try:
                _low, high = self.consumer.get_watermark_offsets(KafkaTP(tp.topic, tp.partition),
                                                                 cached=True)
            except Exception:  # lag is best effort, never fails a commit
                continue
            if high >= 0:
                metrics.CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(0, high - off))

    def _pause(self, exc: SinkBackpressure) -> None:
        self._next_retry = time.monotonic() + max(self.retry.max_seconds, exc.retry_after)
        if not self.paused:
            _LOG.error("%s: backend unavailable after %d retries (%s); consumption paused, "
                       "nothing is dropped", self.sink.name, self.retry.attempts, exc)
            self.consumer.pause(self._assigned)
            self.paused = True
            metrics.SINK_PAUSED.labels(sink=self.sink.name).set(1)

    def _resume(self) -> None:
        _LOG.warning("%s: backend back; consumption resumed", self.sink.name)
        self.consumer.resume(self._assigned)
        self.paused = False
        metrics.SINK_PAUSED.labels(sink=self.sink.name).set(0)
