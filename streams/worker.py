"""The stream worker: consume raw and consent topics in batches, apply the policy, produce.

Processing guarantee: exactly-once. Each batch is one Kafka transaction holding every
output, drop record, dead letter, key-vault entry and consent-table changelog record of
the batch *and* the consumed offsets (``send_offsets_to_transaction``). Downstream
readers use ``isolation.level=read_committed``; a crash anywhere aborts the open
transaction and the restarted worker re-reads from the last committed offsets. A batch's
commit runs on a thread while the next batch is consumed and decided; nothing of the next
batch is produced before it has settled, and a failed commit stops the worker
(docs/decisions.md, D10).

Raw, consent and state topics share one partition count and the worker uses the range
assignor, so it owns the same partition numbers on each: a subject's consent, key and
events meet in one process. On assignment it restores those partitions' subject keys
and consent histories from their compacted topics; the deletion ledger is read whole by
every worker. Any error it cannot account for stops the process with a non-zero exit
(its supervisor restarts it): it never runs on with a broken loop.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streams import kafka_clients, metrics
from streams.aggregates import token_key
from streams.codec import Codec, default_codec
from streams.consent import SubjectHistory
from streams.errors import BrokerError
from streams.key_vault import Keyring
from streams.ledger import Ledger
from streams.policy import Policy
from streams.processor import BatchProcessor, BatchResult, Record, SubjectStore, restore_history
from streams.settings import Settings

log = logging.getLogger(__name__)
MAX_BATCH = 20_000  # D10: the columnar kernels and the commit amortize over the batch
BATCH_WAIT_S = 0.05
LAG_EVERY_S = 5.0
BARRIER_MAX_S = 5.0
# A batch allocates about ten GC-tracked containers an event (the consumed messages,
# lists, tuples), nearly all freed by reference counting. At CPython's default threshold
# (700) that was hundreds of young collections and several full ones a batch, the full
# ones walking every object of the imported libraries: 1.4 s of a 6.5 s drain (D15).
GC_THRESHOLDS = (50_000, 20, 20)


def read_to_end(bootstrap: str, partitions: list[TopicPartition],
                apply: Callable[[Any], None], timeout: float = 120.0) -> int:
    """Read partitions from the beginning to their current end (committed records only)."""
    if not partitions:
        return 0
    reader = kafka_clients.consumer(bootstrap, f"restore-{uuid.uuid4().hex}",
                                    **{"isolation.level": "read_committed",
                                       "enable.partition.eof": True})
    try:
        ends = {}
        for tp in partitions:
            low, high = kafka_clients.watermarks(reader, tp)
            if high > low:
                ends[(tp.topic, tp.partition)] = high
        if not ends:
            return 0
        reader.assign([TopicPartition(t, p, 0) for t, p in ends])  # 0 = from the start
        seen = 0
        pending = set(ends)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            batch: list[Any] = reader.consume(10_000, timeout=0.5)
            for msg in batch:
                key = (msg.topic(), msg.partition())
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(key)
                        continue
                    raise BrokerError(f"restoring {key}: {err.str()}")
                apply(msg)
                seen += 1
                if msg.offset() + 1 >= ends[key]:
                    pending.discard(key)
        if pending:
            raise BrokerError(f"restoring state did not reach the end of {sorted(pending)}")
        return seen
    finally:
        reader.close()


class Worker:
    """One worker process: a consumer-group member with its own transactional producer."""

    def __init__(self, settings: Settings, policy: Policy, *, codec: Codec | None = None,
                 group: str | None = None, max_batch: int = MAX_BATCH,
                 tune_gc: bool = False) -> None:
        self.settings = settings
        self.catalog = settings.catalog
        self.bootstrap = settings.kafka_bootstrap
        self.group = group or settings.consumer_group("worker")
        self.max_batch = max_batch
        self._tune_gc = tune_gc  # the process is this worker's own (``run_worker``)
        self.codec = codec or default_codec()
        self.keyring = Keyring(settings.master_key, settings.previous_master_keys)
        self.ledger = Ledger(self.keyring)
        self.processor = BatchProcessor(self.catalog, self.codec, policy, self.ledger,
                                        token_key(settings.master_key))
        self.region = policy.processing_region
        self.stores: dict[int, SubjectStore] = {}
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._inputs = [t.name for t in self.catalog.raw] + [self.catalog.consent.name]
        self._consumer: Consumer | None = None
        self._lag_at = 0.0
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="txn-commit")
        self._committing: tuple[Future[None], BatchResult, int, float] | None = None
        self._consent_read: dict[int, int] = {}  # next consent offset per partition
        self._ledger_pos: dict[int, int] = {}  # next ledger offset per partition

    # -- lifecycle ---------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Run until ``stop()``; raises on any failure the worker cannot account for."""
        consumer = kafka_clients.consumer(
            self.bootstrap, self.group, **{
                "partition.assignment.strategy": "range",
                # A killed worker's partitions move to a live one after 10 s, not 45.
                "session.timeout.ms": 10_000, "heartbeat.interval.ms": 2_000,
                "isolation.level": "read_committed",
                "max.poll.interval.ms": 300_000,
                "fetch.wait.max.ms": 50})
        producer = kafka_clients.producer(
            self.bootstrap, **{"transactional.id": f"{self.group}-{uuid.uuid4().hex}",
                               # A crashed worker's open transaction blocks read-committed
                               # readers until the broker aborts it: keep that short (a
                               # batch's transaction takes well under a second).
                               "linger.ms": 25, "compression.type": "lz4",
                               "transaction.timeout.ms": 10_000})
        ledger_reader = kafka_clients.consumer(self.bootstrap, f"ledger-{uuid.uuid4().hex}",
                                               **{"isolation.level": "read_committed"})
        # Watermark queries on a client that never fetches: on the reader's connection
        # they would queue behind its long-poll fetch (up to 0.5 s each).
        self._ledger_meta = kafka_clients.consumer(self.bootstrap,
                                                   f"ledger-meta-{uuid.uuid4().hex}")
        self._consumer = consumer
        self._ledger_reader = ledger_reader
        try:
            producer.init_transactions(30)
            self._follow_ledger(ledger_reader)
            consumer.subscribe(self._inputs, on_assign=self._on_assign,
                               on_revoke=self._on_revoke, on_lost=self._on_revoke)
            if self._tune_gc:
                gc.set_threshold(*GC_THRESHOLDS)
            frozen = not self._tune_gc
            while not self._stop.is_set():
                messages = consumer.consume(self.max_batch, timeout=BATCH_WAIT_S)
                self._observe_ledger(ledger_reader.consume(10_000, timeout=0))
                if messages:
                    self._handle(self._consent_barrier(messages, consumer), consumer, producer)
                    if not frozen:  # what lives now (libraries, loaded kernels, restored
                        gc.freeze()  # state) is never cyclic garbage: no full collection
                        frozen = True  # walks it again
                elif self._committing is not None and self._committing[0].done():
                    self._settle_commit()  # idle: surface a failed commit now
            self._settle_commit()
        finally:
            self.ready.clear()
            ledger_reader.close()
            self._ledger_meta.close()
            consumer.close()

    def _follow_ledger(self, reader: Consumer) -> None:
        md = reader.list_topics(self.catalog.deletion_ledger.name, timeout=10)
        parts = [TopicPartition(self.catalog.deletion_ledger.name, p)
                 for p in md.topics[self.catalog.deletion_ledger.name].partitions]
        # Only the latest record per key: a superseded ledger-key record may be wrapped
        # by a master key this worker no longer holds (after a rotation, before compaction).
        latest: dict[bytes | None, bytes | None] = {}
        n = read_to_end(self.bootstrap, parts, lambda m: latest.__setitem__(m.key(), m.value()))
        for key, value in latest.items():
            self.ledger.observe(key, value)
        log.info("deletion ledger: %d records, %d erased subjects", n, len(self.ledger.refs))
        # Keep following from the end (what was read above is already folded in).
        ends = [TopicPartition(tp.topic, tp.partition, kafka_clients.watermarks(reader, tp)[1])
                for tp in parts]
        self._ledger_pos = {tp.partition: tp.offset for tp in ends}
        reader.assign(ends)

    def _observe_ledger(self, messages: list[Any]) -> None:
        for msg in messages:
            if msg.error() is None:
                self.ledger.observe(msg.key(), msg.value())
                self._ledger_pos[msg.partition()] = msg.offset() + 1

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        owned = sorted({tp.partition for tp in partitions})
        t0 = time.monotonic()
        for p in owned:
            self.stores.setdefault(p, SubjectStore(self.keyring))
        vault, changelog = self.catalog.key_vault.name, self.catalog.consent_changelog.name

        # The latest record per topic and key only: the two topics interleave in any
        # order (a changelog tombstone must not erase a key written after it), and a
        # superseded vault entry may be wrapped by a retired master key.
        latest: dict[tuple[str, int, bytes], bytes | None] = {}
        n = read_to_end(self.bootstrap, [TopicPartition(t, p) for p in owned
                                         for t in (vault, changelog)],
                        lambda m: latest.__setitem__((m.topic(), m.partition(), m.key()),
                                                     m.value()))
        for (topic, part, key), value in latest.items():
            store = self.stores[part]
            subject = key.decode()
            if topic == vault:
                if value is None:
                    store.keys.pop(subject, None)
                else:
                    entry = self.codec.decode(value)[1]
                    store.keys[subject] = self.keyring.unwrap(subject, entry["wrapped_key"])
            elif value is None:
                store.histories.pop(subject, None)
                store.consent_records.pop(subject, None)
            else:
                store.histories[subject], store.consent_records[subject] = \
                    restore_history(value)
        for tp in consumer.committed([TopicPartition(self.catalog.consent.name, p)
                                      for p in owned], timeout=30):
            start = tp.offset if tp.offset >= 0 else \
                kafka_clients.watermarks(consumer, tp)[0]
            self._consent_read[tp.partition] = start
        log.info("assigned partitions %s; restored %d state records in %.2fs", owned, n,
                 time.monotonic() - t0)
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._settle_commit()  # the batch in flight commits before its partitions go
        for p in {tp.partition for tp in partitions}:
            self.stores.pop(p, None)
            self._consent_read.pop(p, None)
        for tp in partitions:
            with contextlib.suppress(KeyError):  # never observed
                metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition))

    # -- one batch ---------------------------------------------------------------------

    def _consent_barrier(self, messages: list[Any], consumer: Consumer) -> list[Any]:
        """Catch up on consent before deciding: while a consent partition of this batch's
        events has unread records, pause the raw partitions and read consent only,
        so no event is decided on a consent state older than what was already written.
        Bounded, so a consent topic written faster than we read cannot starve the worker."""
        consent = self.catalog.consent.name
        for msg in messages:
            if msg.topic() == consent and msg.error() is None:
                self._consent_read[msg.partition()] = msg.offset() + 1
        parts = {m.partition() for m in messages if m.topic() != consent}
        behind = [p for p in parts if self._consent_lag(consumer, p) > 0]
        if not behind:
            return messages
        # Every raw partition, not only those behind: the others would keep adding their
        # events to this batch while consent is read (batches of 80,000 seen under backlog).
        paused = [TopicPartition(t.name, p) for t in self.catalog.raw for p in self.stores]
        consumer.pause(paused)
        try:
            deadline = time.monotonic() + BARRIER_MAX_S
            while behind and time.monotonic() < deadline:
                more: list[Any] = consumer.consume(self.max_batch, timeout=BATCH_WAIT_S)
                for msg in more:
                    if msg.topic() == consent and msg.error() is None:
                        self._consent_read[msg.partition()] = msg.offset() + 1
                messages += more
                behind = [p for p in behind if self._consent_lag(consumer, p) > 0]
            if behind:
                log.warning("consent barrier: partitions %s still behind after %.1fs",
                            behind, BARRIER_MAX_S)
        finally:
            consumer.resume(paused)
        return messages

    def _consent_lag(self, consumer: Consumer, part: int) -> int:
        tp = TopicPartition(self.catalog.consent.name, part)
        high = consumer.get_watermark_offsets(tp, cached=True)[1]
        if high < 0:  # not fetched yet: ask the broker once
            high = kafka_clients.watermarks(consumer, tp)[1]
        # The position steps over transaction markers that no message follows.
        read = max(self._consent_read.get(part, 0), consumer.position([tp])[0].offset)
        return high - read

    def _handle(self, messages: list[Any], consumer: Consumer, producer: Any) -> None:
        t0 = time.monotonic()
        consent_topic = self.catalog.consent.name
        by_partition: dict[int, tuple[list[Any], list[Any]]] = defaultdict(lambda: ([], []))
        offsets: dict[tuple[str, int], int] = {}
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if not err.retriable():
                    raise BrokerError(f"consuming: {err.str()}")
                log.warning("consumer: %s", err.str())
                continue
            part, topic = msg.partition(), msg.topic()
            by_partition[part][topic != consent_topic].append(msg)  # consent first, raw second
            offsets[(topic, part)] = msg.offset() + 1
        if any(m.value() is None for consent, _ in by_partition.values() for m in consent):
            self._catch_up_ledger()
        result = BatchResult()
        events = []
        for part, (consent, raw) in by_partition.items():
            store = self.stores.get(part)
            if store is None:  # revoked meanwhile; the new owner re-reads it
                continue
            self.processor.apply_consent(consent, store, result)
            events.append((raw, store))
        # Every partition's consent is in before any event is decided; partitions share
        # no subject, so one columnar pass over all of them decides as one per partition.
        self.processor.process_partitions(events, result)
        for subject in result.deletions:
            result.records.append(self._deletion_request(subject))
        partials = self.processor.partials(result)
        if partials is not None:
            result.batches.append(partials)
        self._settle_commit()  # the previous batch's transaction, before this one begins
        producer.begin_transaction()
        for rec in result.records:
            self._produce(producer, rec)
        for topic, keys, values in result.batches:
            self._produce_batch(producer, topic, keys, values)
        # Positions, not last offset + 1: they step over transaction markers (consent
        # written transactionally), so a caught-up worker commits the true end.
        positions = consumer.position([TopicPartition(t, p) for t, p in offsets])
        commit_offsets = [TopicPartition(tp.topic, tp.partition,
                                         max(tp.offset, offsets[(tp.topic, tp.partition)]))
                          for tp in positions]
        metadata = consumer.consumer_group_metadata()

        def commit() -> None:
            producer.send_offsets_to_transaction(commit_offsets, metadata, 30)
            producer.commit_transaction(60)

        # The broker's round trips (about 0.1-0.3 s a batch) overlap the next batch's
        # consume and decisions; nothing of that batch is produced before this commit
        # settles, and a failure stops the worker there (``_settle_commit``).
        self._committing = (self._committer.submit(commit), result, len(messages), t0)
        if t0 - self._lag_at > LAG_EVERY_S:
            self._lag_at = t0
            self._update_lag(consumer, offsets)

    def _settle_commit(self) -> None:
        """Wait for the transaction in flight, if any; raises its error."""
        if self._committing is None:
            return
        future, result, size, t0 = self._committing
        self._committing = None
        waited = time.monotonic()
        future.result()
        now = time.monotonic()
        log.debug("batch of %d messages: %.3fs from consumed to committed (%.3fs waiting "
                  "for the commit)", size, now - t0, now - waited)
        self._observe(result, size, now - t0)

    def _catch_up_ledger(self) -> None:
        """A consent tombstone is a deletion: the request service wrote its ledger entry
        before it, so read the ledger up to its end now; otherwise an event of the subject
        in this batch could be decided before the worker knows the subject is erased (and
        get a fresh key)."""
        reader = self._ledger_reader
        ends = {tp.partition: kafka_clients.watermarks(self._ledger_meta, tp)[1]
                for tp in reader.assignment()}
        deadline = time.monotonic() + BARRIER_MAX_S
        while time.monotonic() < deadline:
            if all(self._ledger_pos.get(p, 0) >= end for p, end in ends.items()):
                return
            self._observe_ledger(reader.consume(10_000, timeout=0.05))
        log.warning("ledger catch-up: gave up after %.1fs", BARRIER_MAX_S)

    @staticmethod
    def _update_lag(consumer: Consumer, offsets: dict[tuple[str, int], int]) -> None:
        for (topic, part), position in offsets.items():
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, part), cached=True)
            metrics.CONSUMER_LAG.labels(topic=topic, partition=str(part)).set(
                max(0, high - position))

    @staticmethod
    def _produce(producer: Any, rec: Record) -> None:
        while True:
            try:
                producer.produce(rec.topic, key=rec.key, value=rec.value,
                                 headers=list(rec.headers) or None)
                return
            except BufferError:  # local queue full: let librdkafka send, then retry
                producer.poll(0.05)

    @classmethod
    def _produce_batch(cls, producer: Any, topic: str, keys: list[bytes | None],
                       values: list[bytes]) -> None:
        produce = producer.produce
        for key, value in zip(keys, values, strict=True):
            try:
                produce(topic, value, key)  # positional: the hot path's most frequent call
            except BufferError:
                cls._produce(producer, Record(topic, key, value))

    def _deletion_request(self, subject: str) -> Record:
        """C8: learning a subject is under 13 starts a deletion like any other request."""
        request = {"request_id": str(uuid.uuid4()), "type": "delete", "subject_id": subject,
                   "requester_email": "", "agent_id": "privacy-pipeline:C8",
                   "submitted_at": int(time.time() * 1000), "correction": None}
        return Record(self.catalog.requests.name, subject.encode(),
                      self.codec.encode("SubjectRequest", request))

    def _observe(self, result: BatchResult, size: int, seconds: float) -> None:
        now = time.time()
        metrics.BATCH_SIZE.observe(size)
        metrics.PROCESSING_SECONDS.observe(seconds)
        for topic, n in result.events_in.items():
            metrics.EVENTS_IN.labels(topic=topic).inc(n)
        for dest, n in result.out.items():
            metrics.EVENTS_OUT.labels(destination=dest).inc(n)
        for (reason, clause), n in result.drops.items():
            metrics.DROPS.labels(reason=reason, clause=clause).inc(n)
        for error_class, n in result.dead_letters.items():
            metrics.DEAD_LETTERS.labels(error_class=error_class).inc(n)
        times = result.event_times
        for t in times[:: max(1, len(times) // 100)]:  # a sample keeps the histogram cheap
            metrics.END_TO_END_LATENCY_SECONDS.observe(max(0.0, now - t / 1000))
        metrics.CONSENT_TABLE_SUBJECTS.set(sum(len(s.histories) for s in self.stores.values()))
        metrics.KEY_VAULT_KEYS.set(sum(len(s.keys) for s in self.stores.values()))


def run_worker(settings: Settings, policy: Policy, stop_event: threading.Event | None = None,
               **kwargs: Any) -> None:
    """Run a worker with /metrics, until SIGTERM/SIGINT or ``stop_event``."""
    from streams.aggregator import Aggregator

    worker = Worker(settings, policy, tune_gc=True, **kwargs)
    aggregator = Aggregator(settings, policy)
    server = metrics.serve_metrics(settings.metrics_port, ready=worker.ready.is_set)
    failed: list[BaseException] = []

    def aggregate() -> None:
        try:
            aggregator.run()
        except BaseException as exc:  # an aggregator failure stops the whole worker
            failed.append(exc)
            log.error("aggregator failed: %s", exc)
            worker.stop()

    threading.Thread(target=aggregate, name="aggregator", daemon=True).start()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: worker.stop())
    if stop_event is not None:
        def relay() -> None:
            stop_event.wait()
            worker.stop()

        threading.Thread(target=relay, daemon=True).start()
    try:
        worker.run()
    except KafkaException as exc:
        raise BrokerError(f"worker: {exc.args[0].str()}") from None
    finally:
        aggregator.stop()
        server.close()
    if failed:
        raise failed[0]
    log.info("worker stopped (pid %d)", os.getpid())


__all__ = ["SubjectHistory", "Worker", "read_to_end", "run_worker"]
