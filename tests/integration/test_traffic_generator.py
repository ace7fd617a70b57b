"""The generator on a real broker: what the summary says is what the topics hold."""

from __future__ import annotations

import time
from collections import Counter

from streams import kafka_clients, topic_admin
from streams.topics import Catalog
from streams.traffic import produce_stream
from streams.traffic_model import TrafficConfig
from tests.unit.test_traffic_model import _classify

EVENTS = 20_000
BAD = 0.03


def test_generated_topics_match_summary(kafka_bootstrap: str, unique: str) -> None:
    catalog = Catalog.with_prefix(f"{unique}.")
    topic_admin.apply(kafka_bootstrap, 1, catalog)
    config = TrafficConfig(seed=11, subjects=2_000, bad_fraction=BAD)
    summary = produce_stream(kafka_bootstrap, catalog, config, events=EVENTS)
    assert summary["events"] == EVENTS

    expected = sum(summary["topics"].values())
    consumer = kafka_clients.consumer(kafka_bootstrap, f"traffic-{unique}")
    consumer.subscribe(list(summary["topics"]))
    seen: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    deadline = time.monotonic() + 60
    try:
        while sum(seen.values()) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(5_000, timeout=1.0):
                assert msg.error() is None
                topic, key, value = msg.topic() or "", msg.key() or b"", msg.value() or b""
                seen[topic] += 1
                kinds[_classify(topic[len(unique) + 1:], key, value)] += 1
    finally:
        consumer.close()
    assert dict(seen) == summary["topics"]
    good = kinds.pop("good")
    assert dict(kinds) == summary["bad"]
    assert good == sum(summary["schemas"].values())
    assert set(kinds) == set(config.bad_kinds)
    assert abs(sum(kinds.values()) / EVENTS - BAD) < 0.01
