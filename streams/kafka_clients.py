"""confluent-kafka clients with the project's defaults, built in one place.

librdkafka's own log lines go through Python logging (logger ``librdkafka``) instead of
stderr, so a broker that is down gives one clear error rather than a flood.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

_LOG = logging.getLogger("librdkafka")


def _conf(bootstrap: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "logger": _LOG, **extra}


def admin(bootstrap: str, **extra: Any) -> AdminClient:
    return AdminClient(_conf(bootstrap, {"socket.timeout.ms": 10_000, **extra}))


PRODUCER_QUEUE_MESSAGES = 1_000_000  # messages a producer holds before produce() refuses


def producer(bootstrap: str, **extra: Any) -> Producer:
    """An idempotent producer batching for throughput (no per-message callbacks)."""
    return Producer(_conf(bootstrap, {
        "enable.idempotence": True, "linger.ms": 20, "batch.size": 1_000_000,
        "compression.type": "lz4", "queue.buffering.max.messages": PRODUCER_QUEUE_MESSAGES,
        **extra}))


# Answers from a partition whose leader is not (yet) known: transient, worth a retry.
# ``_UNKNOWN_PARTITION`` is the client's own answer before its metadata has the new topic.
_ELECTION = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                       KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION})


def watermarks(client: Consumer, tp: TopicPartition, timeout: float = 30.0) -> tuple[int, int]:
    """(low, high) of a partition, retrying while its leader is being elected."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = client.get_watermark_offsets(tp, timeout=5)
            return int(low), int(high)
        except KafkaException as exc:
            err = exc.args[0]
            electing = err.code() in _ELECTION
            if not (err.retriable() or electing) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # a fresh topic elects its leaders a moment after creation


def consumer(bootstrap: str, group: str, **extra: Any) -> Consumer:
    return Consumer(_conf(bootstrap, {"group.id": group, "auto.offset.reset": "earliest",
                                      "enable.auto.commit": False, **extra}))


def lag_reader(bootstrap: str, group: str) -> Consumer:
    """A client that reads ``group``'s committed offsets (``lag``) without joining it."""
    # A read-committed client asks the coordinator for stable offsets only, and waits
    # while the group has a transaction open: a busy worker always has one (4.7 s seen).
    return consumer(bootstrap, group, **{"isolation.level": "read_uncommitted"})


def lag(reader: Consumer, topics: list[str]) -> int:
    """Messages on ``topics`` the reader's group has not committed yet (0: drained).

    The pipeline commits consumer positions, which step over transaction markers, so a
    caught-up group reads 0 here even on transactionally written topics.
    """
    tps = [TopicPartition(t, p) for t in topics
           for p in reader.list_topics(t, timeout=10).topics[t].partitions]
    return sum(watermarks(reader, tp)[1] - max(tp.offset, 0)
               for tp in reader.committed(tps, timeout=10))


def group_lag(bootstrap: str, group: str, topics: list[str]) -> int:
    """``lag`` once, with a client of its own."""
    reader = lag_reader(bootstrap, group)
    try:
        return lag(reader, topics)
    finally:
        reader.close()
