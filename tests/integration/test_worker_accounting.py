"""The worker on the real broker: every consumed event has exactly one accounted outcome.

100,000 generated events (about 1% bad records of every kind) go through one worker.
The ledger is made of the committed outputs, the drop records and the dead letters:
every good event is in it exactly once (routed by event id, or one named drop), every
bad record is exactly one dead letter, and events routed only to outputs that carry no
event id by design (ML training C7, metadata matching C17) are counted against the
pure engine's decisions.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from streams import kafka_clients
from streams.codec import default_codec
from streams.decisions import Routed
from streams.errors import SerializationError
from streams.infra import load_policy_for
from streams.topics import DESTINATIONS, Catalog
from streams.traffic_model import TrafficConfig
from streams.traffic_stream import TrafficStream
from tests.integration.harness import (
    decoded,
    expected_outcomes,
    pipeline_settings,
    produce,
    read_topic,
    running_worker,
)

EVENTS = 100_000
UNLINKABLE = {"ml_training", "metadata_matching"}


def _classify(messages: list[tuple[str, bytes, bytes]]) -> tuple[list, list, list[bytes]]:
    """(input events, consent records, bad records' bytes) as the worker must see them."""
    codec = default_codec()
    allowed = {s.name: s.topic for s in codec.catalog if s.role == "input"}
    events: list = []
    consents: list = []
    bad: list[bytes] = []
    for topic, key, value in messages:
        if topic == "control.requests":
            continue
        try:
            schema, record = codec.decode(value)
        except SerializationError:
            bad.append(value)
            continue
        if topic == "control.consent":
            consents.append(record)
        elif allowed.get(schema) != topic or record["subject_id"].encode() != key:
            bad.append(value)
        else:
            events.append((schema, record))
    return events, consents, bad


def _wait_drained(settings: Any, timeout: float = 300.0) -> None:
    cat = settings.catalog
    topics = [t.name for t in (*cat.raw, cat.consent)]
    deadline = time.monotonic() + timeout
    group = settings.consumer_group("worker")
    while kafka_clients.group_lag(settings.kafka_bootstrap, group, topics):
        assert time.monotonic() < deadline, "the worker did not drain its inputs"
        time.sleep(0.5)  # polling the worker's committed offsets


def test_every_event_has_exactly_one_outcome(kafka_bootstrap: str, unique: str,
                                            tmp_path: Path) -> None:
    settings = pipeline_settings(kafka_bootstrap, tmp_path, f"acct-{unique}.")
    cat = settings.catalog
    stream = TrafficStream(TrafficConfig(seed=11, subjects=3_000, bad_fraction=0.01))
    messages: list[tuple[str, bytes, bytes]] = []
    while stream.events < EVENTS:
        messages += stream.batch(min(5_000, EVENTS - stream.events))
    prefixed = {base.name: mine.name for base, mine in zip(Catalog(), cat, strict=True)}
    by_topic: dict[str, list] = {}
    for topic, key, value in messages:
        by_topic.setdefault(prefixed[topic], []).append((key.decode(), value))
    for topic, records in by_topic.items():
        produce(settings, topic, records)
    events, consents, bad = _classify(messages)
    expected = expected_outcomes(events, consents, load_policy_for(settings))
    assert 0.005 < len(bad) / len(messages) < 0.02

    with running_worker(settings):
        _wait_drained(settings)

    outputs = {d: decoded(read_topic(kafka_bootstrap, cat.destination(d).name))
               for d in DESTINATIONS if d != "aggregates"}
    drops = decoded(read_topic(kafka_bootstrap, cat.drops.name))
    letters = read_topic(kafka_bootstrap, cat.dead_letters.name)

    ledger: dict[str, list[str]] = {}
    for dest, records in outputs.items():
        for rec in records:
            if "event_id" in rec:
                ledger.setdefault(rec["event_id"], []).append(f"out:{dest}")
    for rec in drops:
        ledger.setdefault(rec["event_id"], []).append(f"drop:{rec['clause']}")

    want_routed = {i: {o.destination for o in d.outputs} for i, d in expected.items()
                   if isinstance(d, Routed)}
    linkable = {i for i, dests in want_routed.items() if dests - UNLINKABLE}
    dropped = set(expected) - set(want_routed)
    assert set(ledger) == linkable | dropped
    for event_id, outcomes in ledger.items():
        assert len(outcomes) == len(set(outcomes)), (event_id, outcomes)  # no duplicate
        if event_id in dropped:
            assert len(outcomes) == 1 and outcomes[0].startswith("drop:"), outcomes
        else:
            assert {o.removeprefix("out:") for o in outcomes} == \
                want_routed[event_id] - UNLINKABLE, (event_id, outcomes)
    for dest in UNLINKABLE:
        assert len(outputs[dest]) == sum(dest in d for d in want_routed.values()), dest
    # every bad record is exactly one dead letter, with its original bytes and source
    assert Counter(r["original_value"] for r in decoded(letters)) == Counter(bad)
    assert all(dict(m.headers() or [])["source_topic"] in {t.name.encode() for t in cat.raw}
               for m in letters)
