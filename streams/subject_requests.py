"""Data-subject requests (C15, C8): validation, verification, status. Pure: no I/O.

A request is a ``SubjectRequest`` record (``control.requests``). It is verified against
the subject's latest ``ConsentRecord``: it must come from the account's e-mail, or name
an agent listed in the record's ``authorized_agents``. Deletions the pipeline raises
itself (C8: a subject learned to be under 13) carry ``agent_id = C8_AGENT`` and no e-mail;
they are accepted without e-mail verification, so topic ACLs must let only the worker's
principal write ``control.requests`` with that agent id (docs/operations.md).

Request status is never stored apart from the audit topic: ``fold_status`` rebuilds it
from ``AuditRecord``s, so a restarted service knows every request it ever handled.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.errors import RequestError

C8_AGENT = "privacy-pipeline:C8"
TYPES = ("delete", "access", "correct", "opt_out")
# Steps of a deletion, in order (each one an AuditRecord).
DELETION_STEPS = ("ledger", "tombstones", "sink_purge", "key_shred", "verify", "receipt")
OPEN, DONE, REJECTED, FAILED = "open", "done", "rejected", "failed"

# ConsentRecord fields a correction may set, with how a string value becomes the field.
_BOOL = {"true": True, "false": False}


def _nullable_bool(v: str) -> bool | None:
    if v.lower() in ("", "null", "none"):
        return None
    if v.lower() not in _BOOL:
        raise ValueError("expected true, false or null")
    return _BOOL[v.lower()]


def _birth_year(v: str) -> int | None:
    if v.lower() in ("", "null", "none"):
        return None
    year = int(v)
    if not 1900 <= year <= 2100:
        raise ValueError("not a plausible birth year")
    return year


AGE_BANDS = ("under_13", "age_13_15", "age_16_17", "adult")


def _jurisdiction(v: str) -> str:
    if not v:
        raise ValueError("must not be empty")
    return v


def _age_band(v: str) -> str | None:
    if v in ("", "null"):
        return None
    if v not in AGE_BANDS:
        raise ValueError(f"one of {', '.join(AGE_BANDS)}")
    return v


CORRECTABLE: dict[str, Callable[[str], Any]] = {
    "email": lambda v: v or None,
    "jurisdiction": _jurisdiction,
    "birth_year": _birth_year,
    "age_band": _age_band,
    "targeted_ads": _nullable_bool,
    "activity_sharing": _nullable_bool,
    "nonessential_cookies": _nullable_bool,
    "optional_playback_data": _nullable_bool,
    "limit_sensitive": lambda v: bool(_nullable_bool(v)),
    "authorized_agents": lambda v: [a.strip() for a in v.split(",") if a.strip()],
}


class BadRequest(RequestError):
    """A request refused before or at verification; ``reason`` is a short stable name."""

    def __init__(self, reason: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


def parse_api_request(body: Any, now_ms: int) -> dict[str, Any]:
    """A JSON body of ``POST /privacy/requests`` -> a ``SubjectRequest`` record."""
    if not isinstance(body, Mapping):
        raise BadRequest("malformed", "body must be a JSON object")
    unknown = set(body) - {"type", "subject_id", "requester_email", "agent_id", "correction",
                           "request_id"}
    if unknown:
        raise BadRequest("malformed", f"unknown fields: {', '.join(sorted(unknown))}")
    kind = body.get("type")
    if kind not in TYPES:
        raise BadRequest("malformed", f"type must be one of {', '.join(TYPES)}")
    subject = body.get("subject_id")
    if not isinstance(subject, str) or not subject.strip():
        raise BadRequest("malformed", "subject_id must be a non-empty string")
    email = body.get("requester_email")
    if not isinstance(email, str) or "@" not in email:
        raise BadRequest("malformed", "requester_email must be an e-mail address")
    agent = body.get("agent_id")
    if agent is not None and (not isinstance(agent, str) or not agent.strip()):
        raise BadRequest("malformed", "agent_id must be a non-empty string when given")
    if agent == C8_AGENT:
        raise BadRequest("forbidden_agent", f"{C8_AGENT} is reserved for the pipeline", 403)
    correction = body.get("correction")
    if kind == "correct":
        correction = check_correction(correction)
    elif correction is not None:
        raise BadRequest("malformed", "correction is only for type=correct")
    request_id = body.get("request_id") or str(uuid.uuid4())
    try:
        request_id = str(uuid.UUID(str(request_id)))
    except ValueError:
        raise BadRequest("malformed", "request_id must be a UUID") from None
    return {"request_id": request_id, "type": kind, "subject_id": subject,
            "requester_email": email, "agent_id": agent, "submitted_at": now_ms,
            "correction": correction}


def check_correction(correction: Any) -> dict[str, str]:
    if not isinstance(correction, Mapping) or not correction:
        raise BadRequest("malformed", "correction must be a non-empty object of field -> value")
    bad = sorted(set(correction) - set(CORRECTABLE))
    if bad:
        raise BadRequest("malformed", f"fields not correctable: {', '.join(bad)} "
                                      f"(correctable: {', '.join(sorted(CORRECTABLE))})")
    out = {}
    for name, value in correction.items():
        text = value if isinstance(value, str) else json.dumps(value) if value is not None \
            else "null"
        text = text.strip('"') if isinstance(value, bool | int) else text
        try:
            CORRECTABLE[name](text)
        except ValueError as exc:
            raise BadRequest("malformed", f"correction.{name}: {exc}") from None
        out[str(name)] = text
    return out


def verify(request: Mapping[str, Any], consent: Mapping[str, Any] | None) -> None:
    """Raise ``BadRequest`` unless the request comes from the account or its agent (C15)."""
    if request.get("agent_id") == C8_AGENT and not request.get("requester_email"):
        if request["type"] != "delete":
            raise BadRequest("forbidden_agent", f"{C8_AGENT} may only request deletion", 403)
        return  # raised by the pipeline itself (C8); see module docstring
    if consent is None:
        raise BadRequest("unknown_subject", "no account with that subject id", 404)
    agent = request.get("agent_id")
    if agent:
        if agent not in (consent.get("authorized_agents") or ()):
            raise BadRequest("agent_not_authorized",
                             "the agent is not authorized for this account", 403)
        return
    account = (consent.get("email") or "").strip().lower()
    if not account or account != (request.get("requester_email") or "").strip().lower():
        raise BadRequest("email_mismatch",
                         "the request does not come from the account's e-mail", 403)


def corrected(consent: Mapping[str, Any], correction: Mapping[str, str],
              now_ms: int) -> dict[str, Any]:
    """A new ConsentRecord with the corrected values, effective now."""
    record = dict(consent)
    for name, text in correction.items():
        record[name] = CORRECTABLE[name](text)
    record["effective_at"] = record["recorded_at"] = now_ms
    return record


def opted_out(consent: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    """C1/C15: the subject's state with targeted advertising off, effective now."""
    return corrected(consent, {"targeted_ads": "false"}, now_ms)


