"""Property tests (hypothesis) over generated events and consent states."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import consent
from streams.consent import AGE_16_17, UNDER_13, SubjectState
from streams.engine import DeleteSubject, Routed, decide
from streams.policy import default_policy
from tests.factories import BASE_TIME_MS, FACTORIES, make_record, server_id_for

pytestmark = pytest.mark.unit

POLICY = default_policy()
SID = "acct-424242"
KEY = b"k" * 32
RAW_PRIVATE_FIELDS = (
    "email",
    "billing_email",
    "owner_email",
    "user_name",
    "full_name",
    "owner_user_name",
    "ip_address",
    "client_ip",
    "local_ip",
    "card_last4",
    "password_hash",
    "auth_token",
    "access_token",
    "webhook_url",
)
PAYMENT_KEYS = {"amount_cents", "transaction_id", "currency", "payment_processor", "card_brand"}
INFERENCE_KEYS = {"inferred_segment"}

opt_bool = st.one_of(st.none(), st.booleans())
server_prefs = st.fixed_dictionaries(
    {
        "crash_reports": opt_bool,
        "push_notifications": opt_bool,
        "optional_telemetry": opt_bool,
        "metadata_matching": opt_bool,
    }
)


@st.composite
def states(draw: st.DrawFn) -> SubjectState | None:
    if draw(st.integers(0, 9)) == 0:
        return None
    servers = [dict(draw(server_prefs), server_id=server_id_for(SID, i)) for i in range(2)]
    record = {
        "subject_id": SID,
        "effective_at": BASE_TIME_MS - 86_400_000,
        "recorded_at": BASE_TIME_MS,
        "policy_version": draw(st.sampled_from(["2023-09-01", "2024-06-28", "bogus"])),
        "jurisdiction": draw(st.sampled_from(["US-CA", "US", "US-NY", "EU", "GB", "ZZ", "??"])),
        "birth_year": draw(st.one_of(st.none(), st.integers(1930, 2025))),
        "age_band": draw(
            st.one_of(st.none(), st.sampled_from(["under_13", "age_13_15", "age_16_17", "adult"]))
        ),
        "managed_profile": draw(st.booleans()),
        "email": None,
        "targeted_ads": draw(opt_bool),
        "activity_sharing": draw(opt_bool),
        "nonessential_cookies": draw(opt_bool),
        "optional_playback_data": draw(opt_bool),
        "limit_sensitive": draw(st.booleans()),
        "servers": servers,
    }
    return consent.state_from_record(record)


@st.composite
def events(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    schema = draw(st.sampled_from(sorted(FACTORIES)))
    rec = make_record(schema, random.Random(draw(st.integers(0, 2**32))), subject_id=SID)
    if "server_id" in rec:
        rec["server_id"] = server_id_for(SID, draw(st.integers(0, 2)))
    if "managed_profile" in rec:
        rec["managed_profile"] = draw(st.booleans())
    if schema == "PlaybackEvent":
        rec["content_source"] = draw(st.sampled_from(["catalog", "ad_supported", "personal"]))
        rec["event_type"] = draw(st.sampled_from(["play", "complete", "pause"]))
    rec["event_time"] = BASE_TIME_MS + draw(st.integers(0, 40 * 365 * 86_400_000))
    return schema, rec


def _strings(record: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for k, v in record.items():
        out.append(k)
        if isinstance(v, dict):
            out.extend(str(x) for pair in v.items() for x in pair)
        elif isinstance(v, list):
            out.extend(str(x) for x in v)
        else:
            out.append(str(v))
    return out


def _flag(state: SubjectState | None, name: str) -> bool:
    value = getattr(state, name) if state is not None else None
    defaults = POLICY.defaults_for(state.jurisdiction) if state else POLICY.fallback_defaults
    return bool(getattr(defaults, name)) if value is None else bool(value)


COMMON = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@COMMON
@given(ev=events(), state=states())
def test_no_output_but_crash_triage_holds_a_file_name(
    ev: tuple[str, dict[str, Any]], state: SubjectState | None
) -> None:
    schema, rec = ev
    d = decide(schema, rec, state, KEY, POLICY)
    if isinstance(d, Routed):
        for out in d.outputs:
            if out.destination != "crash_triage":
                assert not any("/media/" in s for s in _strings(out.record)), out


@COMMON
@given(ev=events(), state=states())
def test_no_output_holds_raw_email_name_ip_or_secret(
    ev: tuple[str, dict[str, Any]], state: SubjectState | None
) -> None:
    schema, rec = ev
    raw = [rec[f] for f in RAW_PRIVATE_FIELDS if rec.get(f)]
    d = decide(schema, rec, state, KEY, POLICY)
    if isinstance(d, Routed):
        for out in d.outputs:
            strings = _strings(out.record)
            assert not any("@" in s or "SECRET" in s for s in strings), out
            for value in raw:
                assert not any(value in s for s in strings), (value, out)
            assert rec["subject_id"] not in strings


@COMMON
@given(ev=events(), state=states())
def test_advertising_never_gets_minors_unknown_managed_opted_out_payment_or_inferences(
    ev: tuple[str, dict[str, Any]], state: SubjectState | None
) -> None:
    schema, rec = ev
    d = decide(schema, rec, state, KEY, POLICY)
    ads = (
        [o.record for o in d.outputs if o.destination == "advertising"]
        if isinstance(d, Routed)
        else []
    )
    if not ads:
        return
    assert state is not None
    assert state.age_class(rec["event_time"]) >= AGE_16_17
    assert not state.managed_profile and not rec.get("managed_profile")
    assert _flag(state, "targeted_ads")
    for r in ads:
        keys = set(r) | set(r["attributes"]) | set(r["measures"])
        assert not keys & (PAYMENT_KEYS | INFERENCE_KEYS)
        assert r["source"] != "PaymentEvent"


@COMMON
@given(ev=events(), state=states())
def test_ml_training_holds_no_subject_identifier_or_analytics_pseudonym(
    ev: tuple[str, dict[str, Any]], state: SubjectState | None
) -> None:
    schema, rec = ev
    d = decide(schema, rec, state, KEY, POLICY)
    if not isinstance(d, Routed):
        return
    outs = {o.destination: o.record for o in d.outputs}
    if "ml_training" not in outs:
        return
    ml = outs["ml_training"]
    strings = _strings(ml)
    assert "event_id" not in ml and "subject_pseudonym" not in ml
    assert not any(s.endswith("_pseudonym") for s in strings)
    assert rec["subject_id"] not in strings and rec["event_id"] not in strings
    for ident in ("device_id", "session_id", "profile_id", "server_id"):
        if rec.get(ident):
            assert rec[ident] not in strings
    if "analytics" in outs:
        analytics_ps = {
            v for k, v in outs["analytics"]["attributes"].items() if k.endswith("_pseudonym")
        }
        analytics_ps.add(outs["analytics"]["subject_pseudonym"])
        assert not analytics_ps & set(strings)


@COMMON
@given(ev=events(), state=states())
def test_under_13_yields_nothing_but_a_deletion_trigger(
    ev: tuple[str, dict[str, Any]], state: SubjectState | None
) -> None:
    schema, rec = ev
    d = decide(schema, rec, state, KEY, POLICY)
    under_13 = state is not None and state.age_class(rec["event_time"]) == UNDER_13
    assert isinstance(d, DeleteSubject) is under_13
    if under_13:
        assert d == DeleteSubject(clause="C8", reason="under_13")


@COMMON
@given(ev=events(), state=states())
def test_every_output_has_processing_region_and_sources_respected(
    ev: tuple[str, dict[str, Any]], state: SubjectState | None
) -> None:
    schema, rec = ev
    d = decide(schema, rec, state, KEY, POLICY)
    if isinstance(d, Routed):
        assert d.outputs
        for out in d.outputs:
            assert out.record["processing_region"] == POLICY.processing_region
            assert schema in POLICY.destinations[out.destination].sources
            if POLICY.destinations[out.destination].third_party:
                assert state is not None
    else:
        assert d.clause in {f"C{i}" for i in range(1, 22)}


@settings(max_examples=300, deadline=None)
@given(
    times=st.lists(st.integers(0, 10_000), min_size=1, max_size=12, unique=True),
    probe=st.integers(-10, 10_010),
    seed=st.integers(0, 1000),
)
def test_consent_history_is_order_independent(times: list[int], probe: int, seed: int) -> None:
    """A change effective at t governs events at >= t, whatever order records arrive in."""
    records = [
        {
            "subject_id": SID,
            "effective_at": t,
            "recorded_at": 0,
            "policy_version": "2024-06-28",
            "jurisdiction": "US",
            "targeted_ads": bool(t % 2),
        }
        for t in times
    ]
    shuffled = records[:]
    random.Random(seed).shuffle(shuffled)
    a = b = None
    for r in records:
        a = consent.apply(a, r)
    for r in shuffled:
        b = consent.apply(b, r)
    assert a is not None and b is not None
    assert a.at(probe) == b.at(probe)
    governing = [t for t in times if t <= probe]
    got = a.at(probe)
    if governing:
        assert got is not None and got.effective_at == max(governing)
    else:
        assert got is None
