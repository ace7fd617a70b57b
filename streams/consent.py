"""Subject state: consent and preferences with event-time history (pure).

A ``ConsentRecord`` (control.consent) is the subject's complete preference state from
its ``effective_at`` on. ``apply(history, record)`` folds one record into the subject's
``SubjectHistory``; ``history.at(event_time)`` returns the state in force at that time,
so a change effective at t governs events with event time >= t whatever order records
and events arrive in. A switch left ``None`` means "the jurisdiction's default" (resolved
by the engine from the policy file). History keeps at most ``MAX_ENTRIES`` states; events
older than the oldest kept state see ``None`` (no record: fail closed).
"""

from __future__ import annotations

import bisect
import calendar
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ADULT",
    "AGE_16_17",
    "MAX_ENTRIES",
    "UNDER_13",
    "UNDER_16",
    "UNKNOWN_AGE",
    "ServerPrefs",
    "SubjectHistory",
    "SubjectState",
    "apply",
    "state_from_record",
]

MAX_ENTRIES = 16

# Age classes, ordered. Selling/sharing needs >= AGE_16_17 (C9); UNKNOWN_AGE is below all.
UNKNOWN_AGE = -1
UNDER_13 = 0
UNDER_16 = 1
AGE_16_17 = 2
ADULT = 3

_BAND_CLASS = {"under_13": UNDER_13, "age_13_15": UNDER_16, "age_16_17": AGE_16_17, "adult": ADULT}


@functools.cache  # a few hundred birth years; four lookups per consent record
def _jan1_ms(year: int) -> int:
    return calendar.timegm((year, 1, 1, 0, 0, 0)) * 1000


# Subject states, their server switches and histories are immutable by contract
# (histories share states; the engines memoize on them) but not frozen dataclasses: a
# frozen ``__init__`` sets every slot through ``object.__setattr__``, about 8x the cost
# of plain stores, and one of each is built per consent record on the worker's main
# thread (D20). Equality and hashing are those of a frozen dataclass (``unsafe_hash``).
@dataclass(slots=True, unsafe_hash=True)
class ServerPrefs:
    """A server owner's switches; ``None`` = jurisdiction default."""

    crash_reports: bool | None = None
    push_notifications: bool | None = None
    optional_telemetry: bool | None = None
    metadata_matching: bool | None = None


@dataclass(slots=True, unsafe_hash=True)
class SubjectState:
    """One subject's consent and preferences as of ``effective_at``."""

    subject_id: str
    effective_at: int
    recorded_at: int = 0
    policy_version: str | None = None
    jurisdiction: str = "ZZ"
    birth_year: int | None = None
    age_band: str | None = None
    managed_profile: bool = False
    email: str | None = None
    targeted_ads: bool | None = None
    activity_sharing: bool | None = None
    nonessential_cookies: bool | None = None
    optional_playback_data: bool | None = None
    limit_sensitive: bool | None = None
    servers: Mapping[str, ServerPrefs] = field(default_factory=dict, hash=False)
    # Precomputed age thresholds (epoch ms), from birth_year; see age_class().
    _known_13_from: int | None = field(default=None, repr=False, compare=False)
    _certain_13_from: int | None = field(default=None, repr=False, compare=False)
    _certain_16_from: int | None = field(default=None, repr=False, compare=False)
    _certain_18_from: int | None = field(default=None, repr=False, compare=False)
    # The engine's memo of this state resolved against one policy (defaults applied), and
    # the batch engine's (where its row of numbers is: ``batch_inputs._StateRows``);
    # invisible to equality and repr, recomputed for another policy object.
    _memo: Any = field(default=None, repr=False, compare=False)
    _batch_memo: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        by = self.birth_year
        if by is not None:
            # Known under 13 only while even a 1 January birthday leaves them 12 (C8);
            # 13/16/18 only once even a 31 December birthday makes them that old (C9).
            self._known_13_from = _jan1_ms(by + 13)
            self._certain_13_from = _jan1_ms(by + 14)
            self._certain_16_from = _jan1_ms(by + 17)
            self._certain_18_from = _jan1_ms(by + 19)

    def age_class(self, event_time: int) -> int:
        """The subject's age class at ``event_time`` (UNDER_13 means known under 13)."""
        if self._known_13_from is not None:
            if event_time < self._known_13_from:
                return UNDER_13
            if event_time < self._certain_16_from:  # type: ignore[operator]
                return UNDER_16
            if event_time < self._certain_18_from:  # type: ignore[operator]
                return AGE_16_17
            return ADULT
        if self.age_band is not None:
            return _BAND_CLASS.get(self.age_band, UNKNOWN_AGE)
        return UNKNOWN_AGE

    def server(self, server_id: str | None) -> ServerPrefs | None:
        return self.servers.get(server_id) if server_id is not None else None


def state_from_record(record: Mapping[str, Any]) -> SubjectState:
    """A ``SubjectState`` from a decoded ``ConsentRecord``. Arguments by position, in field
    order: by keyword they cost about 40% more instructions (D20); a test checks each one
    lands in its field."""
    servers = {
        str(s["server_id"]): ServerPrefs(s.get("crash_reports"), s.get("push_notifications"),
                                         s.get("optional_telemetry"), s.get("metadata_matching"))
        for s in record.get("servers") or ()
    }
    get = record.get
    return SubjectState(
        str(record["subject_id"]), int(record["effective_at"]), int(get("recorded_at") or 0),
        get("policy_version"), str(get("jurisdiction") or "ZZ"), get("birth_year"),
        get("age_band"), bool(get("managed_profile")), get("email"), get("targeted_ads"),
        get("activity_sharing"), get("nonessential_cookies"), get("optional_playback_data"),
        get("limit_sensitive"), servers)


@dataclass(slots=True, unsafe_hash=True)
class SubjectHistory:
    """A subject's states ordered by ``effective_at`` (at most ``MAX_ENTRIES``); immutable
    by contract, as ``SubjectState``."""

    times: tuple[int, ...] = ()
    states: tuple[SubjectState, ...] = ()

    def at(self, event_time: int) -> SubjectState | None:
        """The state in force at ``event_time``, or None if no record governs it."""
        i = bisect.bisect_right(self.times, event_time)
        return self.states[i - 1] if i else None

    @property
    def latest(self) -> SubjectState | None:
        return self.states[-1] if self.states else None

    def __len__(self) -> int:
        return len(self.states)


def apply(
    history: SubjectHistory | None,
    record: Mapping[str, Any],
    max_entries: int = MAX_ENTRIES,
) -> SubjectHistory:
    """Fold one decoded ``ConsentRecord`` into ``history`` (returns a new history).

    Records with the same ``effective_at`` keep the one recorded last (ties: the one
    applied last), so the result does not depend on arrival order otherwise.
    """
    new = state_from_record(record)
    if not history:  # the first record (most are): nothing to order it against
        return SubjectHistory((new.effective_at,), (new,))
    times = list(history.times)
    states = list(history.states)
    i = bisect.bisect_left(times, new.effective_at)
    if i < len(times) and times[i] == new.effective_at:
        if states[i].recorded_at > new.recorded_at:
            return history
        states[i] = new
    else:
        times.insert(i, new.effective_at)
        states.insert(i, new)
    if len(states) > max_entries:
        del times[: len(times) - max_entries]
        del states[: len(states) - max_entries]
    return SubjectHistory(tuple(times), tuple(states))
