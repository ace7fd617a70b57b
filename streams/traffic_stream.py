"""The generator's event stream: encoded (topic, key, value) messages, pure and seeded.

Speed comes from bulk draws and templates, not shortcuts in the model:

- choices that do not depend on the stream's state (the schema of each event, event-time
  steps, subjects, pooled bodies, which events turn bad or bring a control record) are
  drawn for a whole chunk of events at once with numpy, seeded from the run's seed;
- bodies are encoded once and reused (``traffic_sessions``: one per playback session;
  ``traffic_templates``: pooled bodies of the other schemas with the subject's own fields
  spliced in), so an event costs its envelope and one join;
- envelopes are prepared per chunk: an event id is a run prefix (from the seed), the chunk
  number and the event's place in the chunk (unique and reproducible, no uuid per event);
  event times are varint-encoded in one numpy pass.

Control records (initial consents, consent changes, subject requests) and bad records are
rare and built one by one from the model. Topics are the catalog's logical (unprefixed)
names (``raw.playback``, ``control.consent``, ...); the producer maps them.
"""

from __future__ import annotations

import gc
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from streams.avro_fast import compile_fields, encode_long, encode_string
from streams.codec import Codec, default_codec
from streams.traffic_control import consent_change, consent_record, subject_request
from streams.traffic_faults import corrupt
from streams.traffic_model import (
    DAY_MS,
    FastRandom,
    Population,
    TrafficConfig,
    uuid_of,
    year_of,
)
from streams.traffic_playback import Playback
from streams.traffic_sessions import SessionMaker
from streams.traffic_templates import (
    SERVER_SCHEMAS,
    TEMPLATE_REUSE,
    TEMPLATE_VARIANTS,
    TemplatePool,
)
from streams.traffic_varints import encode_times

__all__ = ["CHUNK", "Columns", "Message", "TrafficStream", "gc_paused"]

Message = tuple[str, bytes, bytes]  # (logical topic, key, value)
Columns = tuple[list[str], list[bytes], list[bytes]]  # topics, keys, values
CHUNK = 1 << 14  # events drawn at once; an event id ends in its place in the chunk (4 hex)
_ID_TAILS = np.array([b"%04x" % k for k in range(CHUNK)], object)
_ENVELOPE = ["event_id", "subject_id", "event_time", "event_type"]


