"""One batch of consumed messages in, every record to produce out. Pure: no Kafka I/O.

For each message exactly one outcome is accounted (design decision 5): routed to one or
more outputs, dropped with a named reason (a drop record on ``privacy.drops``), or
dead-lettered with its original bytes. Control records (consent) are applied before the
batch's events, so a consent change consumed in the same batch governs them; the engine
then picks the consent state in force at each event's own event time.

State the batch reads and changes lives in ``SubjectStore`` (consent histories, subject
keys, erased subjects); the records that make those changes durable (key-vault entries,
consent-table changelog, tombstones) are returned with the outputs so the worker writes
them in the same transaction.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from streams import engine
from streams.aggregates import Contributions
from streams.codec import Codec
from streams.consent import SubjectHistory, apply
from streams.decisions import DeleteSubject, Dropped, Routed
from streams.errors import SerializationError
from streams.key_vault import Keyring
from streams.ledger import Ledger
from streams.policy import Policy
from streams.pseudonym import forget_cache, new_subject_key
from streams.topics import Catalog


class Message(Protocol):
    """The part of a consumed Kafka message the processor reads (confluent-kafka's)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes]] | None: ...


class Record(NamedTuple):
    """One record to produce (a tuple: the hot path makes one or more per event)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


class InvalidEvent(SerializationError):
    """Decodes, but does not belong where it was found (wrong topic, key mismatch)."""


@dataclass
class SubjectStore:
    """The worker's state for the subjects of its partitions (plus the erased set)."""

    keyring: Keyring
    histories: dict[str, SubjectHistory] = field(default_factory=dict)
    consent_records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    keys: dict[str, bytes] = field(default_factory=dict)  # unwrapped, memory only


@dataclass
class BatchResult:
    records: list[Record] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)  # routed / dropped / dead_letter
    events_in: Counter[str] = field(default_factory=Counter)  # per source topic
    out: Counter[str] = field(default_factory=Counter)  # per destination
    drops: Counter[tuple[str, str]] = field(default_factory=Counter)  # (reason, clause)
    dead_letters: Counter[str] = field(default_factory=Counter)  # per error class
    deletions: set[str] = field(default_factory=set)  # subjects to delete (C8), once each
    contributions: Contributions | None = None  # aggregate contributions (C20)
    event_times: list[int] = field(default_factory=list)  # of routed events (latency)


