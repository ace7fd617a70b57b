"""What one processed batch yields: the records to produce and the counts behind metrics.

Both event paths (the columnar one the worker runs and the row reference) account
through ``Accounting``, so a drop record, a dead letter or a key-vault entry is written
the same way whichever path decided the event (design decision 5: one outcome each).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import pyarrow as pa

from streams.aggregates import Contributions
from streams.arrow_avro import FramedRecords
from streams.codec import Codec
from streams.consent import SubjectHistory
from streams.errors import SerializationError
from streams.key_vault import Keyring
from streams.pseudonym import new_subject_key
from streams.topics import Catalog

__all__ = ["Accounting", "BatchResult", "InvalidEvent", "Message", "OutputBatch", "Record",
           "SubjectStore", "framed"]


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


class OutputBatch(NamedTuple):
    """Many records of one topic, without headers (the columnar path's outputs)."""

    topic: str
    keys: list[bytes | None]
    values: list[bytes]


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
    batches: list[OutputBatch] = field(default_factory=list)  # produced after ``records``
    outcomes: Counter[str] = field(default_factory=Counter)  # routed / dropped / dead_letter
    events_in: Counter[str] = field(default_factory=Counter)  # per source topic
    out: Counter[str] = field(default_factory=Counter)  # per destination
    drops: Counter[tuple[str, str]] = field(default_factory=Counter)  # (reason, clause)
    dead_letters: Counter[str] = field(default_factory=Counter)  # per error class
    deletions: set[str] = field(default_factory=set)  # subjects to delete (C8), once each
    new_keys: list[tuple[str, bytes, int]] = field(default_factory=list)  # (subject,
    # wrapped key, created at) of keys made and not yet written (``Accounting.key_entries``)
    contributions: Contributions | None = None  # aggregate contributions (C20)
    event_times: list[int] = field(default_factory=list)  # of routed events (latency)


class Accounting:
    """Writes the records of non-routed outcomes and new subject keys into a result."""

    def __init__(self, catalog: Catalog, codec: Codec, region: str) -> None:
        self._catalog = catalog
        self._codec = codec
        self._region = region
        self._drops = framed(codec, "DropRecord")
        self._vault = framed(codec, "KeyVaultEntry")
        self._letters = framed(codec, "DeadLetter")

    def subject_key(self, subject: str, store: SubjectStore, now: int,
                    result: BatchResult) -> bytes:
        """The subject's key; a new subject gets one, and its key-vault entry waits in
        ``result.new_keys`` (``key_entries``)."""
        key = store.keys.get(subject)
        if key is None:
            key = new_subject_key()
            store.keys[subject] = key
            result.new_keys.append((subject, store.keyring.wrap(subject, key), now))
        return key

    def key_entries(self, result: BatchResult) -> None:
        """The key-vault entries of the keys made since the last call, encoded in one
        table (a bench's thousands of new subjects: one fastavro call each was 5% of the
        worker), onto ``result.batches``."""
        made, result.new_keys = result.new_keys, []
        if not made:
            return
        subjects, wrapped, created = zip(*made, strict=True)
        n = len(made)
        table = pa.Table.from_pydict({
            "subject_id": subjects, "wrapped_key": wrapped, "key_version": [1] * n,
            "created_at": created, "processing_region": [self._region] * n},
            schema=self._vault.arrow)
        result.batches.append(OutputBatch(self._catalog.key_vault.name,
                                          [s.encode() for s in subjects],
                                          self._vault.encode(table)))

    def drop(self, msg: Message, event_id: str | None, reason: str, clause: str, now: int,
             result: BatchResult) -> Record:
        """The drop record of one event (counted in ``result``; the caller places it)."""
        drop = {"event_id": event_id, "reason": reason, "clause": clause,
                "source_topic": msg.topic() or "", "source_partition": msg.partition() or 0,
                "source_offset": msg.offset() or 0, "dropped_at": now,
                "processing_region": self._region}
        self.count_drops(reason, clause, 1, result)
        return Record(self._catalog.drops.name, None, self._codec.encode("DropRecord", drop))

    def drop_records(self, messages: Sequence[Message], event_ids: Sequence[str | None],
                     reasons: Sequence[str], clauses: Sequence[str], now: int
                     ) -> tuple[str, list[bytes]]:
        """Drop records of many events at once (the columnar encoder; same bytes as
        ``drop``); the caller counts them with ``count_drops``."""
        n = len(messages)
        if n < 100:  # the encoder's kernel calls cost more than a few records one by one
            return self._catalog.drops.name, [self._codec.encode("DropRecord", {
                "event_id": e, "reason": r, "clause": c, "source_topic": m.topic() or "",
                "source_partition": m.partition() or 0, "source_offset": m.offset() or 0,
                "dropped_at": now, "processing_region": self._region})
                for m, e, r, c in zip(messages, event_ids, reasons, clauses, strict=True)]
        table = pa.Table.from_pydict({
            "event_id": event_ids, "reason": reasons, "clause": clauses,
            "source_topic": [m.topic() or "" for m in messages],
            "source_partition": [m.partition() or 0 for m in messages],
            "source_offset": [m.offset() or 0 for m in messages],
            "dropped_at": [now] * n, "processing_region": [self._region] * n,
        }, schema=self._drops.arrow)
        return self._catalog.drops.name, self._drops.encode(table)

    @staticmethod
    def count_drops(reason: str, clause: str, n: int, result: BatchResult) -> None:
        result.drops[(reason, clause)] += n
        result.outcomes["dropped"] += n

    def dead_letter(self, msg: Message, exc: Exception, result: BatchResult) -> Record:
        """The dead letter of ``msg`` (see ``dead_letters``)."""
        return self.dead_letters([msg], [exc], result)[0]

    def dead_letters(self, messages: Sequence[Message], errors: Sequence[Exception],
                     result: BatchResult) -> list[Record]:
        """The dead letters of ``messages``, each failed with its ``errors`` entry: the
        original key, bytes and headers, counted in ``result``; the caller places them.
        Encoded in one table, as drop records are, not one fastavro call each (D19)."""
        n = len(messages)
        keys = [m.key() for m in messages]
        topics = [m.topic() or "" for m in messages]
        partitions = [m.partition() for m in messages]
        offsets = [m.offset() for m in messages]
        classes = [type(e).__name__ for e in errors]
        texts = [str(e) for e in errors]
        table = pa.Table.from_pydict({
            "original_key": keys, "original_value": [m.value() for m in messages],
            "source_topic": topics, "source_partition": [p or 0 for p in partitions],
            "source_offset": [o or 0 for o in offsets], "error_class": classes,
            "error_message": [t[:1000] for t in texts],
            "failed_at": [int(time.time() * 1000)] * n,
            "processing_region": [self._region] * n}, schema=self._letters.arrow)
        result.dead_letters.update(classes)
        result.outcomes["dead_letter"] += n
        name = self._catalog.dead_letters.name
        return [Record(name, key, body, (
                    ("source_topic", topic.encode()),
                    ("source_partition", str(partition).encode()),
                    ("source_offset", str(offset).encode()),
                    ("error_class", error_class.encode()),
                    ("error_message", text[:200].encode("utf-8", "replace")),
                    *(msg.headers() or ())))
                for msg, key, body, topic, partition, offset, error_class, text in zip(
                    messages, keys, self._letters.encode(table), topics, partitions,
                    offsets, classes, texts, strict=True)]


def framed(codec: Codec, name: str) -> FramedRecords:
    """The columnar encoder of the catalog's record ``name``, with its frame header."""
    info = codec.catalog.by_name(name)
    return FramedRecords(info.raw, codec.header(info.id))
