"""Control records of the synthetic traffic: consent records and their changes, requests."""

from __future__ import annotations

import random
from typing import Any

from streams.traffic_model import Subject, email, server_id_for, uuid_of, year_of

__all__ = ["CONSENT_CHANGES", "birth_year_for", "consent_change", "consent_record",
           "server_prefs", "subject_request"]


def birth_year_for(band: str, year: int, rng: random.Random) -> int | None:
    """A birth year that puts the subject unambiguously in ``band`` all ``year`` long."""
    spans = {"under_13": (6, 12), "age_13_15": (14, 16), "age_16_17": (17, 18),
             "adult": (19, 80)}
    if band not in spans:
        return None
    lo, hi = spans[band]
    return year - rng.randint(lo, hi)


def server_prefs(subject_id: str, rng: random.Random, count: int = 2,
                 **switches: bool | None) -> list[dict[str, Any]]:
    """Preference entries for the subject's servers (see ``server_id_for``)."""
    out = []
    for i in range(count):
        entry: dict[str, Any] = {"server_id": server_id_for(subject_id, i)}
        for key in ("crash_reports", "push_notifications", "optional_telemetry",
                    "metadata_matching"):
            entry[key] = switches.get(key, rng.choice((True, False, None)))
        out.append(entry)
    return out


def consent_record(subject: Subject, at_ms: int, rng: random.Random,
                   age_year: int | None = None) -> dict[str, Any]:
    """The subject's first consent record, effective ``at_ms``; age via band or birth year
    (a birth year keeps the subject in its band all of ``age_year``, default ``at_ms``'s)."""
    year = age_year or year_of(at_ms)
    by = birth_year_for(subject.age_band, year, rng) if rng.random() < 0.5 else None
    band = None if by is not None or subject.age_band == "unknown" else subject.age_band
    opt_in = subject.jurisdiction in ("EU", "GB")
    servers = [{"server_id": s, "crash_reports": not opt_in or rng.random() < 0.5,
                "push_notifications": True, "optional_telemetry": rng.choice((True, None)),
                "metadata_matching": rng.choice((True, False, None))} for s in subject.servers]
    return {
        "subject_id": subject.subject_id, "effective_at": at_ms, "recorded_at": at_ms,
        "policy_version": "2024-06-28", "jurisdiction": subject.jurisdiction,
        "birth_year": by, "age_band": band, "managed_profile": subject.managed_profile,
        "email": subject.email,
        "targeted_ads": rng.random() < 0.8 if not opt_in else rng.random() < 0.3,
        "activity_sharing": rng.random() < 0.3,
        "nonessential_cookies": rng.random() < (0.4 if opt_in else 0.85),
        "optional_playback_data": rng.random() < 0.7 if opt_in else None,
        "limit_sensitive": rng.random() < 0.05, "servers": servers,
    }


CONSENT_CHANGES = ("targeted_ads_off", "sharing_on", "sharing_off", "cookies_off",
                   "crash_reports_off", "notifications_off")


def consent_change(previous: dict[str, Any], at_ms: int, rng: random.Random) -> dict[str, Any]:
    """A later consent record: one switch flipped (opt-outs mostly), effective ``at_ms``."""
    rec = dict(previous, effective_at=at_ms, recorded_at=at_ms,
               servers=[dict(s) for s in previous["servers"]])
    change = rng.choice(CONSENT_CHANGES if rec["servers"] else CONSENT_CHANGES[:4])
    if change == "targeted_ads_off":
        rec["targeted_ads"] = False
    elif change in ("sharing_on", "sharing_off"):
        rec["activity_sharing"] = change == "sharing_on"
    elif change == "cookies_off":
        rec["nonessential_cookies"] = False
    else:
        key = "crash_reports" if change == "crash_reports_off" else "push_notifications"
        rng.choice(rec["servers"])[key] = False
    return rec


def subject_request(subject_id: str, requester_email: str, at_ms: int, rng: random.Random,
                    kind: str | None = None) -> dict[str, Any]:
    """A ``SubjectRequest``: mostly deletion and access, some correction and opt-out."""
    kind = kind or rng.choices(("delete", "access", "correct", "opt_out"), (4, 4, 1, 1))[0]
    return {
        "request_id": uuid_of(rng.getrandbits(128)), "type": kind, "subject_id": subject_id,
        "requester_email": requester_email, "agent_id": None, "submitted_at": at_ms,
        "correction": {"email": email(rng)} if kind == "correct" else None,
    }
