"""Helpers for the sink integration tests: settings, producing framed records, polling."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from streams import kafka_clients, topic_admin
from streams.codec import encode
from streams.settings import Settings
from streams.topics import Catalog

T = TypeVar("T")
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# Yesterday 00:00 UTC: recent enough that no retention TTL has expired it.
BASE_MS = (int(time.time() * 1000) // DAY_MS - 1) * DAY_MS


def sink_settings(bootstrap: str, prefix: str, home: Path, dsn: str) -> Settings:
    return Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                              "PRIVACY_PIPELINE_TOPIC_PREFIX": prefix,
                              "PRIVACY_PIPELINE_HOME": str(home), "CLICKHOUSE_DSN": dsn,
                              "PRIVACY_PIPELINE_REGION": "us-east"})


def private_topics(bootstrap: str, unique: str) -> tuple[str, Catalog]:
    prefix = f"{unique}."
    catalog = Catalog.with_prefix(prefix)
    topic_admin.apply(bootstrap, 1, catalog)
    return prefix, catalog


def produce(bootstrap: str, topic: str, schema: str, records: Iterable[dict[str, Any]],
            key: Callable[[dict[str, Any]], str | None] = lambda r: None,
            raw: Iterable[bytes] = ()) -> int:
    producer = kafka_clients.producer(bootstrap)
    n = 0
    for r in records:
        k = key(r)
        producer.produce(topic, value=encode(schema, r), key=k.encode() if k else None)
        n += 1
        if n % 50_000 == 0:
            producer.poll(0)
            producer.flush(60)
    for value in raw:
        producer.produce(topic, value=value)
        n += 1
    assert producer.flush(60) == 0
    return n


def wait_for(check: Callable[[], T], timeout: float, what: str, every: float = 0.2) -> T:
    """Poll ``check`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last: T = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)
        last = check()
    return last


def in_thread(target: Callable[..., Any], *args: Any, **kwargs: Any
              ) -> tuple[threading.Thread, threading.Event, list[Any]]:
    stop = threading.Event()
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(target(*args, stop_event=stop, **kwargs))
        except BaseException as exc:  # surfaced by the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, stop, out


def analytics_event(rng: random.Random, *, event_type: str = "play", pseudonym: str,
                    time_ms: int = BASE_MS, region: str = "us-east",
                    **attributes: str) -> dict[str, Any]:
    return {"event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "subject_pseudonym": pseudonym, "source": "PlaybackEvent",
            "event_type": event_type, "event_time": time_ms, "processing_region": region,
            "policy_version": "2024-06-28", "attributes": attributes,
            "measures": {"position_ms": 1000.0}}
