"""Produce synthetic traffic to the catalog topics: batches, a token bucket, a summary.

``generate`` drives a ``TrafficStream`` (pure, seeded) into Kafka with one confluent-kafka
producer: ``produce`` in a loop, ``poll(0)`` every ``POLL_EVERY`` messages, one ``flush`` at
the end; no per-message delivery callbacks. Keys are the subject id (UTF-8).
"""

from __future__ import annotations

import time
from typing import Any

from streams import kafka_clients
from streams.errors import BrokerError
from streams.settings import Settings
from streams.topics import Catalog
from streams.traffic_model import TrafficConfig
from streams.traffic_stream import TrafficStream

__all__ = ["BATCH", "generate", "produce_stream"]

BATCH = 5_000
POLL_EVERY = 1_000


def _topic_map(catalog: Catalog) -> dict[str, str]:
    base = Catalog()
    return {getattr(base, f).name: getattr(catalog, f).name
            for f in ("raw_playback", "raw_activity", "raw_server", "consent", "requests")}


def produce_stream(bootstrap: str, catalog: Catalog, config: TrafficConfig, *,
                   events: int | None = None, seconds: float | None = None,
                   rate: float = 0) -> dict[str, Any]:
    """Produce until ``events`` input events or ``seconds`` elapsed; return the summary."""
    if events is None and seconds is None:
        raise ValueError("generate needs events or seconds")
    stream = TrafficStream(config)
    topics = _topic_map(catalog)
    producer = kafka_clients.producer(bootstrap)
    produce, poll = producer.produce, producer.poll
    start = time.monotonic()
    deadline = start + seconds if seconds is not None else None
    sent = 0
    while (events is None or stream.events < events) and \
            (deadline is None or time.monotonic() < deadline):
        n = BATCH if events is None else min(BATCH, events - stream.events)
        if rate > 0:  # token bucket: the batch waits for the tokens it spends
            due = start + (stream.events + n) / rate
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
        for topic, key, value in stream.batch(n):
            try:
                produce(topics[topic], value, key)
            except BufferError:
                poll(0.1)
                produce(topics[topic], value, key)
            sent += 1
            if sent % POLL_EVERY == 0:
                poll(0)
    if (left := producer.flush(60)) != 0:
        raise BrokerError(f"traffic: {left} messages not acknowledged by the broker")
    duration = time.monotonic() - start
    return {
        "events": stream.events,
        "messages": sent,
        "schemas": dict(sorted(stream.schema_counts.items())),
        "topics": {topics[t]: n for t, n in sorted(stream.topic_counts.items())},
        "bad": dict(sorted(stream.bad_counts.items())),
        "requests": dict(sorted(stream.request_counts.items())),
        "subjects": config.subjects,
        "deleted_subjects": len(stream.deleted),
        "seed": config.seed,
        "seconds": round(duration, 3),
        "events_per_s": round(stream.events / duration, 1) if duration else 0.0,
    }


def generate(settings: Settings, config: TrafficConfig, *, events: int | None = None,
             seconds: float | None = None, rate: float = 0) -> dict[str, Any]:
    """Generate traffic into the settings' broker and catalog (``rate`` events/s, 0 = max)."""
    return produce_stream(settings.kafka_bootstrap, settings.catalog, config,
                          events=events, seconds=seconds, rate=rate)
