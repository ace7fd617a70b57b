"""Scenario R3b (issue 9, item 3): poison pills through the worker on the real broker.

Hostile records (truncated, huge varints, invalid UTF-8, wrong magic, unknown schema ids,
random bytes), each with producer headers, are written to every raw topic between valid
events. Each must land in the dead-letter topic exactly once with its original key and
bytes and the headers naming its source topic, partition, offset and error class (the
producer's own headers kept); the valid events around them are still processed and the
group's committed offsets reach the end of every input partition.
"""

from __future__ import annotations

import random
from pathlib import Path

from streams import codec as codec_module
from streams import kafka_clients
from streams.codec import default_codec
from streams.errors import SerializationError
from tests.factories import sample_events
from tests.integration.harness import (
    decoded,
    pipeline_settings,
    produce_events,
    read_topic,
    running_worker,
    wait_for_leaders,
)
from tests.integration.reliability.worker_proc import GroupProgress, wait_until
from tests.unit.test_codec_fuzz import SAMPLES, _zigzag

SEED = 31
PILLS = 300


def poison(rng: random.Random, n: int) -> list[bytes]:
    """``n`` distinct records the codec refuses, of every hostile kind."""
    known = [s.id for s in default_codec().catalog]
    out: dict[bytes, None] = {}
    while len(out) < n:
        data = bytearray(rng.choice(SAMPLES))
        kind = len(out) % 7
        at = rng.randint(5, len(data))
        if kind == 0:
            value = bytes(data[:rng.randint(0, len(data) - 1)])
        elif kind == 1:
            big = rng.choice([2**62, 2**63 - 1, rng.randint(2**20, 2**40)])
            value = bytes(data[:at]) + _zigzag(big) + bytes(data[at + 1:])
        elif kind == 2:
            value = bytes(data[:at]) + _zigzag(rng.randint(-(2**63), -1)) + bytes(data[at:])
        elif kind == 3:
            value = bytes(data[:at]) + b"\x04\xff\xfe" + bytes(data[at:])
        elif kind == 4:
            value = bytes([rng.randint(1, 255)]) + bytes(data[1:])
        elif kind == 5:
            sid = rng.randint(max(known) + 1, 2**32 - 1)
            value = b"\x00" + sid.to_bytes(4, "big") + bytes(data[5:])
        else:
            value = rng.randbytes(rng.randint(0, 64))
        try:
            default_codec().decode(value)
        except SerializationError:
            out[value] = None
    return list(out)


def test_poison_pills_dead_lettered_with_bytes_and_headers_offsets_advance(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    print(f"R3: pills={PILLS} seed={SEED}")
    settings = pipeline_settings(kafka_bootstrap, tmp_path, f"pill-{unique}.")
    cat = settings.catalog
    wait_for_leaders(settings)
    rng = random.Random(SEED)
    pills = poison(rng, PILLS)
    events = sample_events(600, seed=SEED, subjects=50)
    produce_events(settings, events[:300])
    producer = kafka_clients.producer(kafka_bootstrap)
    sent: dict[bytes, tuple[str, bytes]] = {}
    for i, value in enumerate(pills):
        topic = cat.raw[i % len(cat.raw)].name
        key = f"pill-{i}".encode()
        sent[key] = (topic, value)
        producer.produce(topic, key=key, value=value, headers=[("trace-id", key)])
    assert producer.flush(60) == 0
    produce_events(settings, events[300:])

    progress = GroupProgress(settings)
    progress.refresh_ends()
    try:
        with running_worker(settings):
            try:
                wait_until(progress.drained, 180, "committed offsets reach the end")
            except AssertionError:
                print("R3: lagging", progress.lagging())
                raise
    finally:
        progress.close()

    letters = read_topic(kafka_bootstrap, cat.dead_letters.name)
    assert len(letters) == len(pills)
    seen: set[bytes] = set()
    for msg, rec in zip(letters, decoded(letters), strict=True):
        headers = dict(msg.headers() or [])
        key = msg.key()
        assert key in sent and key not in seen, key
        seen.add(key)
        topic, value = sent[key]
        assert rec["original_value"] == value and rec["original_key"] == key
        assert headers["source_topic"] == topic.encode() == rec["source_topic"].encode()
        assert int(headers["source_partition"]) == rec["source_partition"] == msg.partition()
        assert int(headers["source_offset"]) == rec["source_offset"]
        assert headers["error_class"].decode() == rec["error_class"]
        assert issubclass(getattr(codec_module, rec["error_class"]), SerializationError)
        assert headers["trace-id"] == key  # the producer's own headers are kept
    valid_out = (read_topic(kafka_bootstrap, cat.drops.name)
                 + read_topic(kafka_bootstrap, cat.destination("analytics").name))
    assert valid_out, "the valid events around the pills were processed"
    print(f"R3: dead letters={len(letters)} of {len(pills)} pills; offsets at the end")
