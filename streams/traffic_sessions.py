"""Playback sessions: play, then pause, resume, seek or ad_impression, then stop or complete.

A session's body is encoded when it is made and reused by each of its events, which splice
in their own envelope and ``position_ms``; "complete" is the scrobble. A subject watches
one thing at a time, on one of its devices, a title of its personal library or of the
Zipf-ranked catalog (some ad-supported). The rest of the body (app version, location,
bitrate, data tier, segment) comes from pooled playback records of the traffic model,
each rebuilt after ``reuse`` sessions, as the other schemas' templates are.

Sessions are made ``SESSION_BATCH`` at a time from bulk draws, and start when the stream
needs one (skipping a made session whose subject is watching or was deleted meanwhile).
"""

from __future__ import annotations

import operator
import random
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streams.traffic_layout import BodyLayout, encode_longs
from streams.traffic_model import GENRES, RATINGS, Population, Subject, TrafficConfig
from streams.traffic_records import RECORDS, subject_value
from streams.traffic_templates import TEMPLATE_VARIANTS, TemplateSlots

__all__ = ["CONCURRENT_SESSIONS", "SESSION_BATCH", "Sessions"]

CONCURRENT_SESSIONS = 2_000  # capped at a third of the subjects
SESSION_BATCH = 256
ADS = 999  # ad ids ad-1 .. ad-999
# The runs of holes of a playback body before position_ms: two of device fields, one of
# content fields; after it: the duration, the ad id.
_DEVICE = (("profile_id", "managed_profile", "device_id", "platform"),
           ("ip_address", "postal_code", "country"))
_CONTENT = ("content_id", "content_source", "title", "genre", "content_rating", "file_name")
_LATER = (("duration_ms",), ("ad_id",))
# (subject, pre, post, duration, events after play, ad-supported)
Made = tuple[int, bytes, bytes, int, int, bool]


_PRE, _POST, _SUBJECT = (operator.attrgetter(a) for a in ("pre", "post", "subject"))


class _Session:
    __slots__ = ("ads", "duration", "last", "playing", "position", "post", "pre", "remaining",
                 "subject")

    def __init__(self, made: Made, last: int) -> None:
        self.subject, self.pre, self.post, self.duration, self.remaining, self.ads = made
        self.position, self.last, self.playing = 0, last, True