@dataclass
class RequestStatus:
    """What the audit topic says about one request."""

    request_id: str
    type: str = ""
    status: str = OPEN
    reason: str = ""
    submitted_at: int = 0
    completed_at: int | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    receipt: dict[str, Any] | None = None
    export: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        out = {"request_id": self.request_id, "type": self.type, "status": self.status,
               "submitted_at": self.submitted_at, "completed_at": self.completed_at,
               "steps": self.steps}
        if self.reason:
            out["reason"] = self.reason
        if self.receipt is not None:
            out["receipt"] = self.receipt
        return out


def observe(statuses: dict[str, RequestStatus], audit: Mapping[str, Any]) -> RequestStatus | None:
    """Fold one AuditRecord into ``statuses`` (records of one request arrive in order)."""
    request_id = audit.get("request_id")
    if not request_id:
        return None
    st = statuses.get(request_id)
    if st is None:
        st = statuses[request_id] = RequestStatus(request_id, type=audit["action"],
                                                  submitted_at=audit["occurred_at"])
    step, status = audit["step"], audit["status"]
    detail = audit.get("detail") or ""
    entry: dict[str, Any] = {"step": step, "status": status, "at": audit["occurred_at"],
                             "actor": audit.get("actor", "")}
    parsed: Any = None
    if detail.startswith("{"):
        try:
            parsed = json.loads(detail)
        except ValueError:
            parsed = None
    if step != "receipt" and detail:
        entry["detail"] = parsed if parsed is not None else detail
    st.steps.append(entry)
    if step == "receipt" and isinstance(parsed, dict):
        st.receipt = parsed
    if status == "rejected":
        st.status, st.reason = REJECTED, detail
        st.completed_at = audit["occurred_at"]
    elif status == "failed":
        st.status, st.reason = FAILED, detail
        st.completed_at = audit["occurred_at"]
    elif step == "complete" and status == "done":
        st.status = DONE
        st.completed_at = audit["occurred_at"]
    return st


def fold_status(records: Iterable[Mapping[str, Any]]) -> dict[str, RequestStatus]:
    statuses: dict[str, RequestStatus] = {}
    for rec in records:
        observe(statuses, rec)
    return statuses


# Milestones of a deletion's audit trail: (name, step, status, actor prefix).
DELETION_MILESTONES = (
    ("intake", "intake", "started", ""),
    ("ledger", "ledger", "done", ""),
    ("tombstones", "tombstones", "done", ""),
    ("worker_barrier", "sink_purge", "started", ""),
    ("sink_purge", "sink_purge", "done", "sink"),
    ("key_shred", "key_shred", "done", ""),
    ("verify", "verify", "done", ""),
    ("complete", "complete", "done", ""),
)


def deletion_timeline(steps: Iterable[Mapping[str, Any]], submitted_at: int) -> dict[str, float]:
    """Seconds spent before each milestone of a deletion, from its audit steps.

    Each value is the time from the previous milestone (the first: from ``submitted_at``)
    to the first audit record of this one, so the values add up to request-to-receipt.
    Milestones missing from the trail are left out.
    """
    at: dict[str, int] = {}
    for s in steps:
        for name, step, status, actor in DELETION_MILESTONES:
            if name not in at and s["step"] == step and s["status"] == status and \
                    str(s.get("actor", "")).startswith(actor):
                at[name] = int(s["at"])
    out: dict[str, float] = {}
    previous = submitted_at
    for name, *_ in DELETION_MILESTONES:
        if name in at:
            out[name] = (at[name] - previous) / 1000
            previous = at[name]
    return out


__all__ = ["C8_AGENT", "CORRECTABLE", "DELETION_MILESTONES", "DELETION_STEPS", "TYPES",
           "BadRequest", "RequestStatus", "check_correction", "corrected", "deletion_timeline",
           "fold_status", "observe", "opted_out", "parse_api_request", "verify"]
