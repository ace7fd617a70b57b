"""Consent records applied in one native decoding pass equal one ``codec.decode`` each (D20).

``BatchProcessor.apply_consent`` decodes a batch's ``ConsentRecord`` values with the
native decoder and hands every other value to ``codec.decode``. Against the same batch
decoded by ``codec.decode`` alone, it must give the same records to produce (changelog
values byte for byte: they are the JSON of the decoded dicts, key order included), the
same dead letters, histories, kept records and counts. The batch mixes the traffic
model's consent records with tombstones (C15), erased subjects, several records of one
subject (applied in offset order), records under another subject's key, other schemas
on the consent topic, corrupt bodies, and a boolean byte fastavro reads but the native
decoder refuses.
"""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from streams.batch_accounting import BatchResult, SubjectStore
from streams.codec import default_codec
from streams.key_vault import Keyring
from streams.ledger import Ledger
from streams.policy import default_policy
from streams.processor import BatchProcessor
from streams.topics import Catalog
from streams.traffic_model import TrafficConfig
from streams.traffic_stream import TrafficStream
from tests.factories import make_consent, make_record
from tests.unit.test_event_columns import Msg

pytestmark = pytest.mark.unit

CODEC = default_codec()
CATALOG = Catalog()
TOPIC = CATALOG.consent.name


def _consent(subject: str, rng: random.Random, **overrides: Any) -> bytes:
    return CODEC.encode("ConsentRecord", make_consent(subject, rng, **overrides))


def _boolean_two(subject: str, rng: random.Random) -> bytes:
    """A consent record whose ``limit_sensitive`` byte is 2 (fastavro reads True)."""
    record = make_consent(subject, rng)
    yes = CODEC.encode("ConsentRecord", {**record, "limit_sensitive": True})
    no = CODEC.encode("ConsentRecord", {**record, "limit_sensitive": False})
    (at,) = [i for i in range(len(yes)) if yes[i] != no[i]]
    return yes[:at] + b"\x02" + yes[at + 1:]


def _batch(ledger: Ledger) -> list[Msg]:
    rng = random.Random(1)
    stream = TrafficStream(TrafficConfig(seed=5, subjects=300, bad_fraction=0.05))
    values = []
    while len(values) < 300:
        values += [(k, v) for t, k, v in stream.batch(2_000) if t == TOPIC]
    ledger.refs.add(ledger.ref("acct-erased"))  # type: ignore[arg-type]
    playback = CODEC.encode("PlaybackEvent", make_record("PlaybackEvent", rng))
    good = _consent("acct-x", rng)
    crafted = [
        (b"acct-a", _consent("acct-a", rng, effective_at=10, recorded_at=10)),
        (b"acct-a", _consent("acct-a", rng, effective_at=5, recorded_at=10)),
        (b"acct-a", _consent("acct-a", rng, effective_at=10, recorded_at=9)),  # older: ignored
        (b"acct-a", None),  # deletion: forget, then a new first record
        (b"acct-a", _consent("acct-a", rng, effective_at=20, recorded_at=20)),
        (b"acct-erased", _consent("acct-erased", rng)),
        (b"acct-y", good),  # another subject's record under this key
        (None, good),
        (b"acct-p", playback),  # not a consent record
        (b"acct-x", good[:-3]),  # truncated
        (b"acct-x", good + b"\x00"),  # trailing byte
        (b"acct-x", good[:1] + b"\x00\x00\x27\x0f" + good[5:]),  # unknown schema id
        (b"acct-x", b"\x01" + good[1:]),  # wrong magic byte
        (b"acct-t", _boolean_two("acct-t", rng)),
        (b"acct-x", good),
    ]
    values[100:100] = crafted
    return [Msg(TOPIC, key, value, offset) for offset, (key, value) in enumerate(values)]


RING = Keyring(b"k" * 32, ())


def _ledger() -> Ledger:
    ledger = Ledger(RING)
    ledger.new_key_record()
    return ledger


def _applied(messages: list[Msg], ledger: Ledger, per_message: bool
             ) -> tuple[BatchResult, SubjectStore]:
    processor = BatchProcessor(CATALOG, CODEC, default_policy(), ledger, b"t" * 32)
    if per_message:  # the reference: every value through codec.decode
        processor._consent_records = lambda ms: [None] * len(ms)  # type: ignore[method-assign]
    store, result = SubjectStore(RING), BatchResult()
    processor.apply_consent(messages, store, result)
    return result, store


def _comparable(result: BatchResult) -> list[Any]:
    """The records to produce, each dead letter decoded, without its timestamp and the
    address of fastavro's buffer in its error message."""
    out: list[Any] = []
    for r in result.records:
        if r.topic == CATALOG.dead_letters.name:
            letter = CODEC.decode(r.value)[1]  # type: ignore[arg-type]
            del letter["failed_at"]
            out.append(re.sub(r" at 0x[0-9a-f]+", "", repr((r.topic, r.key, letter, r.headers))))
        else:
            out.append(r)
    return out


def test_one_native_pass_applies_consent_as_the_codec_one_by_one() -> None:
    ledger = _ledger()
    messages = _batch(ledger)
    native, native_store = _applied(messages, ledger, per_message=False)
    reference, reference_store = _applied(messages, ledger, per_message=True)
    assert _comparable(native) == _comparable(reference)
    assert native.outcomes == reference.outcomes and native.events_in == reference.events_in
    assert native.dead_letters == reference.dead_letters
    assert native_store.histories == reference_store.histories
    assert native_store.consent_records == reference_store.consent_records
    assert [list(r) for rs in native_store.consent_records.values() for r in rs] == [
        list(r) for rs in reference_store.consent_records.values() for r in rs]  # key order
    assert native.dead_letters["MalformedRecordError"] >= 2
    assert native.dead_letters["InvalidEvent"] >= 2
    assert native_store.histories["acct-t"].latest.limit_sensitive is True  # type: ignore[union-attr]
    assert [s.effective_at for s in native_store.histories["acct-a"].states] == [20]
    assert "acct-erased" not in native_store.histories
    assert len(native_store.histories) > 200


def test_a_batch_without_consent_records() -> None:
    messages = [Msg(TOPIC, b"acct-a", None, 0), Msg(TOPIC, b"acct-b", b"", 1)]
    ledger = _ledger()
    native, _ = _applied(messages, ledger, per_message=False)
    reference, _ = _applied(messages, ledger, per_message=True)
    assert _comparable(native) == _comparable(reference)
    assert native.outcomes == reference.outcomes
