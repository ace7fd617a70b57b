"""C15/C8 request logic without a broker: validation, verification, corrections, status."""

from __future__ import annotations

import random

import pytest

from streams.access_export import export
from streams.schema_catalog import default_catalog
from streams.subject_requests import (
    C8_AGENT,
    BadRequest,
    corrected,
    deletion_timeline,
    fold_status,
    opted_out,
    parse_api_request,
    verify,
)
from tests.factories import make_consent

CONSENT = make_consent("acct-1", random.Random(1), email="a@example.com",
                       authorized_agents=["agent@x.example"])


def req(**over: object) -> dict[str, object]:
    body = {"type": "delete", "subject_id": "acct-1", "requester_email": "a@example.com"}
    body.update(over)
    return parse_api_request(body, 1_000)


@pytest.mark.parametrize("body, reason", [
    ([], "malformed"), ({"type": "nuke"}, "malformed"),
    ({"type": "delete", "subject_id": "", "requester_email": "a@example.com"}, "malformed"),
    ({"type": "delete", "subject_id": "s", "requester_email": "nope"}, "malformed"),
    ({"type": "delete", "subject_id": "s", "requester_email": "a@b.c", "x": 1}, "malformed"),
    ({"type": "correct", "subject_id": "s", "requester_email": "a@b.c",
      "correction": {"subject_id": "other"}}, "malformed"),
    ({"type": "correct", "subject_id": "s", "requester_email": "a@b.c",
      "correction": {"birth_year": "soon"}}, "malformed"),
    ({"type": "delete", "subject_id": "s", "requester_email": "a@b.c",
      "agent_id": C8_AGENT}, "forbidden_agent"),
])
def test_malformed_requests_are_refused_with_a_reason_c15(body: object, reason: str) -> None:
    with pytest.raises(BadRequest) as exc:
        parse_api_request(body, 0)
    assert exc.value.reason == reason and 400 <= exc.value.status < 500


def test_verification_account_email_or_authorized_agent_c15() -> None:
    verify(req(), CONSENT)
    verify(req(requester_email="A@Example.com"), CONSENT)  # e-mail case does not matter
    verify(req(agent_id="agent@x.example", requester_email="agent@x.example"), CONSENT)
    for request, reason in [(req(requester_email="m@example.com"), "email_mismatch"),
                            (req(agent_id="who@x.example"), "agent_not_authorized")]:
        with pytest.raises(BadRequest) as exc:
            verify(request, CONSENT)
        assert exc.value.reason == reason
    with pytest.raises(BadRequest) as exc:
        verify(req(), None)
    assert exc.value.reason == "unknown_subject"


def test_c8_deletions_need_no_email_but_only_delete_c8() -> None:
    c8 = {"type": "delete", "subject_id": "kid", "requester_email": "", "agent_id": C8_AGENT}
    verify(c8, None)
    with pytest.raises(BadRequest):
        verify({**c8, "type": "access"}, None)


def test_correction_and_opt_out_are_new_records_effective_now_c15_c1() -> None:
    fixed = corrected(CONSENT, parse_api_request(
        {"type": "correct", "subject_id": "acct-1", "requester_email": "a@example.com",
         "correction": {"birth_year": 1990, "jurisdiction": "EU", "targeted_ads": True}},
        0)["correction"], 5_000)
    assert (fixed["birth_year"], fixed["jurisdiction"], fixed["targeted_ads"]) == \
        (1990, "EU", True)
    assert fixed["effective_at"] == fixed["recorded_at"] == 5_000
    assert opted_out(CONSENT, 6_000)["targeted_ads"] is False


def test_status_is_rebuilt_from_audit_records() -> None:
    def audit(step: str, status: str, at: int, detail: str = "") -> dict[str, object]:
        return {"request_id": "r1", "action": "delete", "step": step, "status": status,
                "occurred_at": at, "detail": detail, "actor": "t"}

    steps = [audit("intake", "started", 1), audit("ledger", "done", 2),
             audit("receipt", "done", 3, '{"linkable": 0}'), audit("complete", "done", 4)]
    st = fold_status(steps[:2])["r1"]
    assert st.status == "open" and st.submitted_at == 1
    st = fold_status(steps)["r1"]
    assert (st.status, st.completed_at, st.receipt) == ("done", 4, {"linkable": 0})
    rejected = fold_status([audit("intake", "rejected", 9, "email_mismatch: no")])["r1"]
    assert (rejected.status, rejected.reason) == ("rejected", "email_mismatch: no")


def test_deletion_timeline_splits_request_to_receipt_by_audited_step_c15() -> None:
    def step(name: str, status: str, at: int, actor: str = "request-service") -> dict[str, object]:
        return {"step": name, "status": status, "at": at, "actor": actor}

    steps = [step("intake", "started", 1_100), step("verify_requester", "done", 1_150),
             step("ledger", "done", 1_300), step("tombstones", "done", 1_350),
             step("sink_purge", "started", 2_000), step("sink_purge", "done", 2_600, "sink:ch"),
             step("key_shred", "done", 2_650), step("verify", "done", 3_000),
             step("receipt", "done", 3_000), step("complete", "done", 3_010)]
    timeline = deletion_timeline(steps, 1_000)
    assert timeline == {"intake": 0.1, "ledger": 0.2, "tombstones": 0.05,
                        "worker_barrier": 0.65, "sink_purge": 0.6, "key_shred": 0.05,
                        "verify": 0.35, "complete": 0.01}
    assert round(sum(timeline.values()), 3) == 2.01  # request to receipt
    # A purge the sink never acknowledged (the service's own "failed") is left out.
    partial = deletion_timeline([step("intake", "started", 1_100),
                                 step("sink_purge", "failed", 9_000)], 1_000)
    assert partial == {"intake": 0.1}


def test_access_export_groups_by_c13_category_c15() -> None:
    doc = export("acct-1", [CONSENT], [{"event_id": "e", "source": "PlaybackEvent",
                                        "event_type": "play", "event_time_ms": 1,
                                        "attributes": {"content_id": "t1"}, "measures": {},
                                        "data_category": "internet_activity"}],
                 [{"request_id": "r1"}], default_catalog())
    assert doc["consent_state"]["email"] == "a@example.com"
    assert doc["categories"]["identifiers"]["consent_records"][0]["email"] == "a@example.com"
    assert doc["sink_records"] == 1 and doc["request_history"] == [{"request_id": "r1"}]
    assert any("analytics_events" in v for v in doc["categories"].values())
