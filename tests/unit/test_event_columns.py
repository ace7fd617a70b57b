"""The worker's columnar event path against its row reference (design decision 5, D10).

``BatchProcessor.process`` (decode_columns -> decide_table -> arrow_avro) and
``process_rows`` (codec.decode -> engine.decide -> codec.encode per record) get the same
messages and equal stores; every record they return, in order, and every count behind
the metrics must be equal: outputs byte for byte, drop records and dead letters up to
their timestamps, key-vault entries up to their random keys, the C8 deletions and the
C20 contributions. The batch mixes traffic-model events (bad records of every kind,
under-13 subjects, no-consent subjects), messages without a value, events on the wrong
topic or under another subject's key, erased subjects (C15) and subjects with no key yet;
each schema's group decided by the batch engine, by the row engine (small groups), or by
whichever ``COLUMNAR_FROM`` picks.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import consent, event_columns
from streams.batch_accounting import BatchResult, Record, SubjectStore
from streams.codec import default_codec
from streams.errors import SerializationError
from streams.key_vault import Keyring
from streams.ledger import Ledger
from streams.policy import default_policy
from streams.processor import BatchProcessor
from streams.topics import Catalog
from streams.traffic_model import TrafficConfig
from streams.traffic_stream import TrafficStream

pytestmark = pytest.mark.unit

CODEC = default_codec()
CATALOG = Catalog()


class Msg:
    """A consumed message as the processor reads it."""

    def __init__(self, topic: str, key: bytes | None, value: bytes | None, offset: int,
                 partition: int = 0) -> None:
        self._topic, self._key, self._value = topic, key, value
        self._offset, self._partition = offset, partition

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return [("producer", b"test")]


def _setup(events: int, seed: int = 5) -> tuple[BatchProcessor, SubjectStore, list[Msg]]:
    ring = Keyring(os.urandom(32), ())
    ledger = Ledger(ring)
    ledger.new_key_record()
    processor = BatchProcessor(CATALOG, CODEC, default_policy(), ledger, os.urandom(32))
    stream = TrafficStream(TrafficConfig(seed=seed, subjects=500, bad_fraction=0.05,
                                         request_rate=0.0))
    raw: list[Msg] = []
    consent: list[Msg] = []
    while stream.events < events:
        for topic, key, value in stream.batch(min(2_000, events - stream.events)):
            (consent if topic == CATALOG.consent.name else raw).append(
                Msg(topic, key, value, len(raw) + len(consent)))
    store = SubjectStore(ring)
    processor.apply_consent(consent, store, BatchResult())
    subjects = sorted({m.key().decode() for m in raw if m.key()})  # type: ignore[union-attr]
    for s in subjects[: len(subjects) * 9 // 10]:  # the rest are new to the worker
        store.keys[s] = os.urandom(32)
    for s in subjects[:: 37]:  # erased: drops, not outputs (C15)
        ledger.refs.add(ledger.ref(s))  # type: ignore[arg-type]
    good = next(m for m in raw if m.topic() == CATALOG.raw_playback.name
                and CODEC.decode(m.value())[0] == "PlaybackEvent")  # type: ignore[arg-type]
    n = len(raw)
    raw[10:10] = [
        Msg(CATALOG.raw_playback.name, b"s1", None, n),  # no value
        Msg(CATALOG.raw_server.name, good.key(), good.value(), n + 1),  # wrong topic
        Msg(good.topic(), b"someone-else", good.value(), n + 2),  # another subject's key
        Msg(good.topic(), None, good.value(), n + 3),  # no key
    ]
    return processor, store, raw


def _by_topic(result: BatchResult) -> dict[str, list[Any]]:
    """Per topic its records in order (all a partition can show), without what differs
    by design: the time a drop or dead letter was written, a decoder's error message
    (its class is compared), and new subjects' random keys (their subjects are compared)."""
    records = [*result.records, *(Record(b.topic, k, v) for b in result.batches
                                  for k, v in zip(b.keys, b.values, strict=True))]
    out: dict[str, list[Any]] = {}
    for rec in records:
        if rec.topic == CATALOG.key_vault.name:
            continue
        entry: Any = rec
        if rec.topic in (CATALOG.drops.name, CATALOG.dead_letters.name):
            value = dict(CODEC.decode(rec.value)[1])  # type: ignore[arg-type]
            value.pop("dropped_at", None)
            value.pop("failed_at", None)
            headers = rec.headers
            if value.get("error_class") not in (None, "InvalidEvent"):
                # A decoder's message is its own (the reference's names a buffer address).
                value.pop("error_message")
                headers = tuple(h for h in headers if h[0] != "error_message")
            entry = (rec.key, value, headers)
        out.setdefault(rec.topic, []).append(entry)
    return out


