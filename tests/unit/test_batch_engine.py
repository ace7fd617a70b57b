"""The columnar engine against the row engine: same outcome per row, same bytes per output.

Every check decides a batch with ``batch_engine.decide_batch``, each row alone with
``engine.decide``, and compares the outcomes (destinations, drop reason and clause, C8
deletion, SerializationError) and the Avro bodies of ``arrow_avro.encode_bodies`` with
``codec.encode`` of the row engine's records.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import batch_inputs, consent, engine, pseudonym
from streams.arrow_avro import encode_bodies
from streams.batch_engine import DELETE_SUBJECT, ROUTED, decide_batch, decide_table
from streams.batch_inputs import Factored
from streams.bench_policy import build_workload
from streams.codec import default_codec
from streams.consent import SubjectState
from streams.errors import SerializationError
from streams.policy import default_policy
from tests.factories import BASE_TIME_MS, FACTORIES, make_record, server_id_for

pytestmark = pytest.mark.unit

POLICY = default_policy()
CODEC = default_codec()
Variant = tuple[str, str, int]  # (input schema, destination, personal | limited bits)


def _variant(schema: str, record: dict[str, Any], state: SubjectState | None) -> int:
    plan = POLICY.plans[schema]
    personal = plan.personal_field is not None and record.get(plan.personal_field) == (
        plan.personal_value)
    return int(personal) | (2 if engine._resolve(state, POLICY)[2]["limit_sensitive"] else 0)


def _encodes(decision: engine.Routed) -> bool:
    try:
        for out in decision.outputs:
            CODEC.encode(POLICY.destinations[out.destination].output_schema, out.record)
    except SerializationError:
        return False
    return True


def check_batch(schema: str, records: list[dict[str, Any]], states: list[SubjectState | None],
                keys: list[bytes]) -> set[Variant]:
    """Assert the columnar engine equals the row engine on this batch; the routed
    (schema, destination, variant) triples it exercised."""
    batch = decide_batch(schema, records, states, keys, POLICY)
    expected: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    covered: set[Variant] = set()
    for i, (record, state, key) in enumerate(zip(records, states, keys, strict=True)):
        try:
            decision = engine.decide(schema, record, state, key, POLICY)
        except SerializationError as exc:
            got = batch.outcome(i)
            assert isinstance(got, SerializationError) and str(got) == str(exc), (i, got)
            continue
        if isinstance(decision, engine.Routed) and not _encodes(decision):
            # Routed records that cannot be encoded (a value of the wrong type) cannot be
            # held in Arrow either: the batch reports the row as failing, as encoding would.
            assert isinstance(batch.outcome(i), SerializationError), (i, record)
            continue
        if isinstance(decision, engine.Routed):
            want: object = tuple(o.destination for o in decision.outputs)
            for out in decision.outputs:
                expected[out.destination].append((i, out.record))
                covered.add((schema, out.destination, _variant(schema, record, state)))
        else:
            want = decision
        assert batch.outcome(i) == want, (i, record, state)
    assert {t.destination for t in batch.tables} == {d.name for d in POLICY.plans[schema].dests}
    for table in batch.tables:
        rows = expected[table.destination]
        assert table.rows.tolist() == [i for i, _ in rows], table.destination
        info = CODEC.catalog.by_name(table.output_schema)
        bodies = encode_bodies(table.table, info.raw).to_pylist()
        for (i, record), body in zip(rows, bodies, strict=True):
            try:
                want_bytes = CODEC.encode(table.output_schema, record)[5:]
            except SerializationError:
                assert body is None, (i, record)
                continue
            assert body == want_bytes, (table.destination, i, record)
    return covered


def check_same_from_arrow(schema: str, records: list[dict[str, Any]],
                          states: list[SubjectState | None], keys: list[bytes]) -> None:
    """decide_table on the records as a decoder's Arrow table decides as decide_batch."""
    from_dicts = decide_batch(schema, records, states, keys, POLICY)
    table = pa.Table.from_pylist(records)
    # The worker hands states and keys over factored (each value once, and per row its
    # code): the same decisions. Values may repeat; the codes here are reversed on purpose.
    n = len(records)
    codes = np.arange(n)[::-1].copy()
    factored = decide_table(schema, table, Factored(states[::-1], codes),
                            Factored(keys[::-1] + keys[:1], codes), POLICY)
    for from_table in (decide_table(schema, table, states, keys, POLICY), factored):
        assert [from_table.outcome(i) for i in range(n)] == [
            from_dicts.outcome(i) for i in range(n)]
        for a, b in zip(from_dicts.tables, from_table.tables, strict=True):
            assert a.table.equals(b.table) and a.rows.tolist() == b.rows.tolist()