class Sessions:
    """The open playback sessions of a stream and the events they emit.

    ``deleted`` is the stream's set of subjects with a deletion request; ``bulk`` supplies
    the uniform draws, ``rng`` the rare ones (personal-library details).
    """

    def __init__(self, body: Sequence[Mapping[str, Any]], types: Mapping[str, bytes],
                 population: Population, config: TrafficConfig, reuse: int,
                 rng: random.Random, bulk: np.random.Generator, deleted: set[int]) -> None:
        names = [f["name"] for f in body]
        cut = names.index("position_ms")
        self._pre = BodyLayout(body[:cut], [h for run in _DEVICE for h in run] + [*_CONTENT])
        self._post = BodyLayout(body[cut + 1:], [h for run in _LATER for h in run])
        if self._pre.runs != (*_DEVICE, _CONTENT) or self._post.runs != _LATER:
            raise ValueError(f"PlaybackEvent: fields out of the expected order {names}")
        self._kinds = {k: types[k] for k in ("play", "pause", "resume", "seek", "stop",
                                             "complete", "ad_impression")}
        self._population, self._config = population, config
        self._rng, self._bulk, self._deleted = rng, bulk, deleted
        self.cap = min(CONCURRENT_SESSIONS, len(population.subjects) // 3)
        self.active: list[_Session] = []
        self.watching: set[int] = set()
        self._made: list[Made] = []
        self._templates = TemplateSlots(self._template, reuse)
        subjects = population.subjects
        self._devices = [self._subject_devices(s) for s in subjects]
        self._device_count = np.array([len(s.devices) for s in subjects], np.int64)
        self._has_library = np.array([bool(s.library) for s in subjects])
        self._titles = [self._title(rank, ads) for rank in range(len(population.catalog.titles))
                        for ads in (False, True)]  # at 2 * rank + ads
        self._popularity = np.array(population.catalog.cum)
        ad = self._post.encoders["ad_id"]
        self._ads = [ad(None), *(ad(f"ad-{n}") for n in range(1, ADS + 1))]

    def bodies(self, now: list[int], draws: Sequence[list[float]]
               ) -> tuple[list[bytes], list[int]]:
        """Encoded bodies (event type first) and subjects of the next playback events, at
        event times ``now``, with four uniform draws each."""
        active, cap, kinds = self.active, self.cap, self._kinds
        play, pause, resume, seek = kinds["play"], kinds["pause"], kinds["resume"], kinds["seek"]
        stop, complete, ad = kinds["stop"], kinds["complete"], kinds["ad_impression"]
        sessions: list[_Session] = []
        types: list[bytes] = []
        positions: list[int] = []
        count = len(active)
        for t, r1, r2, r3, r4 in zip(now, *draws, strict=True):
            if count < cap and (not count or r1 < 0.2):
                s = self._start(t)
                count += 1
                kind = play
            else:
                n = int(r2 * count)
                s = active[n]
                if s.playing:
                    p = s.position + t - s.last
                    s.position = p if p < s.duration else s.duration - 1
                s.last = t
                s.remaining -= 1
                if s.remaining <= 0:
                    active[n] = active[-1]
                    active.pop()
                    count -= 1
                    self.watching.discard(s.subject)
                    if r3 < 0.4:
                        kind, s.position = complete, s.duration
                    else:
                        kind = stop
                elif not s.playing:
                    kind, s.playing = resume, True
                elif s.ads and r3 < 0.5:
                    kind = ad
                elif r3 < 0.75:
                    kind, s.playing = pause, False
                else:
                    kind, s.position = seek, int(r4 * s.duration)
            sessions.append(s)
            types.append(kind)
            positions.append(s.position)
        bodies = list(map(b"".join, zip(types, map(_PRE, sessions), encode_longs(positions),
                                        map(_POST, sessions), strict=True)))
        return bodies, list(map(_SUBJECT, sessions))

    def _start(self, now: int) -> _Session:
        for skipped in range(10 * SESSION_BATCH):
            if not self._made:
                self._make()
            made = self._made.pop()
            subject = made[0]
            # a deleted subject only if made sessions keep naming deleted subjects
            if subject not in self.watching and (subject not in self._deleted
                                                 or skipped >= SESSION_BATCH):
                break
        self.watching.add(subject)
        session = _Session(made, now)
        self.active.append(session)
        return session

    def _make(self) -> None:
        """Make the next ``SESSION_BATCH`` sessions: subject, device, title (personal or
        catalog, by popularity), ads, pooled body and length drawn in bulk."""
        n = SESSION_BATCH
        u_subject, u_device, u_own, u_rank, u_ads, u_ad, u_slot, u_length = \
            self._bulk.random((8, n))
        subjects = (u_subject * len(self._devices)).astype(np.int64)
        devices = (u_device * self._device_count[subjects]).astype(np.int64)
        own = (u_own < 0.25) & self._has_library[subjects]
        ranks = np.minimum(np.searchsorted(self._popularity, u_rank * self._popularity[-1],
                                           side="right"), self._popularity.size - 1)
        ads = (u_ads < self._config.ad_supported_share) & ~own
        ad_ids = np.where(ads, 1 + (u_ad * ADS).astype(np.int64), 0)
        lengths = 2 + (u_length * np.where(ads, 11, 6)).astype(np.int64)
        bodies = self._templates.pick((u_slot * TEMPLATE_VARIANTS).astype(np.int64))
        made = []
        for i, d, mine, title, ad, length, (pre, post) in zip(
                subjects.tolist(), devices.tolist(), own.tolist(),
                (2 * ranks + ads).tolist(), ad_ids.tolist(), lengths.tolist(), bodies,
                strict=True):
            content, duration, encoded = self._own_title(i) if mine else self._titles[title]
            made.append((i, pre % (*self._devices[i][d], content),
                         post % (encoded, self._ads[ad]), duration, length, ad > 0))
        made.reverse()  # popped from the end: start them in the order made
        self._made = made

    def _template(self) -> tuple[bytes, bytes]:
        rec = RECORDS["PlaybackEvent"](self._rng, None)
        return self._pre.template(rec), self._post.template(rec)

    def _subject_devices(self, subject: Subject) -> list[tuple[bytes, ...]]:
        """The encoded device fields (two runs) of each of ``subject``'s devices."""
        out = []
        for device in subject.devices:
            rec = {f: subject_value("PlaybackEvent", f, subject, device, 0)
                   for run in _DEVICE for f in run}
            out.append(tuple(self._pre.encode(rec, run) for run in _DEVICE))
        return out

    def _title(self, rank: int, ads: bool) -> tuple[bytes, int, bytes]:
        """The encoded content fields, duration and encoded duration of catalog title
        ``rank``, ad-supported or not."""
        catalog = self._population.catalog
        rec = {"content_id": f"cat-{rank + 1:06d}",
               "content_source": "ad_supported" if ads else "catalog",
               "title": catalog.titles[rank], "genre": catalog.genres[rank],
               "content_rating": catalog.ratings[rank], "file_name": None}
        duration = catalog.durations[rank]
        return (self._pre.encode(rec, _CONTENT), duration,
                self._post.encoders["duration_ms"](duration))

    def _own_title(self, i: int) -> tuple[bytes, int, bytes]:
        """The encoded content fields, duration and encoded duration of a title of subject
        ``i``'s library."""
        rng = self._rng
        title, fname = rng.choice(self._population.subjects[i].library)
        local_id = zlib.crc32(fname.encode()) % 10**6
        rec = {"content_id": f"local-{local_id:06d}", "content_source": "personal",
               "title": title, "file_name": fname if rng.random() < 0.5 else None,
               "genre": rng.choice(GENRES) if rng.random() < 0.7 else None,
               "content_rating": rng.choice(RATINGS) if rng.random() < 0.7 else None}
        duration = rng.randint(600_000, 10_800_000)
        return (self._pre.encode(rec, _CONTENT), duration,
                self._post.encoders["duration_ms"](duration))
