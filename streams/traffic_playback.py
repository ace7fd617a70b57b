"""Playback events of many concurrent sessions, a chunk at a time, with numpy.

``cap`` slots each play one session after another (``traffic_sessions`` makes them). Each
playback event goes to a slot drawn at random: the slot's session emits its next event, or,
if its last one ended, the slot starts the next made session with "play". A session's
events are play, then pause, resume (after a pause), seek or ad_impression (ad-supported
titles), then stop or "complete" (the scrobble). While playing, ``position_ms`` advances
with the event time, up to the duration; a seek jumps, a complete ends at the duration.

Within a chunk, events are grouped by slot; which session each belongs to is found in a
few rounds (one per session a slot starts), then types and positions of all events are
computed at once: along a run of would-be pauses, pauses alternate with resumes (a pause
needs a playing session), and a position is the played time summed since the last reset
(play, seek). Sessions start in event order, and a made session is skipped while its
subject has one open (a subject watches one thing at a time) or was deleted.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Mapping
from itertools import repeat

import numpy as np

from streams.traffic_sessions import SESSION_BATCH, SessionMaker
from streams.traffic_varints import encode_under_2_27

__all__ = ["CONCURRENT_SESSIONS", "KINDS", "Playback"]

CONCURRENT_SESSIONS = 2_000  # capped at a third of the subjects
KINDS = ("play", "pause", "resume", "seek", "stop", "complete", "ad_impression")
PLAY, PAUSE, RESUME, SEEK, STOP, COMPLETE, AD = range(len(KINDS))
_NEVER = np.iinfo(np.int64).max


class Playback:
    """The slots' sessions, carried from chunk to chunk; ``types`` are the encoded event
    types, ``deleted`` the stream's subjects with a deletion request."""

    def __init__(self, maker: SessionMaker, types: Mapping[str, bytes], subjects: int,
                 deleted: set[int]) -> None:
        self._maker, self._deleted = maker, deleted
        self._types = np.empty(len(KINDS), object)
        self._types[:] = [types[k] for k in KINDS]
        self.cap = cap = max(1, min(CONCURRENT_SESSIONS, subjects // 3))
        # Sessions made ahead, the next to take at ``_next`` (subjects and lengths also as
        # lists: read one by one).
        self._made = maker.make()
        self._made_subjects: list[int] = self._made.subject.tolist()
        self._made_lengths: list[int] = self._made.length.tolist()
        self._next = 0
        # The session of each slot: events left to emit (0: none, the slot's next event
        # starts one), events emitted, who, what, and where it stands.
        self._left = np.zeros(cap, np.int64)
        self._done = np.zeros(cap, np.int64)
        self._subject = np.zeros(cap, np.int64)
        self._duration = np.ones(cap, np.int64)
        self._ads = np.zeros(cap, bool)
        self._position = np.zeros(cap, np.int64)
        self._last = np.zeros(cap, np.int64)
        self._paused = np.zeros(cap, bool)
        self._sid, self._pre, self._post = (np.full(cap, b"", object) for _ in range(3))

    def values(self, head: bytes, ids: list[bytes], times: tuple[list[bytes], list[bytes]],
               now: np.ndarray, draws: np.ndarray) -> tuple[list[bytes], np.ndarray]:
        """The next playback events, encoded, and their subjects: envelope ``head``,
        event-id tails ``ids``, event times ``now`` (encoded in two pieces: ``times``) and
        three uniform draws each (rows: slot, choice, seek target)."""
        n = now.size
        slot = (draws[0] * self.cap).astype(np.int64)
        # by slot, in time order within one (as 16-bit numbers: a radix sort)
        order = np.argsort(slot.astype(np.uint16), kind="stable")
        at_slot = slot[order]
        rank = np.arange(n) - np.searchsorted(at_slot, at_slot)  # within the slot
        s, table = self._sessions(at_slot, rank, np.bincount(slot, minlength=self.cap), order)
        subject, sid, pre, post, duration, length, ads, done, start, position, last, \
            paused = table
        t, choice, seek = now[order], draws[1][order], draws[2][order]

        index = rank - start[s]  # the event's place among its session's in this chunk
        number = done[s] + index  # and among all its session's events
        first, play, end = index == 0, number == 0, number == length[s] - 1
        ad_break = ads[s] & (choice < 0.5)
        would_pause = ~play & ~end & ~ad_break & (choice < 0.75)
        carried_pause = first & paused[s]
        pause = _alternate(would_pause, first, carried_pause)
        was_paused = carried_pause | (np.concatenate(([False], pause[:-1])) & ~first)
        kind = np.select([play, end & (choice < 0.4), end, was_paused, ad_break, would_pause],
                         [PLAY, COMPLETE, STOP, RESUME, AD, PAUSE], SEEK)

        before = np.where(first, last[s], np.concatenate(([0], t[:-1])))
        played = np.where(play | was_paused, 0, t - before)
        lasts = duration[s]
        reset = play | (kind == SEEK) | (kind == COMPLETE)
        reset_to = np.where(play, 0, np.where(kind == SEEK, (seek * lasts).astype(np.int64),
                                              lasts))
        where = _since_reset(played, reset, first, reset_to, position[s], lasts - 1)

        self._carry(at_slot, s, number, end, where, t, pause, table)
        back = np.empty(n, np.intp)
        back[order] = np.arange(n)
        s, kind, where = s[back], kind[back], where[back]
        positions = (piece.tolist() for piece in encode_under_2_27(where))  # durations < 3 h
        values = list(map(b"".join, zip(repeat(head), ids, sid[s].tolist(), *times,
                                        self._types[kind].tolist(), pre[s].tolist(),
                                        *positions, post[s].tolist())))
        return values, subject[s]

    def _sessions(self, at_slot: np.ndarray, rank: np.ndarray, slot_events: np.ndarray,
                  event: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """The session of each event (in slot order, ``event`` its place in the chunk): the
        slot's open one (numbered as the slot) while it has events left, then sessions
        started now (numbered from ``cap``) in event order; and a table of every session:
        subject, sid, pre, post, duration, length, ads, events done before this chunk, the
        rank in its slot of its first event here, and position, last time, paused."""
        cap = self.cap
        # Python lists: read one by one below (numpy scalars cost ten times more).
        first = np.searchsorted(at_slot, np.arange(cap)).tolist()  # each slot's first event
        events, place = slot_events.tolist(), event.tolist()
        left, subject = self._left.tolist(), self._subject.tolist()
        free: dict[int, float] = {}  # subject -> the event ending its open session
        for slot in np.flatnonzero(self._left).tolist():
            free[subject[slot]] = (place[first[slot] + left[slot] - 1]
                                   if left[slot] <= events[slot] else math.inf)
        bound = left[:]  # ranks of each slot's events given a session so far
        # (event, slot) as event * cap + slot: one int to order the heap by
        due = [place[first[slot] + bound[slot]] * cap + slot
               for slot in np.flatnonzero(slot_events > self._left).tolist()]
        heapq.heapify(due)
        slots, lows, taken = [], [], []
        lengths, subjects = self._made_lengths, self._made_subjects
        while due:  # in event order, so a subject's sessions never overlap
            at, slot = divmod(heapq.heappop(due), cap)
            index = self._take(at, free)
            low, count = bound[slot], events[slot]
            bound[slot] = high = low + lengths[index]
            free[subjects[index]] = place[first[slot] + high - 1] if high <= count else math.inf
            if high < count:
                heapq.heappush(due, place[first[slot] + high] * cap + slot)
            slots.append(slot)
            lows.append(low)
            taken.append(index)
        new = self._made.at(np.array(taken, np.int64))
        self._made = self._made.at(slice(self._next, None))
        del self._made_subjects[:self._next], self._made_lengths[:self._next]
        self._next = 0
        # Each event's session: the last to start in its slot at or before its rank.
        k, carried = len(taken), np.flatnonzero(self._left)
        starts = np.concatenate((carried, np.array(slots, np.int64))) << 32 \
            | np.concatenate((np.zeros(carried.size, np.int64), np.array(lows, np.int64)))
        number = np.concatenate((carried, cap + np.arange(k)))
        by = np.argsort(starts)
        s = number[by][np.searchsorted(starts[by], at_slot << 32 | rank, side="right") - 1]
        zeros = np.zeros(k, np.int64)
        table = [np.concatenate(pair) for pair in (
            (self._subject, new.subject), (self._sid, new.sid), (self._pre, new.pre),
            (self._post, new.post), (self._duration, new.duration),
            (self._left + self._done, new.length), (self._ads, new.ads), (self._done, zeros),
            (np.zeros(cap, np.int64), np.array(lows, np.int64)), (self._position, zeros),
            (self._last, zeros), (self._paused, np.zeros(k, bool)))]
        return s, table

    def _take(self, at: int, free: dict[int, float]) -> int:
        """The next made session (its index) whose subject has no session open at event
        ``at`` and no deletion request (unless made sessions keep naming deleted ones)."""
        for skipped in itertools.count():
            if self._next == len(self._made_subjects):
                more = self._maker.make()
                self._made = self._made.then(more)
                self._made_subjects += more.subject.tolist()
                self._made_lengths += more.length.tolist()
            index, self._next = self._next, self._next + 1
            subject = self._made_subjects[index]
            if free.get(subject, -1) < at and (subject not in self._deleted
                                               or skipped >= SESSION_BATCH):
                return index
        raise AssertionError("unreachable")

    def _carry(self, at_slot: np.ndarray, s: np.ndarray, number: np.ndarray, end: np.ndarray,
               where: np.ndarray, t: np.ndarray, pause: np.ndarray,
               table: list[np.ndarray]) -> None:
        """Each slot's session as its last event in this chunk left it."""
        subject, sid, pre, post, duration, length, ads = table[:7]
        slots = np.flatnonzero(np.bincount(at_slot, minlength=self.cap))
        last = np.searchsorted(at_slot, slots, side="right") - 1
        ls, ended = s[last], end[last]
        self._left[slots] = np.where(ended, 0, length[ls] - number[last] - 1)
        self._done[slots] = np.where(ended, 0, number[last] + 1)
        self._position[slots], self._last[slots] = where[last], t[last]
        self._paused[slots] = pause[last]
        self._subject[slots], self._duration[slots] = subject[ls], duration[ls]
        self._ads[slots], self._sid[slots] = ads[ls], sid[ls]
        self._pre[slots], self._post[slots] = pre[ls], post[ls]


def _alternate(would: np.ndarray, first: np.ndarray, carried: np.ndarray) -> np.ndarray:
    """Which of the would-be pauses are pauses: along a run of them in one session every
    other one (the others resume), starting with a pause unless the run opens the chunk's
    events of a session that was paused (``carried``)."""
    index = np.arange(would.size)
    continues = np.concatenate(([False], would[:-1])) & ~first
    run = np.maximum.accumulate(np.where(would & ~continues, index, 0))
    return would & ((index - run + carried[run]) % 2 == 0)


def _since_reset(played: np.ndarray, reset: np.ndarray, first: np.ndarray,
                 reset_to: np.ndarray, carried: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Positions: from the last reset (or the session's carried position at its first event
    of the chunk) plus the time played since, capped at ``top``; a reset's own is
    ``reset_to``."""
    step = np.where(reset, 0, played)
    index = np.arange(step.size)
    since = np.maximum.accumulate(np.where(reset | first, index, 0))
    total = np.cumsum(step)
    base = np.where(reset, reset_to, carried)[since]
    return np.where(reset, reset_to, np.minimum(top, base + total - total[since] + step[since]))
