"""The traffic generator's model: reproducible, decodable, distributed as configured."""

from __future__ import annotations

import io
import itertools
import random
from collections import Counter
from typing import Any

import fastavro
import pytest

from streams.avro_fast import compile_fields
from streams.codec import FramingError, MalformedRecordError, UnknownSchemaError, default_codec
from streams.traffic_model import TrafficConfig, year_of
from streams.traffic_records import RECORDS
from streams.traffic_stream import TrafficStream

N = 30_000


@pytest.fixture(scope="module")
def run() -> tuple[TrafficStream, list[tuple[str, bytes, bytes]]]:
    stream = TrafficStream(TrafficConfig(seed=3, subjects=2_000, bad_fraction=0.05))
    return stream, stream.batch(N)


def test_same_seed_same_bytes_different_seed_differs() -> None:
    def msgs(seed: int) -> list[tuple[str, bytes, bytes]]:
        return TrafficStream(TrafficConfig(seed=seed, subjects=300)).batch(3_000)

    assert msgs(1) == msgs(1)
    assert msgs(1) != msgs(2)


@pytest.mark.parametrize("schema", sorted(RECORDS))
def test_fast_encoder_matches_fastavro(schema: str) -> None:
    info = default_codec().catalog.get(schema)
    assert info is not None
    enc = compile_fields(info.parsed["fields"])
    rng = random.Random(5)
    for _ in range(50):
        rec = RECORDS[schema](rng, None)
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, info.parsed, rec)
        assert enc(rec) == buf.getvalue()


def _classify(topic: str, key: bytes, value: bytes) -> str:
    codec = default_codec()
    try:
        info, rec = codec.decode_info(value)
    except UnknownSchemaError:
        return "unknown_schema"
    except MalformedRecordError:
        return "truncated"
    except FramingError:
        try:
            codec.decode(b"\x00" + value[1:])
            return "wrong_magic"
        except Exception:
            return "random_bytes"
    if info.topic != topic:
        return "wrong_topic"
    if rec.get("subject_id", "").encode() != key:
        return "key_mismatch"
    return "good"


def test_every_good_record_decodes_and_bad_records_match_summary(run) -> None:  # type: ignore[no-untyped-def]
    stream, msgs = run
    kinds = Counter(_classify(t, k, v) for t, k, v in msgs)
    good = kinds.pop("good")
    assert dict(kinds) == dict(stream.bad_counts)
    assert good == sum(stream.schema_counts.values())
    bad = sum(kinds.values())
    assert abs(bad / N - 0.05) < 0.006  # ~4 sigma at N=30k


def test_event_mix_matches_config(run) -> None:  # type: ignore[no-untyped-def]
    stream, _ = run
    mix = stream.config.mix
    total = sum(stream.schema_counts[n] for n in mix)
    for name, weight in mix.items():
        expected = weight / sum(mix.values())
        assert abs(stream.schema_counts[name] / total - expected) < 0.01, name


def test_population_age_bands_and_jurisdictions_match_config() -> None:
    cfg = TrafficConfig(seed=4, subjects=20_000)
    stream = TrafficStream(cfg)
    consents = [default_codec().decode(v)[1] for _, _, v in stream.initial_consents()]
    subjects = stream.population.subjects
    bands = Counter(s.age_band for s in subjects)
    for band, share in cfg.age_bands.items():
        assert abs(bands[band] / len(subjects) - share / sum(cfg.age_bands.values())) < 0.01
    jur = Counter(c["jurisdiction"] for c in consents)
    for j, share in cfg.jurisdictions.items():
        assert abs(jur[j] / len(consents) - share / sum(cfg.jurisdictions.values())) < 0.01
    # The consent record states the band (age_band or a birth year inside the band).
    year = year_of(cfg.start_ms)
    by_id = {s.subject_id: s for s in subjects}
    for c in consents:
        band = by_id[c["subject_id"]].age_band
        if c["birth_year"] is not None:
            assert band != "unknown"
            age = year - c["birth_year"]
            assert {"under_13": age <= 12, "age_13_15": 14 <= age <= 16,
                    "age_16_17": 17 <= age <= 18, "adult": age >= 19}[band]
        else:
            assert c["age_band"] == (None if band == "unknown" else band)
    managed = sum(s.managed_profile for s in subjects) / len(subjects)
    assert abs(managed - cfg.managed_profile_share) < 0.01


