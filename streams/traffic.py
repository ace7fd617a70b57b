"""Produce synthetic traffic to the catalog topics: batches, a token bucket, a summary.

``generate`` drives a ``TrafficStream`` (pure, seeded) into Kafka with one confluent-kafka
producer: ``produce`` mapped over a batch, one ``poll(0)`` per batch, one ``flush`` at the
end. The producer reports only failed deliveries (``delivery.report.only.error``), so the
hot path has no per-message callback and a message the broker never took still fails the
run. Keys are the subject id (UTF-8).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from confluent_kafka import KafkaError, Producer

from streams import kafka_clients
from streams.errors import BrokerError
from streams.settings import Settings
from streams.topics import Catalog
from streams.traffic_model import TrafficConfig
from streams.traffic_stream import CHUNK, TrafficStream, gc_paused

__all__ = ["BATCH", "generate", "produce_stream"]

BATCH = CHUNK  # events per batch: the stream draws a chunk at once, smaller ones cost more
RATE_STEP_S = 0.1  # with a rate, a batch is at most this much of it, so sends stay smooth
QUEUE_FULL_TIMEOUT_S = 60.0


def _topic_map(catalog: Catalog) -> dict[str, str]:
    base = Catalog()
    return {getattr(base, f).name: getattr(catalog, f).name
            for f in ("raw_playback", "raw_activity", "raw_server", "consent", "requests")}


def _wait_for_room(producer: Producer, n: int) -> None:
    """Return once the local queue can take ``n`` more messages: the producer drains it
    while polled (``len(producer)`` counts messages not yet reported delivered)."""
    deadline = time.monotonic() + QUEUE_FULL_TIMEOUT_S
    while len(producer) + n > kafka_clients.PRODUCER_QUEUE_MESSAGES:
        if time.monotonic() > deadline:
            raise BrokerError(f"traffic: the producer queue stayed full for "
                              f"{QUEUE_FULL_TIMEOUT_S:.0f}s; is the broker up?")
        producer.poll(0.1)


def _produce(producer: Producer, topics: list[str], values: list[bytes],
             keys: list[bytes]) -> None:
    """Queue a batch: ``produce`` mapped from C takes a quarter fewer instructions per
    message than a Python loop calling it (callgrind); room is made first, so the queue
    cannot fill midway."""
    _wait_for_room(producer, len(values))
    try:
        deque(map(producer.produce, topics, values, keys), maxlen=0)
    except BufferError as exc:  # over queue.buffering.max.kbytes: messages far too big
        raise BrokerError(f"traffic: the producer queue is full: {exc}") from exc


def produce_stream(bootstrap: str, catalog: Catalog, config: TrafficConfig, *,
                   events: int | None = None, seconds: float | None = None,
                   rate: float = 0) -> dict[str, Any]:
    """Produce until ``events`` input events or ``seconds`` elapsed; return the summary."""
    if events is None and seconds is None:
        raise ValueError("generate needs events or seconds")
    stream = TrafficStream(config)
    topics = _topic_map(catalog)
    failed: list[KafkaError] = []
    producer = kafka_clients.producer(bootstrap, **{
        "delivery.report.only.error": True, "on_delivery": lambda err, _msg: failed.append(err)})
    poll = producer.poll
    start, cpu = time.monotonic(), time.process_time()
    deadline = start + seconds if seconds is not None else None
    sent = 0
    size = BATCH if rate <= 0 else max(1, min(BATCH, int(rate * RATE_STEP_S)))
    with gc_paused():
        while (events is None or stream.events < events) and \
                (deadline is None or time.monotonic() < deadline):
            n = size if events is None else min(size, events - stream.events)
            if rate > 0:  # token bucket: the batch waits for the tokens it spends
                due = start + (stream.events + n) / rate
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
            names, keys, values = stream.columns(n)
            _produce(producer, list(map(topics.__getitem__, names)), values, keys)
            poll(0)
            sent += len(values)
    if (left := producer.flush(60)) != 0:
        raise BrokerError(f"traffic: {left} messages not acknowledged by the broker")
    if failed:
        raise BrokerError(f"traffic: {len(failed)} messages not delivered, first: {failed[0]}")
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
        "cpu_seconds": round(time.process_time() - cpu, 3),  # every thread of the process
        "events_per_s": round(stream.events / duration, 1) if duration else 0.0,
    }


def generate(settings: Settings, config: TrafficConfig, *, events: int | None = None,
             seconds: float | None = None, rate: float = 0) -> dict[str, Any]:
    """Generate traffic into the settings' broker and catalog (``rate`` events/s, 0 = max)."""
    return produce_stream(settings.kafka_bootstrap, settings.catalog, config,
                          events=events, seconds=seconds, rate=rate)
