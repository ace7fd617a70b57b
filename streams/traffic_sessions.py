"""Playback sessions: play, then pause, resume, seek or ad_impression, then stop or complete.

A session's body is encoded when it starts and reused by each of its events, which splice
in their own envelope and ``position_ms``; "complete" is the scrobble. A subject watches
one thing at a time, on one of its devices, a title of its personal library or of the
Zipf-ranked catalog (some ad-supported). The rest of the body (app version, location,
bitrate, data tier, segment) comes from a pool of playback records of the traffic model,
each rebuilt after ``reuse`` sessions, as the other schemas' templates are.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from streams.avro_fast import encode_long
from streams.traffic_layout import BodyLayout
from streams.traffic_model import GENRES, RATINGS, Population, TrafficConfig
from streams.traffic_records import RECORDS, subject_value
from streams.traffic_templates import TEMPLATE_VARIANTS

__all__ = ["CONCURRENT_SESSIONS", "Sessions"]

CONCURRENT_SESSIONS = 2_000  # capped at a third of the subjects
_DEVICE = ("profile_id", "managed_profile", "device_id", "platform", "ip_address",
           "postal_code", "country")
_CONTENT = ("content_id", "content_source", "title", "genre", "content_rating", "file_name")
_LATER = ("duration_ms", "ad_id")  # after position_ms
ADS = 999  # ad ids ad-1 .. ad-999
# Uniform draws a session start takes: subject, device, library or catalog, title rank,
# ad-supported, ad id, pooled body, number of events.
_START_DRAWS = 8


class _Session:
    __slots__ = ("ads", "duration", "last", "playing", "position", "post", "pre", "remaining",
                 "subject")

    def __init__(self, subject: int, pre: bytes, post: bytes, duration: int,
                 last: int, remaining: int, ads: bool) -> None:
        self.subject, self.pre, self.post = subject, pre, post
        self.position, self.duration, self.last = 0, duration, last
        self.playing, self.remaining, self.ads = True, remaining, ads


class Sessions:
    """The open playback sessions of a stream and the events they emit.

    ``live(u)`` gives a subject without a deletion request for a uniform draw ``u``;
    ``bulk`` supplies the uniform draws, ``rng`` the rare ones (personal-library details,
    a subject already watching).
    """

    def __init__(self, body: Sequence[Mapping[str, Any]], types: Mapping[str, bytes],
                 population: Population, config: TrafficConfig, reuse: int,
                 rng: random.Random, bulk: np.random.Generator,
                 live: Callable[[float], int]) -> None:
        names = [f["name"] for f in body]
        cut = names.index("position_ms")
        self._pre = BodyLayout(body[:cut], _DEVICE + _CONTENT)
        if self._pre.holes != _DEVICE + _CONTENT:
            raise ValueError(f"PlaybackEvent: fields out of the expected order {names}")
        self._post = BodyLayout(body[cut + 1:], _LATER)
        self._kinds = {k: types[k] for k in ("play", "pause", "resume", "seek", "stop",
                                             "complete", "ad_impression")}
        self._population, self._config, self._reuse = population, config, reuse
        self._rng, self._bulk, self._live = rng, bulk, live
        self.cap = min(CONCURRENT_SESSIONS, len(population.subjects) // 3)
        self.active: list[_Session] = []
        self.watching: set[int] = set()
        self._draws: Iterator[list[float]] = iter(())
        self._slots: list[list[Any]] = [[b"", b"", 0] for _ in range(TEMPLATE_VARIANTS)]
        self._devices: list[list[tuple[bytes, ...]] | None] = [None] * len(population.subjects)
        self._titles: list[tuple[tuple[bytes, ...], int, bytes] | None] = (
            [None] * (2 * len(population.catalog.titles)))
        ad = self._post.encoders["ad_id"]
        self._ads = [ad(None), *(ad(f"ad-{n}") for n in range(1, ADS + 1))]

    def bodies(self, now: list[int], draws: Sequence[list[float]]
               ) -> tuple[list[bytes], list[int]]:
        """Encoded bodies (event type first) and subjects of the next playback events, at
        event times ``now``, with four uniform draws each."""
        active, cap, kinds, join = self.active, self.cap, self._kinds, b"".join
        play, pause, resume, seek = kinds["play"], kinds["pause"], kinds["resume"], kinds["seek"]
        stop, complete, ad = kinds["stop"], kinds["complete"], kinds["ad_impression"]
        bodies: list[bytes] = []
        who: list[int] = []
        for t, r1, r2, r3, r4 in zip(now, *draws, strict=True):
            if len(active) < cap and (not active or r1 < 0.2):
                s = self._start(t)
                kind = play
            else:
                n = int(r2 * len(active))
                s = active[n]
                if s.playing:
                    s.position = min(s.duration - 1, s.position + t - s.last)
                s.last = t
                s.remaining -= 1
                if s.remaining <= 0:
                    active[n] = active[-1]
                    active.pop()
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
            bodies.append(join((kind, s.pre, encode_long(s.position), s.post)))
            who.append(s.subject)
        return bodies, who

    def _start(self, now: int) -> _Session:
        u = next(self._draws, None)
        if u is None:
            self._draws = iter(self._bulk.random((256, _START_DRAWS)).tolist())
            u = next(self._draws)
        u_subject, u_device, u_own, u_rank, u_ads, u_ad, u_slot, u_length = u
        i = self._live(u_subject)
        while i in self.watching:  # one session per subject at a time
            i = self._live(self._rng.random())
        self.watching.add(i)
        devices = self._devices[i] or self._subject_devices(i)
        device = devices[int(u_device * len(devices))]
        if u_own < 0.25 and self._population.subjects[i].library:
            content, duration, encoded = self._own_title(i)
            ads, ad = False, self._ads[0]
        else:
            rank = self._population.catalog.rank_at(u_rank)
            ads = u_ads < self._config.ad_supported_share
            content, duration, encoded = self._titles[2 * rank + ads] or self._title(rank, ads)
            ad = self._ads[1 + int(u_ad * ADS)] if ads else self._ads[0]
        slot = self._slots[int(u_slot * TEMPLATE_VARIANTS)]
        if not slot[2]:
            rec = RECORDS["PlaybackEvent"](self._rng, self._population.subjects[i].subject_id)
            slot[:] = self._pre.template(rec), self._post.template(rec), self._reuse
        slot[2] -= 1
        session = _Session(i, slot[0] % (device + content), slot[1] % (encoded, ad), duration,
                           now, 2 + int(u_length * (11 if ads else 6)), ads)
        self.active.append(session)
        return session

    def _subject_devices(self, i: int) -> list[tuple[bytes, ...]]:
        """The encoded device fields of each of subject ``i``'s devices."""
        subject = self._population.subjects[i]
        devices = self._devices[i] = [
            self._pre.hole_values({f: subject_value("PlaybackEvent", f, subject, device, 0)
                                   for f in _DEVICE}, _DEVICE)
            for device in subject.devices]
        return devices

    def _title(self, rank: int, ads: bool) -> tuple[tuple[bytes, ...], int, bytes]:
        """The encoded content fields, duration and encoded duration of catalog title
        ``rank``, ad-supported or not."""
        catalog = self._population.catalog
        rec = {"content_id": f"cat-{rank + 1:06d}",
               "content_source": "ad_supported" if ads else "catalog",
               "title": catalog.titles[rank], "genre": catalog.genres[rank],
               "content_rating": catalog.ratings[rank], "file_name": None}
        duration = catalog.durations[rank]
        title = self._titles[2 * rank + ads] = (self._pre.hole_values(rec, _CONTENT), duration,
                                                self._post.encoders["duration_ms"](duration))
        return title

    def _own_title(self, i: int) -> tuple[tuple[bytes, ...], int, bytes]:
        """The encoded content fields and duration of a title of subject ``i``'s library."""
        rng = self._rng
        title, fname = rng.choice(self._population.subjects[i].library)
        local_id = zlib.crc32(fname.encode()) % 10**6
        rec = {"content_id": f"local-{local_id:06d}", "content_source": "personal",
               "title": title, "file_name": fname if rng.random() < 0.5 else None,
               "genre": rng.choice(GENRES) if rng.random() < 0.7 else None,
               "content_rating": rng.choice(RATINGS) if rng.random() < 0.7 else None}
        duration = rng.randint(600_000, 10_800_000)
        return (self._pre.hole_values(rec, _CONTENT), duration,
                self._post.encoders["duration_ms"](duration))
