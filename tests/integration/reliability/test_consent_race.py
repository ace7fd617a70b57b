"""Scenario R4 (issue 9, item 4, clause C1): a targeted-ads revoke racing in-flight events.

What the worker guarantees (docs/decisions.md D3), and exactly what is asserted:

- a revoke (``targeted_ads=false``, ``effective_at=t``) written to ``control.consent``
  before an event is consumed governs that event when ``event_time >= t``, whatever the
  order of the two topics: such an event never reaches ``advertising``;
- an event with ``event_time < t`` is decided with the consent in force at its own time:
  it does reach ``advertising`` whether it is consumed before or after the revoke;
- an event with ``event_time >= t`` that the worker decided before the revoke was even
  written is not recalled (D3); such events exist only in the live phase and are
  counted, not asserted.

Phase A writes revokes and events of half the subjects in a seeded random interleaving
across the consent and raw topics *before* the worker starts (all revokes are written
before any event is consumed: zero advertising outputs at or after t). Phase B writes the
other half one message at a time, acknowledged in a seeded random order, while the
worker runs; an event acknowledged after its subject's revoke is covered by the
guarantee.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from streams import kafka_clients
from streams.codec import default_codec
from streams.decisions import Routed
from streams.infra import load_policy_for
from tests.factories import make_consent, sample_events
from tests.integration.harness import (
    expected_outcomes,
    pipeline_settings,
    produce,
    read_topic,
    running_worker,
    wait_for_leaders,
)
from tests.integration.reliability.worker_proc import GroupProgress, wait_until

SEED = 4242
SUBJECTS = 40


def _ad_eligible(settings: Any, rng: random.Random) -> tuple[dict[str, dict[str, Any]],
                                                              list[tuple[str, dict[str, Any]]]]:
    events = sample_events(6_000, seed=SEED, subjects=SUBJECTS)
    sids = sorted({e["subject_id"] for _, e in events})
    consents = {s: make_consent(s, rng) for s in sids}  # adult US-CA, targeted ads on
    decided = expected_outcomes(events, consents.values(), load_policy_for(settings))
    ads = [(s, e) for s, e in events if isinstance(d := decided[e["event_id"]], Routed)
           and any(o.destination == "advertising" for o in d.outputs)]
    return consents, ads


def test_consent_revoke_race_no_advertising_at_or_after_revoke(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    print(f"R4: seed={SEED} subjects={SUBJECTS}")
    settings = pipeline_settings(kafka_bootstrap, tmp_path, f"race-{unique}.")
    cat = settings.catalog
    wait_for_leaders(settings)
    rng = random.Random(SEED)
    consents, ads = _ad_eligible(settings, rng)
    codec = default_codec()
    topic_of = {s.name: cat.by_name(settings.topic_prefix + (s.topic or "")).name
                for s in codec.catalog if s.role == "input"}
    by_subject: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for schema, event in ads:
        by_subject.setdefault(event["subject_id"], []).append((schema, event))
    subjects = sorted(by_subject)
    assert len(subjects) >= 10, "the sample should give many subjects ad-eligible events"
    revoke_at: dict[str, int] = {}
    messages: dict[str, list[tuple[str, bytes, bytes]]] = {}
    for s in subjects:
        times = sorted(e["event_time"] for _, e in by_subject[s])
        t = times[len(times) // 2]  # about half before, half at or after the revoke
        revoke_at[s] = t
        revoke = dict(consents[s], targeted_ads=False, effective_at=t, recorded_at=t)
        messages[s] = [(cat.consent.name, s.encode(), codec.encode("ConsentRecord", revoke))]
        messages[s] += [(topic_of[schema], s.encode(), codec.encode(schema, e))
                        for schema, e in by_subject[s]]
    produce(settings, cat.consent.name, [(s, consents[s]) for s in subjects],
            schema="ConsentRecord")

    rng.shuffle(subjects)
    phase_a, phase_b = subjects[: len(subjects) // 2], subjects[len(subjects) // 2:]
    producer = kafka_clients.producer(kafka_bootstrap)

    def interleave(group: list[str]) -> list[tuple[str, bytes, bytes]]:
        pending = [list(messages[s]) for s in group]
        for q in pending:
            rng.shuffle(q)  # the revoke anywhere among its subject's events
        out = []
        while any(pending):
            q = rng.choice([q for q in pending if q])
            out.append(q.pop())
        return out

    for topic, key, value in interleave(phase_a):
        producer.produce(topic, key=key, value=value)
    assert producer.flush(60) == 0

    written_after_revoke: set[str] = set()  # event ids acknowledged after their revoke
    progress = GroupProgress(settings)
    with running_worker(settings):
        revoked: set[bytes] = set()
        for topic, key, value in interleave(phase_b):
            producer.produce(topic, key=key, value=value)
            assert producer.flush(30) == 0  # acknowledged: this is the write order
            if topic == cat.consent.name:
                revoked.add(key)
            elif key in revoked:
                written_after_revoke.add(codec.decode(value)[1]["event_id"])
        progress.refresh_ends()
        wait_until(progress.drained, 120, "the worker consumes every message")
    progress.close()

    delivered = {codec.decode(m.value())[1]["event_id"]
                 for m in read_topic(kafka_bootstrap, cat.destination("advertising").name)}
    before, after_a, after_b_covered, after_b_early = [], [], [], []
    for s in subjects:
        for _, e in by_subject[s]:
            eid = e["event_id"]
            if e["event_time"] < revoke_at[s]:
                before.append(eid)
            elif s in phase_a:
                after_a.append(eid)
            elif eid in written_after_revoke:
                after_b_covered.append(eid)
            else:
                after_b_early.append(eid)
    leaked = [i for i in after_a + after_b_covered if i in delivered]
    missing = [i for i in before if i not in delivered]
    early_delivered = sum(1 for i in after_b_early if i in delivered)
    print(f"R4: events before t={len(before)} (delivered {len(before) - len(missing)}), "
          f"at/after t covered={len(after_a) + len(after_b_covered)} (delivered "
          f"{len(leaked)}), at/after t written before the revoke={len(after_b_early)} "
          f"(delivered {early_delivered}, not recalled by design)")
    assert after_a and after_b_covered and before
    assert leaked == [], f"C1: advertising outputs at or after the revoke: {leaked[:5]}"
    assert missing == [], f"events before the revoke must still reach advertising: {missing[:5]}"
