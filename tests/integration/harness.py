"""Helpers for end-to-end tests: private topics, a worker in a thread, reading outputs."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from streams import kafka_clients, topic_admin
from streams.codec import default_codec
from streams.local_kafka import free_port_pair
from streams.settings import Settings

TEST_MASTER_KEY = base64.b64encode(b"k" * 32).decode()


def pipeline_settings(bootstrap: str, home: Path, prefix: str, **extra: str) -> Settings:
    """Settings for one test: its own topic namespace (created here) and state dir."""
    settings = Settings.from_env({
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "PRIVACY_PIPELINE_HOME": str(home),
        "PRIVACY_PIPELINE_TOPIC_PREFIX": prefix, "PRIVACY_PIPELINE_MASTER_KEY": TEST_MASTER_KEY,
        "PRIVACY_PIPELINE_METRICS_PORT": str(free_port_pair()), **extra})
    topic_admin.apply(bootstrap, 1, settings.catalog)
    return settings


def produce(settings: Settings, topic: str,
            records: Iterable[tuple[str | None, dict[str, Any] | bytes | None]],
            schema: str | None = None) -> int:
    """Produce (key, record) pairs; dicts are encoded with ``schema`` (or their own)."""
    codec = default_codec()
    producer = kafka_clients.producer(settings.kafka_bootstrap)
    n = 0
    for key, value in records:
        if isinstance(value, dict):
            assert schema is not None
            value = codec.encode(schema, value)
        producer.produce(topic, key=key.encode() if key is not None else None, value=value)
        n += 1
        if n % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    return n


def read_topic(bootstrap: str, topic: str, *, until: Callable[[list[Any]], bool] | None = None,
               timeout: float = 60.0, committed_only: bool = True) -> list[Any]:
    """Every message of ``topic`` from the beginning: until ``until(messages)`` holds, or
    (without ``until``) until the end as it is when the read starts."""
    consumer = kafka_clients.consumer(
        bootstrap, f"read-{time.monotonic_ns()}", **{
            "isolation.level": "read_committed" if committed_only else "read_uncommitted",
            "enable.partition.eof": True})
    md = consumer.list_topics(topic, timeout=10)
    parts = [TopicPartition(topic, p, 0) for p in md.topics[topic].partitions]
    consumer.assign(parts)
    out: list[Any] = []
    eof: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(5000, timeout=0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof.add(msg.partition())
                    continue
                eof.discard(msg.partition())
                out.append(msg)
            if until is not None:
                if until(out):
                    return out
            elif len(eof) == len(parts):
                return out
        if until is not None:
            raise AssertionError(f"{topic}: condition not met within {timeout}s "
                                 f"({len(out)} messages read)")
        return out
    finally:
        consumer.close()


def decoded(messages: Iterable[Any]) -> list[dict[str, Any]]:
    codec = default_codec()
    return [codec.decode(m.value())[1] for m in messages if m.value() is not None]


@contextmanager
def _on_thread(service: Any, wait_ready: bool) -> Iterator[Any]:
    """Run ``service.run()`` on a thread; stop it (and re-raise its failure) on exit."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            service.run()
        except BaseException as exc:  # surfaced to the test below
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        if wait_ready:
            assert service.ready.wait(60), f"{type(service).__name__} not ready: {failure}"
        yield service
    finally:
        service.stop()
        thread.join(60)
    if failure:
        raise failure[0]


def running_worker(settings: Settings, **kwargs: Any) -> Any:
    """A worker on its own thread, ready (partitions assigned, state restored)."""
    from streams.infra import load_policy_for
    from streams.worker import Worker

    return _on_thread(Worker(settings, load_policy_for(settings), **kwargs), wait_ready=True)


def running_aggregator(settings: Settings, **kwargs: Any) -> Any:
    """The aggregator on its own thread."""
    from streams.aggregator import Aggregator
    from streams.infra import load_policy_for

    return _on_thread(Aggregator(settings, load_policy_for(settings), **kwargs),
                      wait_ready=False)


def produce_events(settings: Settings, events: Iterable[tuple[str, dict[str, Any]]]) -> int:
    """Produce (schema, record) input events to their raw topics, keyed by subject id."""
    codec = default_codec()
    cat = settings.catalog
    topic_of = {s.name: cat.by_name(settings.topic_prefix + s.topic).name
                for s in codec.catalog if s.role == "input"}
    by_topic: dict[str, list[tuple[str | None, dict[str, Any] | bytes | None]]] = {}
    for schema, event in events:
        by_topic.setdefault(topic_of[schema], []).append(
            (event["subject_id"], codec.encode(schema, event)))
    return sum(produce(settings, topic, records) for topic, records in by_topic.items())


def expected_outcomes(events: Iterable[tuple[str, dict[str, Any]]],
                      consents: Iterable[dict[str, Any]], policy: Any) -> dict[str, Any]:
    """event id -> the pure engine's decision, with every consent record of each subject
    folded in (arrival order does not matter: the history is by event time)."""
    from streams.consent import SubjectHistory, apply
    from streams.engine import decide

    histories: dict[str, SubjectHistory] = {}
    for rec in consents:
        histories[rec["subject_id"]] = apply(histories.get(rec["subject_id"]), rec)
    out = {}
    for schema, event in events:
        history = histories.get(event["subject_id"])
        state = history.at(event["event_time"]) if history is not None else None
        out[event["event_id"]] = decide(schema, event, state, b"k" * 32, policy)
    return out


def wait_for_leaders(settings: Settings, timeout: float = 30.0) -> None:
    """Until every catalog partition answers a watermark query (fresh topics elect their
    leaders a moment after creation)."""
    consumer = kafka_clients.consumer(settings.kafka_bootstrap, f"leaders-{time.monotonic_ns()}")
    try:
        for topic in settings.catalog:
            for p in range(topic.partitions):
                kafka_clients.watermarks(consumer, TopicPartition(topic.name, p), timeout)
    finally:
        consumer.close()
