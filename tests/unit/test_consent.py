"""Subject state: event-time history, bounded size, age classes."""

from __future__ import annotations

import random

import pytest

from streams import consent
from streams.consent import ADULT, AGE_16_17, UNDER_13, UNDER_16, UNKNOWN_AGE, apply
from tests.factories import BASE_TIME_MS, make_consent

pytestmark = pytest.mark.unit

SID = "acct-1"


def test_apply_builds_state_from_a_consent_record() -> None:
    rec = make_consent(SID, random.Random(1), targeted_ads=False, birth_year=1990)
    hist = apply(None, rec)
    s = hist.at(rec["effective_at"])
    assert s is not None and s.targeted_ads is False and s.birth_year == 1990
    assert set(s.servers) == {srv["server_id"] for srv in rec["servers"]}
    assert hist.at(rec["effective_at"] - 1) is None


def test_state_from_record_puts_each_value_in_its_field() -> None:
    """``state_from_record`` passes its arguments by position: each value, distinct from
    every other (names for the switches, which it passes through), must land in the field
    of its name."""
    switches = ["targeted_ads", "activity_sharing", "nonessential_cookies",
                "optional_playback_data", "limit_sensitive", "policy_version", "age_band",
                "email"]
    server = ["crash_reports", "push_notifications", "optional_telemetry", "metadata_matching"]
    rec = {"subject_id": SID, "effective_at": 11, "recorded_at": 12, "jurisdiction": "EU",
           "birth_year": 1990, "managed_profile": True, **{name: name for name in switches},
           "servers": [{"server_id": "s", **{name: name for name in server}}]}
    want = consent.SubjectState(
        subject_id=SID, effective_at=11, recorded_at=12, jurisdiction="EU", birth_year=1990,
        managed_profile=True, **{name: name for name in switches},  # type: ignore[arg-type]
        servers={"s": consent.ServerPrefs(**{name: name for name in server})})  # type: ignore[arg-type]
    state = consent.state_from_record(rec)
    assert state == want and repr(state) == repr(want)


def test_history_is_bounded() -> None:
    rng = random.Random(2)
    hist = None
    for i in range(40):
        hist = apply(hist, make_consent(SID, rng, effective_at=i, recorded_at=i), max_entries=8)
    assert hist is not None and len(hist) == 8
    assert hist.at(39) is not None and hist.at(39).effective_at == 39  # type: ignore[union-attr]
    assert hist.at(31) is None  # older than the oldest kept state: no record, fail closed


def test_same_effective_time_keeps_the_latest_recorded() -> None:
    rng = random.Random(3)
    newer = make_consent(SID, rng, effective_at=5, recorded_at=20, targeted_ads=False)
    older = make_consent(SID, rng, effective_at=5, recorded_at=10, targeted_ads=True)
    for order in ((newer, older), (older, newer)):
        hist = None
        for r in order:
            hist = apply(hist, r)
        assert hist is not None and hist.at(5).targeted_ads is False  # type: ignore[union-attr]


def test_apply_is_pure() -> None:
    rng = random.Random(4)
    first = apply(None, make_consent(SID, rng, effective_at=1))
    second = apply(first, make_consent(SID, rng, effective_at=2))
    assert len(first) == 1 and len(second) == 2


@pytest.mark.parametrize(
    ("birth_year", "year", "expected"),
    [
        (2014, 2026, UNDER_13),  # at most 12 all through 2026
        (2013, 2026, UNDER_16),
        (2010, 2026, UNDER_16),
        (2009, 2026, AGE_16_17),
        (2007, 2026, ADULT),
    ],
)
def test_age_class_from_birth_year_C8_C9(birth_year: int, year: int, expected: int) -> None:
    """C8/C9: known under 13 only for certain; 16+/18+ only for certain."""
    s = consent.state_from_record(
        {"subject_id": SID, "effective_at": 0, "birth_year": birth_year, "jurisdiction": "US"}
    )
    jan1 = BASE_TIME_MS + (year - 2026) * 365 * 86_400_000
    assert s.age_class(jan1 + 86_400_000) == expected


def test_age_band_and_unknown() -> None:
    base = {"subject_id": SID, "effective_at": 0, "jurisdiction": "US"}
    assert consent.state_from_record(base).age_class(0) == UNKNOWN_AGE
    assert consent.state_from_record({**base, "age_band": "age_16_17"}).age_class(0) == AGE_16_17
