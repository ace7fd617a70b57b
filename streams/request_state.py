"""What the request service knows, rebuilt from topics (no database of its own).

``Directory`` reads, from the beginning and then as they grow (committed records only):
the consent topic (each subject's consent records, for verification, export and
correction), the key vault (wrapped subject keys: pseudonyms for the sink purge), the
deletion ledger, the requests topic (which subject each request names) and the audit
topic (every request's status, ``streams.subject_requests.fold_status``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from streams import kafka_clients
from streams.codec import Codec
from streams.errors import BrokerError, SerializationError
from streams.key_vault import Keyring
from streams.ledger import Ledger
from streams.subject_requests import RequestStatus, observe
from streams.topics import Catalog

log = logging.getLogger(__name__)


class Directory:
    """Subjects, keys, ledger and request statuses; ``follow()`` keeps them current."""

    def __init__(self, bootstrap: str, catalog: Catalog, codec: Codec, keyring: Keyring) -> None:
        self.bootstrap = bootstrap
        self.catalog = catalog
        self.codec = codec
        self.keyring = keyring
        self.lock = threading.RLock()
        self.ledger = Ledger(keyring)
        self.consents: dict[str, list[dict[str, Any]]] = {}
        self.wrapped_keys: dict[str, bytes] = {}
        self.statuses: dict[str, RequestStatus] = {}
        self.request_subject: dict[str, str] = {}  # request id -> subject id
        self.subject_requests: dict[str, list[str]] = defaultdict(list)
        self.changed = threading.Condition(self.lock)
        self.positions: dict[tuple[str, int], int] = {}  # next offset read, per partition
        self.late: set[str] = set()  # erased subjects that got a new consent value
        # Watermark queries on their own client: the follower thread blocks in consume().
        self._meta = kafka_clients.consumer(bootstrap, f"requests-meta-{uuid.uuid4().hex}")
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self._topics = [catalog.consent.name, catalog.key_vault.name,
                        catalog.deletion_ledger.name, catalog.requests.name, catalog.audit.name]
        self._consumer = kafka_clients.consumer(
            bootstrap, f"requests-view-{uuid.uuid4().hex}",
            **{"isolation.level": "read_committed", "enable.partition.eof": True,
               "fetch.wait.max.ms": 20})

    # -- reading -----------------------------------------------------------------------

    def load(self, timeout: float = 120.0) -> None:
        """Read every followed topic to its current end."""
        parts = []
        for topic in self._topics:
            md = self._consumer.list_topics(topic, timeout=10)
            parts += [TopicPartition(topic, p, 0) for p in md.topics[topic].partitions]
        ends = {(tp.topic, tp.partition): kafka_clients.watermarks(self._consumer, tp)[1]
                for tp in parts}
        self._consumer.assign(parts)
        pending = {k for k, high in ends.items() if high > 0}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            self._poll(0.1)
            for tp in self._consumer.position([TopicPartition(t, p) for t, p in pending]):
                if tp.offset >= ends[(tp.topic, tp.partition)]:
                    pending.discard((tp.topic, tp.partition))
        if pending:
            raise BrokerError(f"request state: did not reach the end of {sorted(pending)}")

    def poll(self, timeout: float = 0.1) -> int:
        """Fold in whatever arrived; returns the number of records (not while following)."""
        return len(self._poll(timeout))

    def follow(self) -> None:
        """After ``load()``: keep reading on a background thread until ``close()``."""
        def run() -> None:
            while not self._stop.is_set():
                # consume() waits out its timeout unless 10,000 records come: keep it
                # short, as deletions wait on what arrives here (the sink's purge acks).
                self._poll(0.02)

        self._follower = threading.Thread(target=run, name="request-state", daemon=True)
        self._follower.start()

    def highs(self, topic: str) -> dict[int, int]:
        """The high watermark of each partition of ``topic``, now."""
        md = self._meta.list_topics(topic, timeout=10)
        return {p: kafka_clients.watermarks(self._meta, TopicPartition(topic, p))[1]
                for p in md.topics[topic].partitions}

    def caught_up(self, topic: str, timeout: float = 10.0) -> bool:
        """Wait until what ``topic`` holds now has been read."""
        highs = self.highs(topic)
        return self.wait_for(lambda: all(self.positions.get((topic, p), 0) >= h
                                          for p, h in highs.items() if h > 0), timeout)

    def _poll(self, timeout: float) -> list[Any]:
        got = []
        for msg in self._consumer.consume(10_000, timeout=timeout):
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("request state: %s", err.str())
                continue
            got.append(msg)
        if got:
            with self.lock:
                for msg in got:
                    self._apply(msg)
                self.changed.notify_all()
        return got

    def _apply(self, msg: Any) -> None:
        topic, key, value = msg.topic(), msg.key(), msg.value()
        self.positions[(topic, msg.partition())] = msg.offset() + 1
        cat = self.catalog
        if topic == cat.deletion_ledger.name:
            self.ledger.observe(key, value)
            return
        subject = (key or b"").decode("utf-8", "replace")
        try:
            if topic == cat.consent.name:
                if value is None:
                    self.consents.pop(subject, None)
                    self.late.discard(subject)
                elif self.ledger.is_erased(subject):
                    self.late.add(subject)  # written after the deletion: tombstone it too
                else:
                    self.consents.setdefault(subject, []).append(self.codec.decode(value)[1])
            elif topic == cat.key_vault.name:
                if value is None:
                    self.wrapped_keys.pop(subject, None)
                else:
                    self.wrapped_keys[subject] = self.codec.decode(value)[1]["wrapped_key"]
            elif topic == cat.requests.name and value is not None:
                request = self.codec.decode(value)[1]
                rid = request["request_id"]
                if rid not in self.request_subject:
                    self.request_subject[rid] = request["subject_id"]
                    self.subject_requests[request["subject_id"]].append(rid)
            elif topic == cat.audit.name and value is not None:
                observe(self.statuses, self.codec.decode(value)[1])
        except SerializationError as exc:  # not ours to dead-letter; the worker does
            log.warning("request state: skipping undecodable record on %s: %s", topic, exc)

    # -- questions ---------------------------------------------------------------------

    def latest_consent(self, subject: str) -> dict[str, Any] | None:
        """The subject's consent record with the latest effective time (then recorded)."""
        with self.lock:
            records = self.consents.get(subject)
            if not records:
                return None
            latest = max(records, key=lambda r: (r["effective_at"], r.get("recorded_at") or 0))
            return dict(latest)

    def subject_key(self, subject: str) -> bytes | None:
        with self.lock:
            wrapped = self.wrapped_keys.get(subject)
        return self.keyring.unwrap(subject, wrapped) if wrapped is not None else None

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        """Wait until ``predicate()`` holds (checked under the lock) or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if self._follower is None:
                    self.lock.release()
                    try:
                        self._poll(min(left, 0.05))
                    finally:
                        self.lock.acquire()
                else:
                    self.changed.wait(min(left, 0.5))
            return True

    def close(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.join(10)
        self._consumer.close()
        self._meta.close()