def _new_subjects(result: BatchResult) -> set[bytes | None]:
    return {key for b in result.batches if b.topic == CATALOG.key_vault.name for key in b.keys}


def _same(columnar: BatchResult, rows: BatchResult) -> None:
    assert _by_topic(columnar) == _by_topic(rows)
    assert _new_subjects(columnar) == _new_subjects(rows)
    for name in ("outcomes", "events_in", "out", "drops", "dead_letters", "deletions"):
        assert getattr(columnar, name) == getattr(rows, name), name
    assert sorted(columnar.event_times) == sorted(rows.event_times)
    assert columnar.contributions is not None and rows.contributions is not None
    assert columnar.contributions.cells == rows.contributions.cells


def _run_both(processor: BatchProcessor, store: SubjectStore, messages: list[Msg]
              ) -> tuple[BatchResult, BatchResult]:
    columnar_store = SubjectStore(store.keyring, dict(store.histories),
                                  dict(store.consent_records), dict(store.keys))
    columnar = processor.process(messages, columnar_store)
    # The row run gets the keys the columnar run made, so pseudonyms agree; which
    # subjects needed a new key is compared on a third run with the original keys.
    row_store = SubjectStore(store.keyring, dict(store.histories),
                             dict(store.consent_records), dict(columnar_store.keys))
    rows = processor.process_rows(messages, row_store)
    fresh = processor.process_rows(messages, SubjectStore(
        store.keyring, dict(store.histories), dict(store.consent_records), dict(store.keys)))
    assert _new_subjects(columnar) == _new_subjects(fresh) != set()
    rows.batches += [b for b in columnar.batches if b.topic == CATALOG.key_vault.name]
    return columnar, rows


@pytest.mark.parametrize("columnar_from", [0, event_columns.COLUMNAR_FROM, 10**9],
                         ids=["all-columnar", "by-size", "all-row-engine"])
def test_mixed_batch_every_message_one_outcome_equal_to_row_path(
        columnar_from: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_columns, "COLUMNAR_FROM", columnar_from)
    processor, store, raw = _setup(6_000)
    columnar, rows = _run_both(processor, store, raw)
    _same(columnar, rows)
    accounted = sum(columnar.outcomes[k] for k in ("routed", "dropped", "dead_letter"))
    assert accounted == len(raw)  # design decision 5: exactly one outcome per message
    kinds = {error for error in columnar.dead_letters}
    assert {"FramingError", "InvalidEvent", "MalformedRecordError"} <= kinds
    assert columnar.drops[("subject_erased", "C15")] > 0
    assert columnar.drops[("under_13", "C8")] > 0 and columnar.deletions
    assert columnar.out["analytics"] > 0 and columnar.contributions
    assert columnar.contributions.cells


def test_c20_partials_in_columns_are_the_row_codecs_records() -> None:
    """The worker writes a batch's aggregate partials encoded in columns: the same keys and
    bytes as ``codec.encode`` of each ``Contributions.records`` record, in cell order."""
    processor, store, raw = _setup(3_000)
    result = processor.process(raw, store)
    assert result.contributions is not None and len(result.contributions.cells) > 10
    batch = processor.partials(result)
    assert batch is not None and batch.topic == CATALOG.aggregate_partials.name
    expected = list(result.contributions.records(default_policy().processing_region))
    assert batch.keys == [key for key, _ in expected]
    assert batch.values == [CODEC.encode("AggregatePartial", rec) for _, rec in expected]
    assert processor.partials(BatchResult()) is None


def test_new_keys_vault_entries_in_columns_are_the_row_codecs_records() -> None:
    """A batch's new subject keys are written as key-vault entries encoded in one table:
    the bytes ``codec.encode`` gives each entry, keyed by subject, unwrapping to the key."""
    processor, store, raw = _setup(2_000)
    result = processor.process(raw, store)
    (batch,) = [b for b in result.batches if b.topic == CATALOG.key_vault.name]
    assert len(batch.keys) > 5 and not result.new_keys
    for key, value in zip(batch.keys, batch.values, strict=True):
        schema, entry = CODEC.decode(value)
        assert schema == "KeyVaultEntry" and entry["subject_id"].encode() == key
        assert value == CODEC.encode("KeyVaultEntry", entry)
        assert store.keyring.unwrap(entry["subject_id"], entry["wrapped_key"]) == \
            store.keys[entry["subject_id"]]


