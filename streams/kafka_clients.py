"""confluent-kafka clients with the project's defaults, built in one place.

librdkafka's own log lines go through Python logging (logger ``librdkafka``) instead of
stderr, so a broker that is down gives one clear error rather than a flood.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

_LOG = logging.getLogger("librdkafka")


def _conf(bootstrap: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "logger": _LOG, **extra}


def admin(bootstrap: str, **extra: Any) -> AdminClient:
    return AdminClient(_conf(bootstrap, {"socket.timeout.ms": 10_000, **extra}))


def producer(bootstrap: str, **extra: Any) -> Producer:
    """An idempotent producer batching for throughput (no per-message callbacks)."""
    return Producer(_conf(bootstrap, {"enable.idempotence": True, "linger.ms": 20,
                                      "batch.size": 1_000_000, "compression.type": "lz4",
                                      "queue.buffering.max.messages": 1_000_000, **extra}))


def consumer(bootstrap: str, group: str, **extra: Any) -> Consumer:
    return Consumer(_conf(bootstrap, {"group.id": group, "auto.offset.reset": "earliest",
                                      "enable.auto.commit": False, **extra}))
