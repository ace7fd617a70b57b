"""One batch of consumed messages in, every record to produce out. Pure: no Kafka I/O.

For each message exactly one outcome is accounted (design decision 5): routed to one or
more outputs, dropped with a named reason (a drop record on ``privacy.drops``), or
dead-lettered with its original bytes. Control records (consent) are applied before the
batch's events, so a consent change consumed in the same batch governs them; the engine
then picks the consent state in force at each event's own event time.

Events take the columnar path (``streams.event_columns``, docs/decisions.md D10);
``process_rows`` is the row reference it must equal (one ``engine.decide`` and one
``codec.encode`` per record), kept for differential tests and benchmarks.

State the batch reads and changes lives in ``SubjectStore`` (consent histories, subject
keys, erased subjects); the records that make those changes durable (key-vault entries,
consent-table changelog, tombstones) are returned with the outputs so the worker writes
them in the same transaction.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from streams import engine
from streams.aggregates import Contributions
from streams.avro_columns import ColumnDecoder
from streams.batch_accounting import (
    Accounting,
    BatchResult,
    InvalidEvent,
    Message,
    OutputBatch,
    Record,
    SubjectStore,
    framed,
)
from streams.codec import Codec
from streams.consent import SubjectHistory, apply
from streams.decisions import DeleteSubject, Dropped, Routed
from streams.errors import SerializationError
from streams.event_columns import ColumnarEvents
from streams.ledger import Ledger
from streams.policy import Policy
from streams.pseudonym import forget_cache
from streams.topics import Catalog

__all__ = ["BatchProcessor", "BatchResult", "InvalidEvent", "Message", "Record",
           "SubjectStore", "restore_history"]


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
        self._accounting = Accounting(catalog, codec, self._region)
        self._partials = framed(codec, "AggregatePartial")
        self._columns = ColumnarEvents(catalog, codec, policy, ledger, self._accounting,
                                       self._allowed)
        self._decoder = ColumnDecoder(codec)

    # -- control -----------------------------------------------------------------------

    def apply_consent(self, messages: Iterable[Message], store: SubjectStore,
                      result: BatchResult) -> None:
        """Fold consent records into histories, in offset order; a tombstone erases the
        subject's state."""
        changelog, decode, records = self._catalog.consent_changelog.name, self._codec.decode, \
            result.records
        histories, kept_records = store.histories, store.consent_records
        messages = list(messages)
        values = [msg.value() for msg in messages]
        applied = 0
        for msg, value, decoded in zip(messages, values, self._consent_records(values),
                                       strict=True):
            result.events_in[msg.topic() or ""] += 1
            key = (msg.key() or b"").decode("utf-8", "replace")
            if value is None:  # deletion: forget the subject, tombstone its state
                self.forget(key, store, result)
                applied += 1
                continue
            if self._ledger.is_erased(key):  # a replay must not rebuild an erased subject
                applied += 1
                continue
            try:
                schema, record = decoded or decode(value)
                if schema != "ConsentRecord" or record.get("subject_id") != key:
                    raise InvalidEvent(f"{schema} with subject {record.get('subject_id')!r} "
                                       f"under key {key!r} on the consent topic")
            except SerializationError as exc:
                records.append(self._accounting.dead_letter(msg, exc, result))
                continue
            prior = histories.get(key)
            history = histories[key] = apply(prior, record)
            # A first record is all its history keeps (most records: new subjects).
            kept = [record] if prior is None else _kept([*kept_records.get(key, []), record],
                                                         history)
            kept_records[key] = kept
            records.append(Record(changelog, key.encode(), _json(kept)))
            applied += 1
        result.outcomes["applied"] += applied

    def _consent_records(self, values: list[bytes | None]
                         ) -> list[tuple[str, dict[str, Any]] | None]:
        """Per message, its ``ConsentRecord`` decoded in one native pass over the batch
        (``Table.to_pylist`` gives ``codec.decode``'s dicts, field order included: the
        changelog value is their JSON); None for any other value, which ``codec.decode``
        then decodes or refuses as it always did (the native decoder refuses a few values
        fastavro reads)."""
        where = [i for i, value in enumerate(values) if value is not None]
        present = [value for value in values if value is not None]
        out: list[tuple[str, dict[str, Any]] | None] = [None] * len(values)
        for part in self._decoder.decode(present).parts:
            if part.schema.name == "ConsentRecord":
                for i, record in zip(part.index.tolist(), part.table.to_pylist(), strict=True):
                    out[where[i]] = ("ConsentRecord", record)
        return out

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
        """Decide every raw message of one partition's batch; returns the records to produce."""
        return self.process_partitions([(messages, store)], result)

    def process_partitions(self, batches: Sequence[tuple[Sequence[Message], SubjectStore]],
                           result: BatchResult | None = None) -> BatchResult:
        """Decide the raw messages of several partitions, each with its own store, in one
        columnar pass (bigger tables: each kernel call's fixed cost is paid once)."""
        result = self._started(result)
        self._columns.process(batches, result, int(time.time() * 1000))
        self._accounting.key_entries(result)
        return result

    def process_rows(self, messages: Sequence[Message], store: SubjectStore,
                     result: BatchResult | None = None) -> BatchResult:
        """The row reference of ``process``: one ``engine.decide`` and ``codec.encode`` per
        record. The columnar path must give the same records, in the same order."""
        result = self._started(result)
        contribute = result.contributions.add  # type: ignore[union-attr]
        now = int(time.time() * 1000)
        decode = self._codec.decode
        decide = engine.decide
        policy = self._policy
        acct = self._accounting
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
                records.append(acct.dead_letter(msg, exc, result))
                continue
            if self._ledger.is_erased(subject):
                records.append(acct.drop(msg, event.get("event_id"), "subject_erased", "C15",
                                         now, result))
                continue
            history = store.histories.get(subject)
            state = history.at(event["event_time"]) if history is not None else None
            key = acct.subject_key(subject, store, now, result)
            try:
                decision = decide(schema, event, state, key, policy)
            except SerializationError as exc:
                records.append(acct.dead_letter(msg, exc, result))
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
            elif isinstance(decision, Dropped | DeleteSubject):
                records.append(acct.drop(msg, event.get("event_id"), decision.reason,
                                         decision.clause, now, result))
                if isinstance(decision, DeleteSubject):
                    result.deletions.add(subject)
        acct.key_entries(result)
        return result

    def partials(self, result: BatchResult) -> OutputBatch | None:
        """The batch's aggregate contributions as AggregatePartial records (C20), keyed by
        cell and encoded in columns; None if it has none."""
        if result.contributions is None or not result.contributions.cells:
            return None
        keys, table = result.contributions.table(self._region, self._partials.arrow)
        return OutputBatch(self._catalog.aggregate_partials.name, keys,
                           self._partials.encode(table))

    def _started(self, result: BatchResult | None) -> BatchResult:
        result = result or BatchResult()
        if result.contributions is None:
            result.contributions = Contributions(self._token_key)
        return result


def _json(value: Any) -> bytes:
    """``orjson.dumps`` copied to its size: orjson's bytes keep its whole write buffer
    (8 KiB for a 640-byte consent record), a fresh page or two for each changelog value
    the batch holds until it is produced (8 µs a record against 3 with the copy, D20)."""
    return bytes(memoryview(orjson.dumps(value)))


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