def reachable() -> set[Variant]:
    """Every (schema, destination, variant) the policy can route to."""
    out = set()
    for schema, plan in POLICY.plans.items():
        for dest in plan.dests:
            for v in range(4):
                if v & 1 and (plan.personal_field is None or dest.exclude_personal):
                    continue
                out.add((schema, dest.name, v))
    return out


def _schema_batches(events: int, seed: int, subjects: int, size: int = 3_000
                    ) -> list[tuple[str, list[Any], list[Any], list[bytes]]]:
    """The traffic model's events in batches of ``size``, each split by schema:
    (schema, records, states, keys)."""
    work = build_workload(events, seed=seed, subjects=subjects)
    batches = []
    for start in range(0, len(work), size):
        by_schema: dict[str, list[Any]] = defaultdict(list)
        for schema, record, state, key in work[start:start + size]:
            by_schema[schema].append((record, state, key))
        for schema, items in by_schema.items():
            records, states, keys = (list(x) for x in zip(*items, strict=True))
            batches.append((schema, records, states, keys))
    return batches


def test_traffic_model_workload_equals_row_engine_for_every_reachable_variant() -> None:
    """C1-C21 as the traffic model exercises them (consent mix, ages, C8 under-13, no
    consent record, managed profiles, switched-off servers), batches of one schema."""
    covered: set[Variant] = set()
    for schema, records, states, keys in _schema_batches(12_000, seed=5, subjects=2_000):
        covered |= check_batch(schema, records, states, keys)
        check_same_from_arrow(schema, records, states, keys)
    assert reachable() - covered <= {v for v in reachable() if v[2] & 2}  # limited: below
    assert any(v[2] == 1 for v in covered)  # C17 personal content


def test_state_rows_stay_right_across_registry_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch engine's resolved-state rows live in a bounded array, each state memoizing
    its slot: when the array fills, a new generation starts and every memo goes stale. With
    a small array that restarts between batches, decisions still equal the row engine's."""
    registry = batch_inputs._StateRows()
    monkeypatch.setattr(batch_inputs._StateRows, "CAPACITY", 700)
    monkeypatch.setattr(batch_inputs, "_state_rows", registry)
    batches = _schema_batches(12_000, seed=7, subjects=1_500)
    for _ in range(2):  # the second pass finds memos of older generations
        for batch in batches:
            check_batch(*batch)
    assert registry.generation > 2


def _state(**overrides: Any) -> SubjectState:
    record = {"subject_id": "acct-1", "effective_at": BASE_TIME_MS - 86_400_000,
              "recorded_at": BASE_TIME_MS, "policy_version": "2024-06-28",
              "jurisdiction": "US-CA", "birth_year": 1980, "managed_profile": False,
              "targeted_ads": True, "activity_sharing": True, "nonessential_cookies": True,
              "optional_playback_data": True, "limit_sensitive": False,
              "servers": [{"server_id": server_id_for("acct-1", i), "crash_reports": True,
                           "push_notifications": True, "optional_telemetry": True,
                           "metadata_matching": True} for i in range(2)]}
    record.update(overrides)
    return consent.state_from_record(record)