def test_consent_at_each_event_time_when_histories_start_late_or_change(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """D3 per row: the columnar path looks subjects up once each, so events before a
    subject's first consent record (no state: C9 fails closed) and subjects whose consent
    changes within the batch must still get the state in force at their own time."""
    monkeypatch.setattr(event_columns, "COLUMNAR_FROM", 0)
    processor, store, raw = _setup(4_000, seed=11)
    events = []
    for m in raw:
        with contextlib.suppress(SerializationError):  # the bad records
            events.append(CODEC.decode(m.value())[1])  # type: ignore[arg-type]
    middle = sorted(e["event_time"] for e in events)[len(events) // 2]
    late = set()
    for subject, history in list(store.histories.items())[::3]:  # starts mid-batch
        if len(history.times) == 1:
            store.histories[subject] = consent.SubjectHistory((middle,), history.states)
            late.add(subject)
    assert any(e["subject_id"] in late and e["event_time"] < middle for e in events)
    assert any(len(h.times) > 1 for h in store.histories.values())
    columnar, rows = _run_both(processor, store, raw)
    _same(columnar, rows)


def test_several_partitions_in_one_pass_equal_one_pass_each() -> None:
    processor, store, raw = _setup(3_000, seed=9)
    half = len(raw) // 2
    first, second = raw[:half], raw[half:]
    other = SubjectStore(store.keyring, dict(store.histories), dict(store.consent_records),
                         dict(store.keys))
    together = processor.process_partitions([(first, store), (second, other)])
    assert _new_subjects(together)
    apart = processor.process_rows(first, SubjectStore(
        store.keyring, dict(store.histories), dict(store.consent_records), dict(store.keys)))
    processor.process_rows(second, SubjectStore(
        other.keyring, dict(other.histories), dict(other.consent_records), dict(other.keys)),
        apart)
    # The row runs read the stores after the columnar run: its new keys, no new entries.
    apart.batches += [b for b in together.batches if b.topic == CATALOG.key_vault.name]
    _same(together, apart)


def test_output_that_does_not_encode_is_a_dead_letter_with_none_of_its_outputs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_columns, "COLUMNAR_FROM", 0)
    processor, store, raw = _setup(1_000, seed=3)
    encode = event_columns.encode_framed
    spoiled: list[str] = []

    def spoil_first(table: pa.Table, schema: Any, header: bytes) -> pa.Array:
        bodies = encode(table, schema, header)
        if schema["name"] == "AnalyticsEvent" and table.num_rows and not spoiled:
            spoiled.append(table.column("event_id")[0].as_py())
            return pa.array([None, *bodies.to_pylist()[1:]], pa.binary())
        return bodies

    monkeypatch.setattr(event_columns, "encode_framed", spoil_first)
    result = processor.process(raw, store)
    assert spoiled
    accounted = sum(result.outcomes[k] for k in ("routed", "dropped", "dead_letter"))
    assert accounted == len(raw)
    letters = [CODEC.decode(r.value)[1] for r in result.records  # type: ignore[arg-type]
               if r.topic == CATALOG.dead_letters.name]
    spoiled_letters = [d for d in letters if spoiled[0] in d["error_message"]
                       and "does not encode" in d["error_message"]]
    assert len(spoiled_letters) == 1
    assert spoiled_letters[0]["error_class"] == "MalformedRecordError"
    assert spoiled_letters[0]["original_value"] in {m.value() for m in raw}
    records = _by_topic(result)
    outputs = [CODEC.decode(r.value)[1] for name in processor._dest_topic  # type: ignore[arg-type]
               for r in records.get(CATALOG.destination(name).name, [])]
    assert all(o.get("event_id") != spoiled[0] for o in outputs)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.dictionaries(st.sampled_from("abcd"), st.text(max_size=3),
                                                     max_size=4)), max_size=12),
       st.integers(0, 12), st.integers(0, 12))
def test_map_values_equal_arrow_map_lookup_on_sliced_and_null_maps(
        maps: list[dict[str, str] | None], start: int, length: int) -> None:
    """C20 cells read their dimensions with ``map_values``: Arrow's own lookup is the rule."""
    array = pa.array([None if m is None else list(m.items()) for m in maps],
                     pa.map_(pa.string(), pa.string())).slice(start, length)
    names = ("a", "c", "z")
    found = event_columns.map_values(array, names)
    assert [f.to_pylist() for f in found] == [
        pc.map_lookup(array, name, "first").to_pylist() for name in names]
