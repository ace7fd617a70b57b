"""Playback sessions made ahead: who watches what, where, for how many events.

A session's body is encoded when it is made and reused by each of its events, which splice
in their own envelope, event type and ``position_ms`` (``traffic_playback``). A session is
one subject on one of its devices watching a title of its personal library or of the
Zipf-ranked catalog (some ad-supported); the rest of the body (app version, location,
bitrate, data tier, segment) comes from pooled playback records of the traffic model,
rebuilt as the other schemas' templates are. Sessions are made ``SESSION_BATCH`` at a time
from bulk draws.
"""

from __future__ import annotations

import operator
import random
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from streams.avro_fast import encode_string
from streams.traffic_layout import BodyLayout
from streams.traffic_model import GENRES, RATINGS, Population, Subject, TrafficConfig
from streams.traffic_records import RECORDS, subject_value
from streams.traffic_templates import TEMPLATE_VARIANTS, TemplateSlots

__all__ = ["SESSION_BATCH", "Made", "SessionMaker", "objects"]

SESSION_BATCH = 256
ADS = 999  # ad ids ad-1 .. ad-999
# The runs of holes of a playback body before position_ms: two of device fields, one of
# content fields; after it: the duration, the ad id.
_DEVICE = (("profile_id", "managed_profile", "device_id", "platform"),
           ("ip_address", "postal_code", "country"))
_CONTENT = ("content_id", "content_source", "title", "genre", "content_rating", "file_name")
_LATER = (("duration_ms",), ("ad_id",))


class Made(NamedTuple):
    """Sessions made ahead, column by column."""

    subject: np.ndarray  # int64
    sid: np.ndarray  # encoded subject id
    pre: np.ndarray  # encoded body before position_ms
    post: np.ndarray  # encoded body after it
    duration: np.ndarray  # int64
    length: np.ndarray  # int64: number of events, play included
    ads: np.ndarray  # bool: ad-supported

    def then(self, other: Made) -> Made:
        """These sessions, then ``other``."""
        return Made(*(np.concatenate(pair) for pair in zip(self, other, strict=True)))

    def at(self, index: np.ndarray | slice) -> Made:
        return Made(*(column[index] for column in self))


def objects(items: Sequence[Any]) -> np.ndarray:
    """A 1-d object array of ``items`` (numpy would unpack tuples)."""
    out = np.empty(len(items), object)
    out[:] = items
    return out


class SessionMaker:
    """Makes playback sessions of ``population`` in bulk; ``body`` is the PlaybackEvent
    fields after the envelope. ``bulk`` supplies the uniform draws, ``rng`` the rare ones
    (personal-library details) and the pooled records."""

    def __init__(self, body: Sequence[Mapping[str, Any]], population: Population,
                 config: TrafficConfig, reuse: int, rng: random.Random,
                 bulk: np.random.Generator) -> None:
        names = [f["name"] for f in body]
        cut = names.index("position_ms")
        self._pre = BodyLayout(body[:cut], [h for run in _DEVICE for h in run] + [*_CONTENT])
        self._post = BodyLayout(body[cut + 1:], [h for run in _LATER for h in run])
        if self._pre.runs != (*_DEVICE, _CONTENT) or self._post.runs != _LATER:
            raise ValueError(f"PlaybackEvent: fields out of the expected order {names}")
        self._population, self._config = population, config
        self._rng, self._bulk = rng, bulk
        self._templates = TemplateSlots(self._template, reuse)
        subjects = population.subjects
        self._sids = objects([encode_string(s.subject_id) for s in subjects])
        # Every device's two runs of encoded fields, subject after subject.
        devices = [d for s in subjects for d in self._subject_devices(s)]
        self._device_a, self._device_b = (objects(runs) for runs in zip(*devices, strict=True))
        self._device_count = np.array([len(s.devices) for s in subjects], np.int64)
        self._device_first = np.cumsum(self._device_count) - self._device_count
        self._has_library = np.array([bool(s.library) for s in subjects])
        catalog = population.catalog
        titles = [self._title(rank, ads) for rank in range(len(catalog.titles))
                  for ads in (False, True)]  # at 2 * rank + ads
        self._content, self._encoded_duration = (objects([t[i] for t in titles]) for i in (0, 2))
        self._duration = np.array([t[1] for t in titles], np.int64)
        self._popularity = np.array(catalog.cum)
        ad = self._post.encoders["ad_id"]
        self._ads = objects([ad(None), *(ad(f"ad-{n}") for n in range(1, ADS + 1))])

    def make(self) -> Made:
        """The next ``SESSION_BATCH`` sessions: subject, device, title (personal or catalog,
        by popularity), ads, pooled body and number of events drawn in bulk."""
        n = SESSION_BATCH
        u_subject, u_device, u_own, u_rank, u_ads, u_ad, u_slot, u_length = \
            self._bulk.random((8, n))
        subjects = (u_subject * self._has_library.size).astype(np.int64)
        devices = self._device_first[subjects] \
            + (u_device * self._device_count[subjects]).astype(np.int64)
        own = (u_own < 0.25) & self._has_library[subjects]
        ranks = np.minimum(np.searchsorted(self._popularity, u_rank * self._popularity[-1],
                                           side="right"), self._popularity.size - 1)
        ads = (u_ads < self._config.ad_supported_share) & ~own
        ad_ids = np.where(ads, 1 + (u_ad * ADS).astype(np.int64), 0)
        lengths = 3 + (u_length * np.where(ads, 11, 6)).astype(np.int64)  # play, 2-12 more
        titles = 2 * ranks + ads
        content, duration = self._content[titles], self._duration[titles]
        encoded = self._encoded_duration[titles]
        for k in np.flatnonzero(own).tolist():
            content[k], duration[k], encoded[k] = self._own_title(int(subjects[k]))
        pres, posts = zip(*self._templates.pick((u_slot * TEMPLATE_VARIANTS).astype(np.int64)),
                          strict=True)
        pre = map(operator.mod, pres, zip(self._device_a[devices].tolist(),
                                          self._device_b[devices].tolist(), content.tolist(),
                                          strict=True))
        post = map(operator.mod, posts, zip(encoded.tolist(), self._ads[ad_ids].tolist(),
                                            strict=True))
        return Made(subjects, self._sids[subjects], objects(list(pre)), objects(list(post)),
                    duration, lengths, ads)

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
