"""The exactly-once ledger of a run: what each input deserves vs what was committed.

Expected outcomes come from the pure engine (``streams.engine.decide``) over the
regenerated, seeded input (the generator is pure), with every consent record folded in.
Actual outcomes are read with ``isolation.level=read_committed`` from the outputs, the
drop topic and the dead-letter topic. Linkable outcomes (outputs carrying ``event_id``,
drop records) are matched per event id; outputs that are unlinkable by design (C7/C17:
no event id) are matched by exact counts; dead letters by their source position and
original bytes. Any duplicate or loss shows up as a count difference.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from streams.codec import default_codec
from streams.consent import SubjectHistory, apply
from streams.decisions import DeleteSubject, Dropped, Routed
from streams.engine import decide
from streams.errors import SerializationError
from streams.policy import Policy
from streams.settings import Settings
from streams.topics import DESTINATIONS, Catalog
from tests.integration.harness import read_topic

UNLINKABLE = frozenset({"ml_training", "metadata_matching"})
SUBJECT_KEY = b"k" * 32  # destinations do not depend on the key's value


@dataclass
class Expected:
    """What a set of input messages deserves."""

    inputs: int = 0
    linkable: Counter[tuple[str, str]] = field(default_factory=Counter)  # (event id, where)
    unlinkable: Counter[str] = field(default_factory=Counter)  # destination -> count
    dead_letters: Counter[bytes] = field(default_factory=Counter)  # original value -> count


@dataclass
class Actual:
    linkable: Counter[tuple[str, str]] = field(default_factory=Counter)
    unlinkable: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[bytes] = field(default_factory=Counter)
    dead_letter_positions: Counter[tuple[str, int, int]] = field(default_factory=Counter)
    headers: list[dict[str, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    inputs: int
    outcomes: int
    duplicates: int
    losses: int
    unexpected: int
    dead_letters: int

    def __str__(self) -> str:
        return (f"inputs={self.inputs} outcomes={self.outcomes} duplicates={self.duplicates} "
                f"losses={self.losses} unexpected={self.unexpected} "
                f"dead_letters={self.dead_letters}")


def expected_from(messages: Iterable[tuple[str, bytes | None, bytes]], catalog: Catalog,
                  policy: Policy) -> Expected:
    """``messages`` are (logical topic, key, value) as the generator emits them, in order."""
    codec = default_codec()
    raw = {t.name for t in Catalog().raw}
    consent_topic = Catalog().consent.name
    histories: dict[str, SubjectHistory] = {}
    events: list[tuple[str, bytes | None, bytes]] = []
    for topic, key, value in messages:
        if topic == consent_topic:
            rec = codec.decode(value)[1]
            histories[rec["subject_id"]] = apply(histories.get(rec["subject_id"]), rec)
        elif topic in raw:
            events.append((topic, key, value))
    exp = Expected(inputs=len(events))
    for topic, key, value in events:
        try:
            info, event = codec.decode_info(value)
            if info.role != "input" or info.topic != topic:
                raise SerializationError("wrong topic")
            if (key or b"") != event["subject_id"].encode():
                raise SerializationError("key mismatch")
            history = histories.get(event["subject_id"])
            state = history.at(event["event_time"]) if history is not None else None
            decision = decide(info.name, event, state, SUBJECT_KEY, policy)
        except SerializationError:
            exp.dead_letters[value] += 1
            continue
        if isinstance(decision, Routed):
            for out in decision.outputs:
                if out.destination in UNLINKABLE:
                    exp.unlinkable[out.destination] += 1
                else:
                    exp.linkable[(event["event_id"], f"out:{out.destination}")] += 1
        else:
            assert isinstance(decision, Dropped | DeleteSubject)
            exp.linkable[(event["event_id"], f"drop:{decision.clause}")] += 1
    return exp


def actual_from(settings: Settings, timeout: float = 120.0) -> Actual:
    """Every committed outcome in the settings' output, drop and dead-letter topics."""
    codec = default_codec()
    cat, bootstrap = settings.catalog, settings.kafka_bootstrap
    act = Actual()
    for dest in DESTINATIONS:
        for msg in read_topic(bootstrap, cat.destination(dest).name, timeout=timeout):
            rec = codec.decode(msg.value())[1]
            if dest in UNLINKABLE:
                assert "event_id" not in rec, f"{dest} output carries an event id"
                act.unlinkable[dest] += 1
            else:
                act.linkable[(rec["event_id"], f"out:{dest}")] += 1
    for msg in read_topic(bootstrap, cat.drops.name, timeout=timeout):
        rec = codec.decode(msg.value())[1]
        act.linkable[(rec["event_id"], f"drop:{rec['clause']}")] += 1
    for msg in read_topic(bootstrap, cat.dead_letters.name, timeout=timeout):
        rec = codec.decode(msg.value())[1]
        act.dead_letters[rec["original_value"]] += 1
        act.dead_letter_positions[(rec["source_topic"], rec["source_partition"],
                                   rec["source_offset"])] += 1
        act.headers.append(dict(msg.headers() or []))
    return act


def compare(exp: Expected, act: Actual) -> Report:
    """Count duplicates (an outcome more often than deserved), losses (less often) and
    unexpected outcomes (one the input never deserved)."""
    dup = loss = unexpected = 0
    for want, got in ((exp.linkable, act.linkable), (exp.unlinkable, act.unlinkable),
                      (exp.dead_letters, act.dead_letters)):
        for k in set(want) | set(got):
            w, g = want.get(k, 0), got.get(k, 0)  # type: ignore[call-overload]
            if w == 0 and g > 0:
                unexpected += g
            elif g > w:
                dup += g - w
            else:
                loss += w - g
    dup += sum(n - 1 for n in act.dead_letter_positions.values() if n > 1)
    outcomes = (sum(act.linkable.values()) + sum(act.unlinkable.values())
                + sum(act.dead_letters.values()))
    return Report(exp.inputs, outcomes, dup, loss, unexpected, sum(act.dead_letters.values()))
