"""The pure decision engine: (event, subject state, policy) -> Decision.

No I/O and no Kafka, faust or ClickHouse imports. Order of checks for one event:

1. C8  - subject known to be under 13 at event time -> ``DeleteSubject`` (nothing emitted).
2. Gates (C3, C4, C5, C6) - a switched-off collection drops the whole event.
3. Per destination the event's schema may reach (policy ``sources``):
   event types; C21 consent version; C9/C10 third parties never get minors, unknown
   age, managed profiles or subjects without a consent record (fail closed); C17
   personal content never goes to third parties; required switches (C1, C2, C4, C17).
4. The destination's compiled field plan builds the output record (C7, C11, C13, C16,
   C17, C18, C19 are field-level rules) with ``processing_region`` (C12).

No destination left -> ``Dropped`` with the first blocking reason. A switch left unset in
the subject's consent record takes its jurisdiction's default from the policy file;
``state=None`` takes the fallback jurisdiction's (fail-closed) defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.consent import AGE_16_17, UNDER_13, SubjectState
from streams.decisions import (
    Decision,
    DeleteSubject,
    Dropped,
    Output,
    Routed,
    make_output,
    make_routed,
)
from streams.errors import PolicyError, SerializationError
from streams.policy import SUBJECT_FLAGS, Defaults, Policy

__all__ = [
    "Decision",
    "DeleteSubject",
    "Dropped",
    "Output",
    "Routed",
    "decide",
]

_DELETE = DeleteSubject()
_NO_CONSENT = Dropped("no_consent_record", "C9")
_MINOR = Dropped("under_16_or_unknown_age", "C9")
_MANAGED = Dropped("managed_profile", "C10")
_PERSONAL = Dropped("personal_content_not_shared", "C17")
_OLD_VERSION = Dropped("consent_predates_purpose", "C21")
_NO_DESTINATION = Dropped("no_permitted_destination", "C13")


def _resolve(state: SubjectState | None, policy: Policy) -> tuple[Defaults, int, dict[str, bool]]:
    """(jurisdiction defaults, consented version index, subject switches with defaults)."""
    if state is None:
        defaults = policy.fallback_defaults
        return defaults, -1, {f: getattr(defaults, f) for f in SUBJECT_FLAGS}
    memo = state._memo
    if memo is not None and memo[0] is policy:
        return memo[1]
    defaults = policy.defaults_for(state.jurisdiction)
    flags = {}
    for f in SUBJECT_FLAGS:
        value = getattr(state, f)
        flags[f] = getattr(defaults, f) if value is None else value
    resolved = (defaults, policy.version_index(state.policy_version), flags)
    object.__setattr__(state, "_memo", (policy, resolved))
    return resolved


def _server_switch(
    flag: str, state: SubjectState | None, defaults: Defaults, record: Mapping[str, Any]
) -> bool:
    value: bool | None = None
    if state is not None:
        prefs = state.server(record.get("server_id"))
        if prefs is not None:
            value = getattr(prefs, flag)
    return bool(getattr(defaults, flag)) if value is None else value


def decide(
    source_schema: str,
    record: Mapping[str, Any],
    state: SubjectState | None,
    subject_key: bytes,
    policy: Policy,
) -> Decision:
    """Decide what happens to one decoded input event; see the module docstring."""
    plan = policy.plans.get(source_schema)
    if plan is None:
        raise PolicyError(f"{policy.source}: {source_schema!r} is not an input schema")
    if state is None:
        adult_enough = False
    else:
        age = state.age_class(record["event_time"])
        if age == UNDER_13:
            return _DELETE  # C8
        adult_enough = age >= AGE_16_17
    defaults, version_index, flags = _resolve(state, policy)

    for gate in plan.gates:
        if gate.field is None or record.get(gate.field) in gate.values:
            if gate.scope == "subject":
                on = flags[gate.flag]
            else:
                on = _server_switch(gate.flag, state, defaults, record)
            if not on:
                return gate.dropped

    personal = plan.personal_field is not None and record.get(plan.personal_field) == (
        plan.personal_value
    )
    variant = (1 if personal else 0) | (2 if flags["limit_sensitive"] else 0)
    managed = (state is not None and state.managed_profile) or bool(record.get("managed_profile"))

    outputs: list[Output] = []
    blocked: Dropped | None = None
    region = policy.processing_region
    version = policy.version
    for dest in plan.dests:
        if dest.event_types is not None and record.get("event_type") not in dest.event_types:
            continue
        reason: Dropped | None = None
        if dest.since_index > version_index and dest.since_index > 0:
            reason = _OLD_VERSION  # C21
        elif dest.third_party and (state is None or not adult_enough or managed):
            reason = _NO_CONSENT if state is None else (_MINOR if not adult_enough else _MANAGED)
        elif dest.exclude_personal and personal:
            reason = _PERSONAL  # C17
        else:
            for flag, dropped in dest.requires_subject:
                if not flags[flag]:
                    reason = dropped
                    break
            else:
                for flag, dropped in dest.requires_server:
                    if not _server_switch(flag, state, defaults, record):
                        reason = dropped
                        break
        if reason is not None:
            blocked = blocked or reason
            continue
        try:
            built = dest.builders[variant](record, subject_key, region, version)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise SerializationError(
                f"{source_schema} record does not fit its schema: {type(exc).__name__}: {exc}"
            ) from exc
        outputs.append(make_output(dest.name, built))
    if outputs:
        return make_routed(tuple(outputs))
    return blocked or _NO_DESTINATION