class BatchProcessor:
    """Applies the policy to batches of raw and control messages of one catalog."""

    def __init__(self, catalog: Catalog, codec: Codec, policy: Policy, ledger: Ledger,
                 token_key: bytes) -> None:
        self._catalog = catalog
        self._codec = codec
        self._policy = policy
        self._ledger = ledger
        self._token_key = token_key
        self._region = policy.processing_region
        # Which input schemas each raw topic may carry (prefix-aware).
        base = {mine.name: plain.name for mine, plain in zip(catalog, Catalog(), strict=True)}
        self._allowed = {t.name: frozenset(s.name for s in codec.catalog
                                           if s.role == "input" and s.topic == base[t.name])
                         for t in catalog.raw}
        self._dest_topic = {name: catalog.destination(name).name
                            for name in policy.destinations}
        self._dest_schema = {name: d.output_schema for name, d in policy.destinations.items()}

    # -- control -----------------------------------------------------------------------

    def apply_consent(self, messages: Iterable[Message], store: SubjectStore,
                      result: BatchResult) -> None:
        """Fold consent records into histories; a tombstone erases the subject's state."""
        for msg in messages:
            result.events_in[msg.topic() or ""] += 1
            key = (msg.key() or b"").decode("utf-8", "replace")
            value = msg.value()
            if value is None:  # deletion: forget the subject, tombstone its state
                self.forget(key, store, result)
                result.outcomes["applied"] += 1
                continue
            if self._ledger.is_erased(key):  # a replay must not rebuild an erased subject
                result.outcomes["applied"] += 1
                continue
            try:
                schema, record = self._codec.decode(value)
                if schema != "ConsentRecord" or record.get("subject_id") != key:
                    raise InvalidEvent(f"{schema} with subject {record.get('subject_id')!r} "
                                       f"under key {key!r} on the consent topic")
            except SerializationError as exc:
                self._dead_letter(msg, exc, result)
                continue
            history = apply(store.histories.get(key), record)
            store.histories[key] = history
            kept = _kept([*store.consent_records.get(key, []), record], history)
            store.consent_records[key] = kept
            result.records.append(Record(self._catalog.consent_changelog.name, key.encode(),
                                         json.dumps(kept, separators=(",", ":")).encode()))
            result.outcomes["applied"] += 1

    def forget(self, subject_id: str, store: SubjectStore, result: BatchResult) -> None:
        """Drop a subject's state and tombstone its keyed state topics."""
        store.histories.pop(subject_id, None)
        store.consent_records.pop(subject_id, None)
        if store.keys.pop(subject_id, None) is not None:
            forget_cache()  # no pseudonym derived from the shredded key stays in memory
        key = subject_id.encode()
        result.records.append(Record(self._catalog.consent_changelog.name, key, None))
        result.records.append(Record(self._catalog.key_vault.name, key, None))

    # -- events ------------------------------------------------------------------------

    def process(self, messages: Sequence[Message], store: SubjectStore,
                result: BatchResult | None = None) -> BatchResult:
        """Decide every raw message of the batch; returns the records to produce."""
        result = result or BatchResult()
        if result.contributions is None:
            result.contributions = Contributions(self._token_key)
        contribute = result.contributions.add
        now = int(time.time() * 1000)
        decode = self._codec.decode
        decide = engine.decide
        policy = self._policy
        records = result.records
        for msg in messages:
            topic = msg.topic() or ""
            result.events_in[topic] += 1
            try:
                schema, event = decode(msg.value())  # type: ignore[arg-type]
                if schema not in self._allowed.get(topic, ()):
                    raise InvalidEvent(f"{schema} events do not belong on {topic}")
                subject = event["subject_id"]
                if (msg.key() or b"") != subject.encode():
                    raise InvalidEvent(f"key does not match subject_id of {schema} "
                                       f"{event.get('event_id')}")
            except SerializationError as exc:
                self._dead_letter(msg, exc, result)
                continue
            if self._ledger.is_erased(subject):
                self._drop(msg, event, "subject_erased", "C15", now, result)
                continue
            history = store.histories.get(subject)
            state = history.at(event["event_time"]) if history is not None else None
            try:
                decision = decide(schema, event, state, self._subject_key(subject, store, now,
                                                                          result), policy)
            except SerializationError as exc:
                self._dead_letter(msg, exc, result)
                continue
            if isinstance(decision, Routed):
                for out in decision.outputs:
                    dest = out.destination
                    pseudonym = out.record.get("subject_pseudonym")
                    records.append(Record(
                        self._dest_topic[dest],
                        pseudonym.encode() if pseudonym else None,
                        self._codec.encode(self._dest_schema[dest], out.record)))
                    result.out[dest] += 1
                    if dest == "analytics":
                        contribute(out.record, subject)
                result.outcomes["routed"] += 1
                result.event_times.append(event["event_time"])
            elif isinstance(decision, Dropped):
                self._drop(msg, event, decision.reason, decision.clause, now, result)
            elif isinstance(decision, DeleteSubject):
                self._drop(msg, event, decision.reason, decision.clause, now, result)
                result.deletions.add(subject)
        return result

    def _subject_key(self, subject: str, store: SubjectStore, now: int,
                     result: BatchResult) -> bytes:
        key = store.keys.get(subject)
        if key is None:
            key = new_subject_key()
            store.keys[subject] = key
            entry = {"subject_id": subject, "wrapped_key": store.keyring.wrap(subject, key),
                     "key_version": 1, "created_at": now, "processing_region": self._region}
            result.records.append(Record(self._catalog.key_vault.name, subject.encode(),
                                         self._codec.encode("KeyVaultEntry", entry)))
        return key

    def _drop(self, msg: Message, event: dict[str, Any], reason: str, clause: str, now: int,
              result: BatchResult) -> None:
        drop = {"event_id": event.get("event_id"), "reason": reason, "clause": clause,
                "source_topic": msg.topic() or "", "source_partition": msg.partition() or 0,
                "source_offset": msg.offset() or 0, "dropped_at": now,
                "processing_region": self._region}
        result.records.append(Record(self._catalog.drops.name, None,
                                     self._codec.encode("DropRecord", drop)))
        result.drops[(reason, clause)] += 1
        result.outcomes["dropped"] += 1

    def _dead_letter(self, msg: Message, exc: Exception, result: BatchResult) -> None:
        error_class = type(exc).__name__
        topic = msg.topic() or ""
        letter = {"original_key": msg.key(), "original_value": msg.value(),
                  "source_topic": topic, "source_partition": msg.partition() or 0,
                  "source_offset": msg.offset() or 0, "error_class": error_class,
                  "error_message": str(exc)[:1000], "failed_at": int(time.time() * 1000),
                  "processing_region": self._region}
        headers = (("source_topic", topic.encode()),
                   ("source_partition", str(msg.partition()).encode()),
                   ("source_offset", str(msg.offset()).encode()),
                   ("error_class", error_class.encode()),
                   ("error_message", str(exc)[:200].encode("utf-8", "replace")),
                   *(msg.headers() or ()))
        result.records.append(Record(self._catalog.dead_letters.name, msg.key(),
                                     self._codec.encode("DeadLetter", letter), headers))
        result.dead_letters[error_class] += 1
        result.outcomes["dead_letter"] += 1


def _kept(records: list[dict[str, Any]], history: SubjectHistory) -> list[dict[str, Any]]:
    """The raw consent records behind ``history``'s states (the changelog value)."""
    wanted = {(st.effective_at, st.recorded_at) for st in history.states}
    by_time: dict[int, dict[str, Any]] = {}
    for r in records:
        if (r["effective_at"], r.get("recorded_at") or 0) in wanted:
            by_time[r["effective_at"]] = r
    return [by_time[t] for t in sorted(by_time)]


def restore_history(value: bytes) -> tuple[SubjectHistory, list[dict[str, Any]]]:
    """Rebuild a subject's history from its consent-table changelog value."""
    records: list[dict[str, Any]] = json.loads(value)
    history = None
    for r in records:
        history = apply(history, r)
    return history or SubjectHistory(), records