class TrafficStream:
    """Seeded messages of one run; the counters tally what was emitted so far.

    ``deleted`` holds the subjects with a deletion request (they get no new events or
    sessions); it only grows.
    """

    def __init__(self, config: TrafficConfig, codec: Codec | None = None,
                 template_reuse: int = TEMPLATE_REUSE) -> None:
        self.config = config
        self.codec = codec or default_codec()
        self.population = Population(config)
        self.rng = FastRandom(f"{config.seed}:stream")
        self._bulk = np.random.default_rng(self.rng.getrandbits(128))
        self.clock = config.start_ms
        subjects = self.population.subjects
        self.keys = [s.subject_id.encode() for s in subjects]
        self._keys = np.array(self.keys, dtype=object)
        self._sids = np.array([encode_string(s.subject_id) for s in subjects], dtype=object)
        self._owners = np.array([i for i, s in enumerate(subjects) if s.servers], np.int64)
        self._servers = np.array([max(1, len(s.servers)) for s in subjects], np.int64)
        self.deleted: set[int] = set()
        self._dead = np.zeros(len(subjects), bool)
        self.consents: dict[int, dict[str, Any]] = {}
        self.schema_counts: Counter[str] = Counter()
        self.topic_counts: Counter[str] = Counter()
        self.bad_counts: Counter[str] = Counter()
        self.request_counts: Counter[str] = Counter()
        self.events = 0
        self._started = False
        self._chunks = 0
        self._id_prefix = uuid_of(random.Random(f"{config.seed}:ids").getrandbits(128))[:24]

        self._names = list(config.mix)
        self._cum = np.cumsum([float(config.mix[n]) for n in self._names])
        catalog = self.codec.catalog
        self._headers: dict[str, bytes] = {}
        self._controls: dict[str, Callable[[Mapping[str, Any]], bytes]] = {}
        for name in ("ConsentRecord", "SubjectRequest"):
            info = catalog.get(name)
            assert info is not None
            self._headers[name] = b"\x00" + info.id.to_bytes(4, "big")
            self._controls[name] = compile_fields(info.parsed["fields"])
        topics = []
        self._pools: dict[str, TemplatePool] = {}
        tables: dict[tuple[Any, ...], tuple[np.ndarray, ...]] = {}
        for name in self._names:
            info = catalog.get(name)
            assert info is not None and info.topic is not None
            fields = info.parsed["fields"]
            if [f["name"] for f in fields[:4]] != _ENVELOPE:
                raise ValueError(f"{name}: input schemas must start with the envelope fields")
            types = {s: encode_long(i) for i, s in enumerate(fields[3]["type"]["symbols"])}
            self._headers[name] = b"\x00" + info.id.to_bytes(4, "big")
            topics.append(info.topic)
            if name == "PlaybackEvent":
                maker = SessionMaker(fields[4:], self.population, config, template_reuse,
                                     self.rng, self._bulk)
                self._playback = Playback(maker, types, len(subjects), self.deleted)
            else:
                self._pools[name] = TemplatePool(name, fields[4:], types, self.population,
                                                 int(self._servers.max()), template_reuse,
                                                 self.rng, tables)
        self._topics = np.array(topics, dtype=object)

    # -- control records ------------------------------------------------------------------

    def initial_consents(self) -> list[Message]:
        """Every consenting subject's first consent record, effective a day before start.

        The first ``batch`` starts with them unless they were taken here already."""
        self._started = True
        out = []
        at = self.config.start_ms - DAY_MS
        year = year_of(self.config.start_ms)
        rng = FastRandom(f"{self.config.seed}:consents")
        for i, s in enumerate(self.population.subjects):
            if s.has_consent:
                rec = consent_record(s, at, rng, year)
                self.consents[i] = rec
                out.append(self._control("control.consent", "ConsentRecord", i, rec))
        return out

    def _control(self, topic: str, schema: str, i: int, rec: Mapping[str, Any]) -> Message:
        self.topic_counts[topic] += 1
        self.schema_counts[schema] += 1
        return topic, self.keys[i], self._headers[schema] + self._controls[schema](rec)

    def _control_records(self, n: int, now: np.ndarray) -> list[tuple[int, list[Message]]]:
        """Consent changes and subject requests following events of a chunk of ``n``:
        (event position, records), in order."""
        bulk, cfg = self._bulk, self.config
        due = [(int(k), 0) for k in np.flatnonzero(bulk.random(n) < cfg.consent_change_rate)]
        due += [(int(k), 1) for k in np.flatnonzero(bulk.random(n) < cfg.request_rate)]
        out: dict[int, list[Message]] = {}
        for k, kind in sorted(due):
            at = int(now[k])
            msg = self._consent_change(at) if kind == 0 else self._request(at)
            if msg is not None:
                out.setdefault(k, []).append(msg)
        return sorted(out.items())

    def _consent_change(self, at_ms: int) -> Message | None:
        if not self.consents:
            return None
        rng = self.rng
        i = rng.choice(list(self.consents)) if len(self.consents) < 64 else self._live_subject()
        if i not in self.consents:
            return None
        rec = self.consents[i] = consent_change(self.consents[i], at_ms, rng)
        return self._control("control.consent", "ConsentRecord", i, rec)

    def _request(self, at_ms: int) -> Message:
        i = self._live_subject()
        subject = self.population.subjects[i]
        addr = self.consents[i]["email"] if i in self.consents else subject.email
        rec = subject_request(subject.subject_id, addr, at_ms, self.rng)
        self.request_counts[rec["type"]] += 1
        if rec["type"] == "delete":
            self.deleted.add(i)
        return self._control("control.requests", "SubjectRequest", i, rec)

    # -- subjects ---------------------------------------------------------------------------

    def _live_subject(self) -> int:
        """A subject without a deletion request (if 100 draws find one)."""
        rng = self.rng
        for _ in range(100):
            i = rng.randrange(len(self.keys))
            if i not in self.deleted:
                break
        return i

    def _draw_subjects(self, n: int, owners: bool) -> np.ndarray:
        """``n`` live subjects (server owners only if ``owners`` and there are any)."""
        pool = self._owners if owners and self._owners.size else None
        size = len(self.keys) if pool is None else pool.size
        out = self._bulk.integers(0, size, n)
        if pool is not None:
            out = pool[out]
        if len(self.deleted) != int(self._dead.sum()):  # ``deleted`` only grows
            self._dead[list(self.deleted)] = True
        for _ in range(100):
            dead = np.flatnonzero(self._dead[out])
            if not dead.size:
                break
            redrawn = self._bulk.integers(0, size, dead.size)
            out[dead] = redrawn if pool is None else pool[redrawn]
        return out

    # -- input events ---------------------------------------------------------------------

    def batch(self, n: int) -> list[Message]:
        """The next ``n`` input events (some replaced by bad records) plus control records."""
        return list(zip(*self.columns(n), strict=True))

    def columns(self, n: int) -> Columns:
        """``batch(n)`` as three lists: topics, keys, values (no tuple per message)."""
        topics: list[str] = []
        keys: list[bytes] = []
        values: list[bytes] = []
        with gc_paused():
            if not self._started:
                for topic, key, value in self.initial_consents():
                    topics.append(topic)
                    keys.append(key)
                    values.append(value)
            done = 0
            while done < n:
                size = min(CHUNK, n - done)
                more = self._chunk(size)
                topics += more[0]
                keys += more[1]
                values += more[2]
                done += size
        self.events += n
        return topics, keys, values

    def _chunk(self, n: int) -> Columns:
        bulk, cfg = self._bulk, self.config
        codes = np.searchsorted(self._cum, bulk.random(n) * self._cum[-1], side="right")
        times = self.clock + np.cumsum(bulk.integers(0, 2 * cfg.event_gap_ms + 1, n))
        self.clock = int(times[-1])
        controls = self._control_records(n, times)
        # The envelope: framing header and event id (length 36: run prefix, chunk number,
        # place in the chunk) of each schema, subject id and event time of each event.
        id_head = b"\x48" + f"{self._id_prefix}{self._chunks:08x}".encode()
        self._chunks += 1
        lows, highs = encode_times(times)
        # Events grouped by schema (in event order within one): each group is encoded at
        # once, and the groups' outputs, concatenated, are the events in ``order``.
        order = np.argsort(codes.astype(np.uint8), kind="stable")  # bytes: a radix sort
        bounds = np.searchsorted(codes[order], np.arange(len(self._names) + 1)).tolist()
        encoded: list[bytes] = []
        who: list[np.ndarray] = []
        for code, name in enumerate(self._names):
            at = order[bounds[code]:bounds[code + 1]]
            if not at.size:
                continue
            head, ids = self._headers[name] + id_head, _ID_TAILS[at].tolist()
            clock = lows[at].tolist(), highs[at].tolist()
            if name == "PlaybackEvent":
                played, watchers = self._playback.values(head, ids, clock, times[at],
                                                          bulk.random((3, at.size)))
                encoded += played
                who.append(watchers)
                continue
            pool = self._pools[name]
            subjects = self._draw_subjects(at.size, name in SERVER_SCHEMAS)
            holes = subjects * pool.servers
            if name in SERVER_SCHEMAS:
                holes += (bulk.random(at.size) * self._servers[subjects]).astype(np.int64)
            encoded += pool.values(head, ids, self._sids[subjects].tolist(), clock, holes,
                                   bulk.integers(0, TEMPLATE_VARIANTS, at.size))
            who.append(subjects)
        in_order = np.empty(n, object)
        in_order[order] = encoded
        values: list[bytes] = in_order.tolist()
        subjects = np.empty(n, np.int64)
        subjects[order] = np.concatenate(who)
        topics: list[str] = self._topics[codes].tolist()
        keys: list[bytes] = self._keys[subjects].tolist()
        good = codes
        if cfg.bad_fraction and cfg.bad_kinds:
            bad = np.flatnonzero(bulk.random(n) < cfg.bad_fraction)
            for k in bad.tolist():
                kind = self.rng.choice(cfg.bad_kinds)
                self.bad_counts[kind] += 1
                topics[k], keys[k], values[k] = corrupt(self.rng, kind, topics[k], keys[k],
                                                        values[k], self.keys)
                self.topic_counts[topics[k]] += 1
            good = np.delete(codes, bad)
        # Good events counted by schema: a Counter updated from every topic would take a
        # twentieth of the stream's time.
        for code, count in enumerate(np.bincount(good, minlength=len(self._names)).tolist()):
            if count:
                self.schema_counts[self._names[code]] += count
                self.topic_counts[self._topics[code]] += count
        for k, records in reversed(controls):  # each after the event it follows
            topics[k + 1:k + 1] = [r[0] for r in records]
            keys[k + 1:k + 1] = [r[1] for r in records]
            values[k + 1:k + 1] = [r[2] for r in records]
        return topics, keys, values


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: generating allocates a few tuples and lists per
    event and makes no reference cycles, so collecting then would only walk the heap
    (population, caches, the batch) again and again."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