def test_limited_sensitive_subjects_every_schema_and_destination() -> None:
    """C16: limit-sensitive subjects, with and without personal content (C17)."""
    rng = random.Random(11)
    covered: set[Variant] = set()
    for schema in POLICY.plans:
        records = [make_record(schema, rng, subject_id="acct-1") for _ in range(40)]
        for i, record in enumerate(records):
            if "server_id" in record:
                record["server_id"] = server_id_for("acct-1", i % 2)
            if schema == "PlaybackEvent":
                record["content_source"] = ("personal", "catalog")[i % 2]
                record["event_type"] = ("play", "complete", "pause")[i % 3]
                record["data_tier"] = "required"
        states = [_state(limit_sensitive=bool(i % 4 < 2)) for i in range(len(records))]
        covered |= check_batch(schema, records, states, [b"k" * 32] * len(records))
    assert reachable() <= covered


opt_bool = st.one_of(st.none(), st.booleans())
addresses = st.one_of(
    st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str),
    st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"), st.just("fe80::1%eth0"),
    st.sampled_from(["1.2.3", "999.1.1.1", "01.02.03.004", "", "::zz", "١.2.3.4"]),
)


@st.composite
def states(draw: st.DrawFn, subject: str) -> SubjectState | None:
    if draw(st.integers(0, 7)) == 0:
        return None  # no consent record: fail closed (C9)
    prefs = st.fixed_dictionaries({"crash_reports": opt_bool, "push_notifications": opt_bool,
                                   "optional_telemetry": opt_bool, "metadata_matching": opt_bool})
    return _state(
        subject_id=subject,
        policy_version=draw(st.sampled_from(["2023-09-01", "2024-06-28", "bogus", None])),
        jurisdiction=draw(st.sampled_from(["US-CA", "US", "EU", "GB", "ZZ", "??"])),
        birth_year=draw(st.one_of(st.none(), st.integers(1930, 2025))),  # C8: under 13
        age_band=draw(st.one_of(st.none(), st.sampled_from(
            ["under_13", "age_13_15", "age_16_17", "adult", "other"]))),
        managed_profile=draw(st.booleans()),
        targeted_ads=draw(opt_bool), activity_sharing=draw(opt_bool),
        nonessential_cookies=draw(opt_bool), optional_playback_data=draw(opt_bool),
        limit_sensitive=draw(opt_bool),
        servers=[dict(draw(prefs), server_id=server_id_for(subject, i)) for i in range(2)],
    )


@st.composite
def batches(draw: st.DrawFn) -> tuple[str, list[Any], list[Any], list[bytes]]:
    schema = draw(st.sampled_from(sorted(FACTORIES)))
    info = CODEC.catalog.by_name(schema)
    generalized = {f.name: f.privacy.linked.method for f in info.fields
                   if f.privacy is not None and f.privacy.linked.method is not None}
    records, subject_states, keys = [], [], []
    for _ in range(draw(st.integers(1, 12))):
        subject = f"acct-{draw(st.integers(0, 3))}"
        rec = make_record(schema, random.Random(draw(st.integers(0, 2**32))), subject_id=subject)
        if "server_id" in rec:
            rec["server_id"] = draw(st.one_of(
                st.integers(0, 2).map(lambda i, s=subject: server_id_for(s, i)), st.none()))
        if schema == "PlaybackEvent":
            rec["content_source"] = draw(st.sampled_from(["catalog", "ad_supported", "personal"]))
            rec["event_type"] = draw(st.sampled_from(["play", "complete", "pause"]))
        for f in info.fields:
            if f.nullable and draw(st.integers(0, 3)) == 0:
                if draw(st.booleans()):
                    rec[f.name] = None
                else:
                    rec.pop(f.name, None)  # a missing optional field reads as None
            elif generalized.get(f.name) == "ip_prefix" and rec.get(f.name) is not None:
                rec[f.name] = draw(addresses)
            elif generalized.get(f.name) == "postal_region" and rec.get(f.name) is not None:
                rec[f.name] = draw(st.text(max_size=8))
        rec["event_time"] = BASE_TIME_MS + draw(st.integers(-20, 40)) * 365 * 86_400_000
        records.append(rec)
        subject_states.append(draw(states(subject)))
        keys.append(subject.encode().ljust(32, b"k"))
    return schema, records, subject_states, keys


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches())
def test_generated_batches_equal_row_engine(batch: tuple[str, list[Any], list[Any], list[bytes]]
                                            ) -> None:
    """C8, C9, C10, C16, C17, C21, gates and server switches on generated events: IPv6
    and malformed addresses, missing and None optional fields, every age and consent."""
    check_batch(*batch)


