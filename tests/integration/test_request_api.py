"""The request API on the real broker (C15, C8): verification, bad requests, access,
correction, opt-out, a deletion filed twice (the second ends with the first), and the
deletion the worker raises for a subject under 13."""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from streams.infra import load_policy_for
from streams.key_vault import Keyring
from streams.ledger import Ledger
from streams.request_api import ApiServer
from streams.request_service import RequestService
from streams.subject_requests import C8_AGENT
from tests.factories import make_consent, make_record
from tests.integration.harness import (
    decoded,
    pipeline_settings,
    produce,
    read_topic,
    running_worker,
)


def call(port: int, path: str, body: Any = None, raw: bytes | None = None
         ) -> tuple[int, dict[str, Any]]:
    data = raw if raw is not None else json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_status(port: int, rid: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = call(port, f"/privacy/requests/{rid}")
        if code == 200 and body["status"] != "open":
            return body
        assert time.monotonic() < deadline, (code, body)
        time.sleep(0.2)  # polling the status endpoint with a deadline


def test_api_verifies_refuses_and_carries_out_requests_c15(kafka_bootstrap: str, unique: str,
                                                           tmp_path: Path) -> None:
    settings = pipeline_settings(kafka_bootstrap, tmp_path, f"api-{unique}.")
    cat = settings.catalog
    rng = random.Random(9)
    alice = make_consent("acct-alice", rng, email="alice@example.com",
                         authorized_agents=["agent@helpers.example"])
    produce(settings, cat.consent.name, [("acct-alice", alice)], schema="ConsentRecord")
    service = RequestService(settings, load_policy_for(settings), purge_sinks=False)
    server = ApiServer(service, 0, host="127.0.0.1")
    try:
        assert service.ready.wait(60)
        port = server.port
        base = {"subject_id": "acct-alice", "requester_email": "alice@example.com"}
        # Bad requests: a clear 4xx JSON error each, and the service keeps running.
        bad = [
            (call(port, "/privacy/requests", raw=b"{not json"), 400, "malformed"),
            (call(port, "/privacy/requests", {"type": "explode", **base}), 400, "malformed"),
            (call(port, "/privacy/requests", {**base, "type": "access",
                                              "subject_id": "acct-nobody"}),
             404, "unknown_subject"),
            (call(port, "/privacy/requests", {**base, "type": "access",
                                              "requester_email": "mallory@example.com"}),
             403, "email_mismatch"),
            (call(port, "/privacy/requests", {**base, "type": "access",
                                              "agent_id": "stranger@example.com"}),
             403, "agent_not_authorized"),
        ]
        for (code, body), want_code, want_error in bad:
            assert (code, body["error"]) == (want_code, want_error), body
            assert body["message"] and body["request_id"]
        # Access by the account, then a duplicate of the same request id.
        rid = str(uuid.uuid4())
        code, body = call(port, "/privacy/requests", {**base, "type": "access",
                                                      "request_id": rid})
        assert code == 202 and body["request_id"] == rid
        code, dup = call(port, "/privacy/requests", {**base, "type": "access",
                                                     "request_id": rid})
        assert (code, dup["error"]) == (409, "duplicate")
        done = wait_status(port, rid)
        assert done["status"] == "done"
        assert done["steps"][0]["step"] == "intake"
        assert [s["step"] for s in done["steps"]][-2:] == ["export", "complete"]
        code, export = call(port, f"/privacy/requests/{rid}/export")
        assert code == 200 and export["subject_id"] == "acct-alice"
        assert export["consent_state"]["email"] == "alice@example.com"
        assert "identifiers" in export["categories"]
        # Every bad request left an audit record with its reason.
        audit = decoded(read_topic(kafka_bootstrap, cat.audit.name))
        rejected = {a["request_id"]: a["detail"] for a in audit if a["status"] == "rejected"}
        for (_, body), _, reason in bad:
            assert rejected[body["request_id"]].startswith(reason)
        assert rejected[dup["request_id"]].startswith("duplicate")
        # Correction by an authorized agent, then an opt-out: new consent records.
        code, body = call(port, "/privacy/requests", {
            **base, "type": "correct", "agent_id": "agent@helpers.example",
            "requester_email": "agent@helpers.example",
            "correction": {"jurisdiction": "US-VA", "email": "alice@new.example"}})
        assert code == 202, body
        assert wait_status(port, body["request_id"])["status"] == "done"
        code, body = call(port, "/privacy/requests", {
            "type": "opt_out", "subject_id": "acct-alice",
            "requester_email": "alice@new.example"})  # the corrected e-mail now verifies
        assert code == 202, body
        assert wait_status(port, body["request_id"])["status"] == "done"
        records = [r for r in decoded(read_topic(kafka_bootstrap, cat.consent.name))
                   if r["subject_id"] == "acct-alice"]
        latest = max(records, key=lambda r: (r["effective_at"], r["recorded_at"]))
        assert (latest["jurisdiction"], latest["email"], latest["targeted_ads"]) == \
            ("US-VA", "alice@new.example", False)
        # C8: the worker learns a subject is under 13 and the deletion runs on its own.
        kid = make_consent("acct-kid", rng, birth_year=None, age_band="under_13")
        produce(settings, cat.consent.name, [("acct-kid", kid)], schema="ConsentRecord")
        with running_worker(settings):
            # Two deletions of one subject in one go: the second ends with the first.
            twice = [{"request_id": str(uuid.uuid4()), "type": "delete",
                      "subject_id": "acct-alice", "requester_email": "alice@new.example",
                      "agent_id": None, "submitted_at": int(time.time() * 1000),
                      "correction": None} for _ in range(2)]
            produce(settings, cat.requests.name, [("acct-alice", r) for r in twice],
                    schema="SubjectRequest")
            first, duplicate = (wait_status(port, r["request_id"], 90) for r in twice)
            assert first["status"] == "done" and first["receipt"]["linkable"] == 0, first
            assert duplicate["status"] == "done", duplicate
            assert duplicate["steps"][-1]["detail"] == {"erased_by": twice[0]["request_id"]}
            assert duplicate["completed_at"] >= next(
                s["at"] for s in first["steps"] if s["step"] == "receipt")
            assert [s["step"] for s in duplicate["steps"]] == [
                "intake", "verify_requester", "complete"]  # nothing done twice
            event = make_record("PlaybackEvent", rng, subject_id="acct-kid")
            produce(settings, cat.raw_playback.name, [("acct-kid", event)],
                    schema="PlaybackEvent")
            deadline = time.monotonic() + 90
            while not service.directory.subject_requests.get("acct-kid"):
                assert time.monotonic() < deadline, "no C8 request"
                time.sleep(0.2)  # polling for the worker's request
            c8 = service.directory.subject_requests["acct-kid"][0]
            # Another deletion of the subject while the first is under way (C8 raises one
            # per event): it ends with the first, never before its receipt.
            again = str(uuid.uuid4())
            produce(settings, cat.requests.name, [("acct-kid", {
                "request_id": again, "type": "delete", "subject_id": "acct-kid",
                "requester_email": "", "agent_id": C8_AGENT,
                "submitted_at": int(time.time() * 1000), "correction": None})],
                schema="SubjectRequest")
            status = wait_status(port, c8, 90)
            second = wait_status(port, again, 90)
        assert status["status"] == "done", status
        assert status["receipt"]["linkable"] == 0
        receipt_at = next(s["at"] for s in status["steps"] if s["step"] == "receipt")
        assert second["status"] == "done", second
        assert second["completed_at"] >= receipt_at
        assert second["steps"][-1].get("detail") in ({"erased_by": c8}, "already erased")
        ledger = decoded(m for m in read_topic(kafka_bootstrap, cat.deletion_ledger.name)
                         if m.key() != b"__ledger-key__")
        assert any(e.get("clause") == "C8" and e["request_id"] == c8 for e in ledger)
        assert all("acct-kid" not in json.dumps(e) for e in ledger)  # refs, never the id
        requests = decoded(read_topic(kafka_bootstrap, cat.requests.name))
        assert any(r["agent_id"] == C8_AGENT for r in requests)
        # Still serving after all of that.
        assert call(port, f"/privacy/requests/{rid}")[0] == 200
    finally:
        server.close()


def test_a_deletion_cut_short_by_a_restart_is_carried_out_in_full_c15(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    """A crash after the ledger step: the restarted service re-reads the request (its offset
    was never committed) and runs every step again, although the subject is ledgered."""
    settings = pipeline_settings(kafka_bootstrap, tmp_path, f"rerun-{unique}.")
    cat = settings.catalog
    bob = make_consent("acct-bob", random.Random(4), email="bob@example.com")
    produce(settings, cat.consent.name, [("acct-bob", bob)], schema="ConsentRecord")
    rid, now = str(uuid.uuid4()), int(time.time() * 1000)
    produce(settings, cat.requests.name, [("acct-bob", {
        "request_id": rid, "type": "delete", "subject_id": "acct-bob",
        "requester_email": "bob@example.com", "agent_id": None, "submitted_at": now,
        "correction": None})], schema="SubjectRequest")
    # What the crashed service had written: the ledger entry and its audit trail so far.
    ledger = Ledger(Keyring(settings.master_key))
    key, wrapped = ledger.new_key_record()
    ref = ledger.ref("acct-bob")
    assert ref is not None
    produce(settings, cat.deletion_ledger.name, [(key.decode(), wrapped)])
    produce(settings, cat.deletion_ledger.name, [(ref, {
        "subject_ref": ref, "request_id": rid, "reason": "subject_request", "clause": "C15",
        "requested_at": now, "recorded_at": now, "processing_region": "us-east"})],
        schema="DeletionLedgerEntry")
    produce(settings, cat.audit.name, [(rid, {
        "audit_id": str(uuid.uuid4()), "request_id": rid, "action": "delete", "step": step,
        "status": status, "detail": "", "occurred_at": now, "actor": "request-service",
        "processing_region": "us-east"}) for step, status in
        [("intake", "started"), ("verify_requester", "done"), ("ledger", "done")]],
        schema="AuditRecord")
    service = RequestService(settings, load_policy_for(settings), purge_sinks=False)
    server = ApiServer(service, 0, host="127.0.0.1")
    try:
        assert service.ready.wait(60)
        status = wait_status(server.port, rid)
    finally:
        server.close()
    assert status["status"] == "done", status
    assert status["receipt"]["linkable"] == 0
    done = [s["step"] for s in status["steps"] if s["status"] == "done"]
    assert done[-5:] == ["tombstones", "key_shred", "verify", "receipt", "complete"]
    consent = [m for m in read_topic(kafka_bootstrap, cat.consent.name)
               if m.key() == b"acct-bob"]
    assert consent[-1].value() is None  # the tombstone the crash kept from being written