def test_playback_titles_follow_zipf_head_share(run) -> None:  # type: ignore[no-untyped-def]
    stream, msgs = run
    codec = default_codec()
    titles: Counter[str] = Counter()
    for topic, _, v in msgs:
        if topic == "raw.playback" and v[0] == 0:
            try:
                _, rec = codec.decode(v)
            except Exception:
                continue
            if rec["event_type"] == "play" and rec["content_source"] != "personal":
                titles[rec["content_id"]] += 1
    plays = sum(titles.values())
    head = sum(titles[f"cat-{r:06d}"] for r in range(1, 11))
    expected = stream.population.catalog.head_share(10)
    assert abs(head / plays - expected) < 0.05


def test_sessions_well_formed() -> None:
    stream = TrafficStream(TrafficConfig(seed=9, subjects=500, bad_fraction=0))
    msgs = stream.batch(20_000)
    codec = default_codec()
    sessions: dict[str, list[dict[str, Any]]] = {}
    for topic, _, v in msgs:
        if topic == "raw.playback":
            rec = codec.decode(v)[1]
            sessions.setdefault(rec["subject_id"], []).append(rec)
    finished = 0
    for events in sessions.values():
        # a subject watches one thing at a time: a play starts its next session
        runs: list[list[dict[str, Any]]] = []
        for e in events:
            if e["event_type"] == "play":
                runs.append([])
            assert runs, "a session starts with play"
            runs[-1].append(e)
        for r in runs:
            times = [e["event_time"] for e in r]
            assert times == sorted(times)
            assert len({(e["device_id"], e["content_id"]) for e in r}) == 1
            ends = [i for i, e in enumerate(r) if e["event_type"] in ("stop", "complete")]
            assert not ends or ends == [len(r) - 1]
            finished += bool(ends)
            for a, b in itertools.pairwise(r):
                if b["event_type"] == "resume":
                    assert a["event_type"] == "pause"
    assert finished > 100


def _sessions_of(msgs: list[tuple[str, bytes, bytes]]) -> list[list[dict[str, Any]]]:
    """Each subject's playback events split at "play", in message order."""
    codec = default_codec()
    runs: dict[str, list[list[dict[str, Any]]]] = {}
    for topic, _, v in msgs:
        if topic == "raw.playback":
            rec = codec.decode(v)[1]
            subject = runs.setdefault(rec["subject_id"], [])
            if rec["event_type"] == "play":
                subject.append([])
            assert subject, "a session starts with play"
            subject[-1].append(rec)
    return [r for subject in runs.values() for r in subject]


def test_session_positions_follow_the_time_played() -> None:
    """While playing, position_ms advances with the event time (up to the duration); a
    pause holds it, a seek jumps within the title, a complete ends at its duration. A big
    batch over few subjects: many sessions per subject, none overlapping."""
    stream = TrafficStream(TrafficConfig(seed=12, subjects=120, bad_fraction=0))
    sessions = _sessions_of(stream.batch(40_000))
    assert len(sessions) > 1_000
    for events in sessions:
        assert len({(e["device_id"], e["content_id"], e["duration_ms"]) for e in events}) == 1
        assert events[0]["position_ms"] == 0
        for a, b in itertools.pairwise(events):
            dur = b["duration_ms"]
            if b["event_type"] == "seek":
                assert 0 <= b["position_ms"] < dur
            elif b["event_type"] == "complete":
                assert b["position_ms"] == dur
            elif a["event_type"] == "pause":
                assert b["position_ms"] == a["position_ms"]
            else:
                played = b["event_time"] - a["event_time"]
                assert b["position_ms"] == min(dur - 1, a["position_ms"] + played)
