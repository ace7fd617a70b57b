"""The generator's event stream: encoded (topic, key, value) messages, pure and seeded.

Speed comes from templates, not shortcuts in the model: a record body (every field after
the four envelope fields ``event_id, subject_id, event_time, event_type``) is built from
the model once and encoded once, then reused with a fresh envelope:

- a playback session encodes its body once; each of its events (play, pause, resume,
  seek, ad_impression, then stop or complete, "complete" being the scrobble) splices in
  its own envelope and ``position_ms``;
- other schemas keep a pool of ``TEMPLATE_VARIANTS`` bodies per schema, each rebuilt from
  the model after ``template_reuse`` uses; the subject's own fields (``SUBJECT_FIELDS``:
  profile, device, e-mail, user name, server id) are holes filled per subject, so a
  server event names one of the subject's servers and an account event its e-mail.

Event ids are a run prefix (from the seed) plus a counter, so they are unique and
reproducible without a uuid per event. Logical topic names are the catalog's unprefixed
names (``raw.playback``, ``control.consent``, ...); the producer maps them.
"""

from __future__ import annotations

import random
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from streams.avro_fast import compile_fields, encode_long, encode_string
from streams.codec import Codec, default_codec
from streams.traffic_control import consent_change, consent_record, subject_request
from streams.traffic_model import DAY_MS, Population, Subject, TrafficConfig, uuid_of, year_of
from streams.traffic_records import RECORDS, personalize

__all__ = ["TEMPLATE_REUSE", "TEMPLATE_VARIANTS", "Message", "TrafficStream"]

Message = tuple[str, bytes, bytes]  # (logical topic, key, value)
TEMPLATE_VARIANTS = 64
TEMPLATE_REUSE = 32
SERVER_SCHEMAS = frozenset({"ServerConfigEvent", "CrashReportEvent", "PushNotificationEvent",
                            "ServerLibraryEvent", "RelayTransferEvent", "MetadataMatchEvent",
                            "IntegrationFulfilmentEvent"})
CONCURRENT_SESSIONS = 2_000  # capped at a third of the subjects
# Fields a pooled body takes from the subject, never from the pool (see personalize).
_PROFILE = ("profile_id", "managed_profile", "device_id")
SUBJECT_FIELDS: dict[str, tuple[str, ...]] = {
    "ActivityEvent": _PROFILE, "AccountEvent": (*_PROFILE, "email", "user_name"),
    "PaymentEvent": ("billing_email",),
    "ServerConfigEvent": ("server_id", "owner_email", "owner_user_name"),
    "CrashReportEvent": ("server_id", "owner_email"),
}


class _Schema:
    """Header, envelope enum codes and body encoders of one input schema."""

    def __init__(self, codec: Codec, name: str, reuse: int) -> None:
        info = codec.catalog.get(name)
        assert info is not None and info.topic is not None
        self.name, self.topic = name, info.topic
        self.header = b"\x00" + info.id.to_bytes(4, "big")
        fields = info.parsed["fields"]
        if [f["name"] for f in fields[:4]] != ["event_id", "subject_id", "event_time",
                                               "event_type"]:
            raise ValueError(f"{name}: input schemas must start with the envelope fields")
        self.types = {s: encode_long(i) for i, s in enumerate(fields[3]["type"]["symbols"])}
        body = fields[4:]
        self.body: Callable[[Mapping[str, Any]], bytes] = compile_fields(body)
        names = [f["name"] for f in body]
        cut = names.index("position_ms") if "position_ms" in names else len(names)
        self.pre = compile_fields(body[:cut])
        self.post = compile_fields(body[cut + 1:])
        # Pooled bodies (other schemas): the subject's own fields are holes between segments.
        holes = SUBJECT_FIELDS.get(name, ("server_id",) if name in SERVER_SCHEMAS else ())
        self.holes = tuple(sorted(holes, key=names.index))
        bounds = [names.index(h) for h in self.holes]
        starts = [0] + [b + 1 for b in bounds]
        ends = [*bounds, len(names)]
        self._segs = [compile_fields(body[a:b]) for a, b in zip(starts, ends, strict=True)]
        self._holes = [compile_fields([body[b]]) for b in bounds]
        self.pool: list[list[Any]] = [[b"", (), reuse] for _ in range(TEMPLATE_VARIANTS)]

    def segments(self, rec: Mapping[str, Any]) -> tuple[bytes, ...]:
        return tuple(seg(rec) for seg in self._segs)

    def subject_holes(self, subject: Subject, server: int,
                      rng: random.Random) -> tuple[bytes, ...]:
        """The subject's own values of the hole fields, encoded."""
        rec: dict[str, Any] = {h: "" for h in self.holes}
        personalize(self.name, rec, subject, rng)
        if subject.servers and "server_id" in rec:
            rec["server_id"] = subject.servers[server]
        return tuple(enc(rec) for enc in self._holes)


