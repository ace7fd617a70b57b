"""The worker on the real broker: every consumed event has exactly one accounted outcome."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from streams.codec import default_codec
from streams.topics import DESTINATIONS
from tests.factories import make_consent, sample_events
from tests.integration.harness import (
    decoded,
    pipeline_settings,
    produce,
    read_topic,
    running_worker,
)

BAD = [b"", b"\x00", b"\x01\x00\x00\x00\x01garbage", b"\x00\x00\x00\x03\xe7\x02",
       b"\x00\x00\x00\x00\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"]


def _ledger(settings, expected: int) -> dict[str, list[str]]:
    """event id -> outcomes, from every output, the drops and the dead letters."""
    cat = settings.catalog
    ledger: dict[str, list[str]] = {}
    for dest in DESTINATIONS:
        for rec in decoded(read_topic(settings.kafka_bootstrap, cat.destination(dest).name)):
            if "event_id" in rec:
                ledger.setdefault(rec["event_id"], []).append(f"out:{dest}")
    for rec in decoded(read_topic(settings.kafka_bootstrap, cat.drops.name)):
        ledger.setdefault(rec["event_id"] or f"?{rec['source_offset']}", []).append(
            f"drop:{rec['clause']}")
    return ledger


def test_every_event_has_exactly_one_outcome(kafka_bootstrap: str, unique: str,
                                            tmp_path: Path) -> None:
    settings = pipeline_settings(kafka_bootstrap, tmp_path, f"acct-{unique}.")
    cat = settings.catalog
    rng = random.Random(3)
    events = sample_events(5_000, seed=11, subjects=200)
    subjects = sorted({e["subject_id"] for _, e in events})
    consents = {s: make_consent(s, rng, jurisdiction=rng.choice(["US-CA", "EU", "US"]))
                for s in subjects[: len(subjects) // 2]}
    produce(settings, cat.consent.name, list(consents.items()), schema="ConsentRecord")
    codec = default_codec()
    topic_of = {s.name: cat.by_name(settings.topic_prefix + s.topic).name
                for s in codec.catalog if s.role == "input"}
    by_topic: dict[str, list] = {}
    for schema, event in events:
        by_topic.setdefault(topic_of[schema], []).append(
            (event["subject_id"], codec.encode(schema, event)))
    bad = [(f"bad-{i}", BAD[i % len(BAD)]) for i in range(50)]
    by_topic[cat.raw_server.name].extend(bad)
    for topic, records in by_topic.items():
        produce(settings, topic, records)

    with running_worker(settings):
        letters = read_topic(kafka_bootstrap, cat.dead_letters.name,
                             until=lambda m: len(m) >= len(bad), timeout=90)
        drops_and_outs = _wait_for_all(settings, len(events))
    assert len(letters) == len(bad)
    assert sorted(m.value() for m in letters) != []
    letter_records = decoded(letters)
    assert sorted(r["original_value"] for r in letter_records) == sorted(v for _, v in bad)
    assert all(dict(m.headers())["source_topic"] == cat.raw_server.name.encode()
               for m in letters)
    # The pure engine says where each event may go; events whose only outputs are
    # unlinkable by design (no event id: C7/C17) are accounted by exact counts.
    expected = _expected_destinations(events, consents)
    linkable = {e["event_id"] for _, e in events if expected[e["event_id"]] - UNLINKABLE}
    unlinkable_only = [i for i, d in expected.items() if d and not d - UNLINKABLE]
    dropped = {i for i, d in expected.items() if not d}
    assert set(drops_and_outs) == linkable | dropped
    for dest in UNLINKABLE:
        n_expected = sum(1 for d in expected.values() if dest in d)
        got = read_topic(kafka_bootstrap, cat.destination(dest).name,
                         until=lambda m, n=n_expected: len(m) >= n, timeout=60)
        assert len(got) == n_expected, dest
    assert unlinkable_only, "the mix should exercise unlinkable-only outputs"
    outcome_kinds = Counter("drop" if any(o.startswith("drop") for o in v) else "out"
                            for v in drops_and_outs.values())
    # exactly one outcome: never both dropped and delivered, never dropped twice
    for event_id, outcomes in drops_and_outs.items():
        drops = [o for o in outcomes if o.startswith("drop")]
        assert len(drops) <= 1 and (not drops or len(outcomes) == 1), (event_id, outcomes)
        assert len(outcomes) == len(set(outcomes)), (event_id, outcomes)  # exactly once
    assert outcome_kinds["out"] > 0 and outcome_kinds["drop"] > 0


UNLINKABLE = {"ml_training", "metadata_matching"}


def _expected_destinations(events, consents) -> dict[str, set[str]]:
    from streams.consent import apply
    from streams.decisions import Routed
    from streams.engine import decide
    from streams.policy import default_policy

    policy = default_policy()
    out = {}
    for schema, event in events:
        consent = consents.get(event["subject_id"])
        state = apply(None, consent).at(event["event_time"]) if consent else None
        decision = decide(schema, event, state, b"k" * 32, policy)
        out[event["event_id"]] = ({o.destination for o in decision.outputs}
                                  if isinstance(decision, Routed) else set())
    return out


def _wait_for_all(settings, n: int) -> dict[str, list[str]]:
    import time

    deadline = time.monotonic() + 120
    while True:
        ledger = _ledger(settings, n)
        if len(ledger) >= n or time.monotonic() > deadline:
            return ledger
        time.sleep(0.5)  # poll the output topics until every event is accounted