def test_rows_the_row_engine_rejects_fail_alone() -> None:
    """A record missing a required field or with a too-short key is reported per row with
    the row engine's SerializationError, a value of the wrong type (which the row engine
    routes but codec.encode rejects) with a SerializationError too; the other rows are
    decided as usual."""
    rng = random.Random(3)
    records = [make_record("PlaybackEvent", rng, subject_id="acct-1", data_tier="required",
                           content_source="catalog") for _ in range(6)]
    del records[1]["event_id"]
    records[2]["position_ms"] = "not a number"
    keys = [b"k" * 32] * 6
    keys[3] = b"short"
    states = [_state()] * 6
    batch = decide_batch("PlaybackEvent", records, states, keys, POLICY)
    assert [batch.kinds[i] == ROUTED for i in (0, 4, 5)] == [True] * 3
    for i in (1, 2, 3):
        assert isinstance(batch.outcome(i), SerializationError)
    check_batch("PlaybackEvent", records, states, keys)


def test_pseudonyms_leave_no_cache_behind() -> None:
    """Crypto-shredding: the batch engine hashes its pseudonyms natively per batch and
    caches none of them (nor of its pad states), so once a key is shredded no derived
    value of it outlives the batch that used it."""
    pseudonym.forget_cache()
    rng = random.Random(5)
    records = [make_record("PaymentEvent", rng, subject_id="acct-1") for _ in range(5)]
    batch = decide_batch("PaymentEvent", records, [_state()] * 5, [b"k" * 32] * 5, POLICY)
    assert any(t.table.num_rows for t in batch.tables)
    assert pseudonym.pseudonymize.cache_info().currsize == 0


def test_ipv6_addresses_under_13_and_no_consent_record() -> None:
    """IPv6, v4-mapped and scoped addresses generalize as ip_prefix does (C19); a subject
    known to be under 13 is deleted (C8); no consent record fails closed (C9)."""
    rng = random.Random(13)
    addresses = ["2001:db8:85a3::8a2e:370:7334", "::ffff:192.0.2.7", "fe80::1%eth0", "::1",
                 "192.0.2.33", "not an address", None]
    states: list[SubjectState | None] = [
        _state(), _state(birth_year=2024), _state(birth_year=None, age_band="under_13"),
        None, _state(limit_sensitive=True), _state(birth_year=None, age_band=None), _state()]
    for schema, field in (("PlaybackEvent", "ip_address"), ("ActivityEvent", "ip_address"),
                          ("ServerConfigEvent", "local_ip")):
        records = []
        for i, address in enumerate(addresses):
            record = make_record(schema, rng, subject_id="acct-1")
            record[field] = address
            if schema == "PlaybackEvent":
                record["data_tier"] = "required"
            if schema == "ServerConfigEvent":
                record["server_id"] = server_id_for("acct-1", i % 2)
            records.append(record)
        check_batch(schema, records, states, [b"k" * 32] * len(records))
        kinds = decide_batch(schema, records, states, [b"k" * 32] * len(records), POLICY).kinds
        assert kinds[1] == kinds[2] == DELETE_SUBJECT