class _Session:
    __slots__ = (
        "ads",
        "duration",
        "id",
        "last",
        "playing",
        "position",
        "post",
        "pre",
        "remaining",
        "subject",
    )

    def __init__(self, subject: int, pre: bytes, post: bytes, duration: int, last: int,
                 remaining: int, ads: bool) -> None:
        self.subject, self.pre, self.post = subject, pre, post
        self.position, self.duration, self.last = 0, duration, last
        self.playing, self.remaining, self.ads = True, remaining, ads


class TrafficStream:
    """Seeded messages of one run; ``counts`` tallies what was emitted so far."""

    def __init__(self, config: TrafficConfig, codec: Codec | None = None,
                 template_reuse: int = TEMPLATE_REUSE) -> None:
        self.config = config
        self.codec = codec or default_codec()
        self.population = Population(config)
        self.rng = random.Random(f"{config.seed}:stream")
        self.schemas = {n: _Schema(self.codec, n, template_reuse) for n in RECORDS}
        self.clock = config.start_ms
        self.reuse = template_reuse
        subjects = self.population.subjects
        self.keys = [s.subject_id.encode() for s in subjects]
        self.sid_enc = [encode_string(s.subject_id) for s in subjects]
        self.owners = [i for i, s in enumerate(subjects) if s.servers]
        self.deleted: set[int] = set()
        self.consents: dict[int, dict[str, Any]] = {}
        self.hole_values: dict[tuple[int, str, int], tuple[bytes, ...]] = {}
        self.sessions: list[_Session] = []
        self.watching: set[int] = set()
        self._id_prefix = uuid_of(random.Random(f"{config.seed}:ids").getrandbits(128))[:24]
        self._counter = 0
        self.schema_counts: Counter[str] = Counter()
        self.topic_counts: Counter[str] = Counter()
        self.bad_counts: Counter[str] = Counter()
        self.request_counts: Counter[str] = Counter()
        self.events = 0
        self._started = False
        self._names = list(config.mix)
        self._cum = []
        total = 0.0
        for n in self._names:
            total += config.mix[n]
            self._cum.append(total)

    # -- control records ------------------------------------------------------------------

    def initial_consents(self) -> list[Message]:
        """Every consenting subject's first consent record, effective a day before start."""
        out = []
        at = self.config.start_ms - DAY_MS
        for i, s in enumerate(self.population.subjects):
            if s.has_consent:
                rng = random.Random(f"{self.config.seed}:c:{s.subject_id}")
                rec = consent_record(s, at, rng, year_of(self.config.start_ms))
                self.consents[i] = rec
                out.append(self._control("control.consent", "ConsentRecord", i, rec))
        return out

    def _control(self, topic: str, schema: str, i: int, rec: Mapping[str, Any]) -> Message:
        self.topic_counts[topic] += 1
        self.schema_counts[schema] += 1
        return topic, self.keys[i], self.codec.encode(schema, rec)

    def _maybe_control(self, out: list[Message]) -> None:
        rng, cfg = self.rng, self.config
        if self.consents and rng.random() < cfg.consent_change_rate:
            i = rng.choice(list(self.consents)) if len(self.consents) < 64 else \
                self._live_subject()
            if i in self.consents:
                rec = consent_change(self.consents[i], self.clock, rng)
                self.consents[i] = rec
                out.append(self._control("control.consent", "ConsentRecord", i, rec))
        if rng.random() < cfg.request_rate:
            i = self._live_subject()
            subject = self.population.subjects[i]
            addr = self.consents[i]["email"] if i in self.consents else subject.email
            rec = subject_request(subject.subject_id, addr, self.clock, rng)
            self.request_counts[rec["type"]] += 1
            if rec["type"] == "delete":
                self.deleted.add(i)
            out.append(self._control("control.requests", "SubjectRequest", i, rec))

    # -- input events ---------------------------------------------------------------------

    def _live_subject(self, pool: list[int] | None = None) -> int:
        rng = self.rng
        for _ in range(100):
            i = rng.choice(pool) if pool else rng.randrange(len(self.keys))
            if i not in self.deleted:
                return i
        return i

    def _envelope(self, i: int, schema: _Schema, event_type: bytes) -> bytes:
        self._counter += 1
        event_id = f"{self._id_prefix}{self._counter:012x}".encode()
        return (schema.header + b"\x48" + event_id + self.sid_enc[i]
                + encode_long(self.clock) + event_type)

    def _playback(self) -> tuple[int, bytes]:
        rng, sessions = self.rng, self.sessions
        schema = self.schemas["PlaybackEvent"]
        cap = min(CONCURRENT_SESSIONS, len(self.keys) // 3)
        if len(sessions) < cap and (not sessions or rng.random() < 0.2):
            return self._start_session(schema)
        k = rng.randrange(len(sessions))
        s = sessions[k]
        if s.playing:
            s.position = min(s.duration - 1, s.position + self.clock - s.last)
        s.last = self.clock
        s.remaining -= 1
        if s.remaining <= 0:
            sessions[k] = sessions[-1]
            sessions.pop()
            self.watching.discard(s.subject)
            if rng.random() < 0.4:
                kind, s.position = "complete", s.duration
            else:
                kind = "stop"
        elif not s.playing:
            kind, s.playing = "resume", True
        else:
            r = rng.random()
            if s.ads and r < 0.5:
                kind = "ad_impression"
            elif r < 0.75:
                kind, s.playing = "pause", False
            else:
                kind, s.position = "seek", rng.randrange(s.duration)
        value = (self._envelope(s.subject, schema, schema.types[kind]) + s.pre
                 + encode_long(s.position) + s.post)
        return s.subject, value

    def _start_session(self, schema: _Schema) -> tuple[int, bytes]:
        rng = self.rng
        i = self._live_subject()
        while i in self.watching:  # one session per subject at a time
            i = self._live_subject()
        self.watching.add(i)
        subject = self.population.subjects[i]
        rec = personalize("PlaybackEvent", RECORDS["PlaybackEvent"](rng, subject.subject_id),
                          subject, rng)
        _content(rec, subject, self.population, rng, self.config.ad_supported_share)
        ads = rec["content_source"] == "ad_supported"
        session = _Session(i, schema.pre(rec), schema.post(rec), rec["duration_ms"],
                           self.clock, rng.randint(2, 12 if ads else 7), ads)
        self.sessions.append(session)
        value = self._envelope(i, schema, schema.types["play"]) + session.pre + b"\x00" \
            + session.post
        return i, value

    def _templated(self, name: str) -> tuple[int, bytes]:
        rng = self.rng
        schema = self.schemas[name]
        i = self._live_subject(self.owners if name in SERVER_SCHEMAS else None)
        subject = self.population.subjects[i]
        srv = rng.randrange(len(subject.servers)) if name in SERVER_SCHEMAS else 0
        holes = self.hole_values.get((i, name, srv))
        if holes is None:
            holes = self.hole_values[(i, name, srv)] = schema.subject_holes(subject, srv, rng)
        slot = schema.pool[rng.randrange(TEMPLATE_VARIANTS)]
        if slot[2] >= self.reuse:
            rec = RECORDS[name](rng, subject.subject_id)
            slot[0], slot[1], slot[2] = schema.types[rec["event_type"]], schema.segments(rec), 0
        slot[2] += 1
        segs = slot[1]
        parts = [self._envelope(i, schema, slot[0]), segs[0]]
        for h, seg in zip(holes, segs[1:], strict=True):
            parts.append(h)
            parts.append(seg)
        return i, b"".join(parts)

    def batch(self, n: int) -> list[Message]:
        """The next ``n`` input events (some replaced by bad records) plus control records."""
        out: list[Message] = []
        if not self._started:
            self._started = True
            out.extend(self.initial_consents())
        rng, cfg = self.rng, self.config
        gap = 2 * cfg.event_gap_ms + 1
        bad = cfg.bad_fraction
        for name in rng.choices(self._names, cum_weights=self._cum, k=n):
            self.clock += rng.randrange(gap)
            if name == "PlaybackEvent":
                i, value = self._playback()
            else:
                i, value = self._templated(name)
            topic = self.schemas[name].topic
            key = self.keys[i]
            if bad and rng.random() < bad:
                topic, key, value = self._bad(name, topic, key, value)
            else:
                self.schema_counts[name] += 1
            self.topic_counts[topic] += 1
            out.append((topic, key, value))
            if cfg.consent_change_rate or cfg.request_rate:
                self._maybe_control(out)
        self.events += n
        return out

    def _bad(self, name: str, topic: str, key: bytes, value: bytes) -> Message:
        rng = self.rng
        kind = rng.choice(self.config.bad_kinds)
        self.bad_counts[kind] += 1
        if kind == "truncated":
            value = value[:rng.randint(6, len(value) - 1)]
        elif kind == "wrong_magic":
            value = bytes([rng.randint(1, 255)]) + value[1:]
        elif kind == "unknown_schema":
            value = b"\x00" + rng.randint(9_000, 9_999).to_bytes(4, "big") + value[5:]
        elif kind == "random_bytes":
            value = bytes([rng.randint(1, 255)]) + rng.randbytes(rng.randint(4, 60))
        elif kind == "wrong_topic":
            topic = rng.choice([t for t in ("raw.playback", "raw.activity", "raw.server")
                                if t != topic])
        else:  # key_mismatch
            other = rng.randrange(len(self.keys))
            key = self.keys[other if self.keys[other] != key else (other + 1) % len(self.keys)]
        return topic, key, value


def _content(rec: dict[str, Any], subject: Subject, population: Population,
             rng: random.Random, ad_share: float) -> None:
    """Give a new session its title: the subject's own library or the Zipf catalog."""
    if subject.library and rng.random() < 0.25:
        title, fname = rng.choice(subject.library)
        local_id = zlib.crc32(fname.encode()) % 10**6
        rec.update(content_source="personal", content_id=f"local-{local_id:06d}",
                   title=title, file_name=fname if rng.random() < 0.5 else None, ad_id=None)
        return
    catalog = population.catalog
    rank = catalog.pick(rng)
    ads = rng.random() < ad_share
    rec.update(content_source="ad_supported" if ads else "catalog",
               content_id=f"cat-{rank + 1:06d}", title=catalog.titles[rank],
               genre=catalog.genres[rank], content_rating=catalog.ratings[rank],
               duration_ms=catalog.durations[rank], file_name=None,
               ad_id=f"ad-{rng.randint(1, 999)}" if ads else None)
