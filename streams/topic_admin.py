"""Make the broker match the topic catalog: create what is missing, reconcile configs.

Idempotent: a second run finds nothing to change and says so.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from streams import kafka_clients
from streams.errors import BrokerError
from streams.topics import CATALOG, Topic

TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Change:
    topic: str
    action: str  # "create", "config", "partitions"
    detail: str


def admin_client(bootstrap: str) -> AdminClient:
    return kafka_clients.admin(bootstrap)


def check_reachable(admin: AdminClient, bootstrap: str, timeout: float = 10.0) -> None:
    """Raise BrokerError with one clear line if no broker answers a metadata request."""
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerError(f"no Kafka broker answers at {bootstrap} "
                          f"(waited {timeout:.0f}s): {exc.args[0].str()}") from None


def _wait(futures: dict, what: str) -> None:
    for name, fut in futures.items():
        try:
            fut.result(timeout=TIMEOUT_S)
        except KafkaException as exc:
            raise BrokerError(f"{what} {name}: {exc.args[0].str()}") from None


def _created(futures: dict) -> set[str]:
    """Names actually created; a topic that appeared meanwhile is left to reconciliation."""
    created = set()
    for name, fut in futures.items():
        try:
            fut.result(timeout=TIMEOUT_S)
            created.add(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"creating topic {name}: {exc.args[0].str()}") from None
    return created


def _wait_visible(admin: AdminClient, names: set[str]) -> None:
    """Block until new topics show in metadata, so callers can use them at once."""
    deadline = time.monotonic() + TIMEOUT_S
    while names and time.monotonic() < deadline:
        topics = admin.list_topics(timeout=TIMEOUT_S).topics
        if all(n in topics and not topics[n].error for n in names):
            return
        time.sleep(0.1)  # metadata propagation poll, bounded by the deadline
    if names:
        raise BrokerError(f"created topics did not appear in metadata within {TIMEOUT_S:.0f}s")


def apply(bootstrap: str, replication_factor: int = 1,
          topics: Iterable[Topic] = CATALOG) -> list[Change]:
    """Create missing topics and reconcile configs and partition counts. Returns the changes."""
    admin = admin_client(bootstrap)
    check_reachable(admin, bootstrap)
    wanted = list(topics)
    existing = admin.list_topics(timeout=TIMEOUT_S).topics
    changes: list[Change] = []

    missing = [t for t in wanted if t.name not in existing]
    if missing:
        futures = admin.create_topics([NewTopic(t.name, num_partitions=t.partitions,
                                                replication_factor=replication_factor,
                                                config=t.configs) for t in missing],
                                      request_timeout=TIMEOUT_S)
        created = _created(futures)
        changes += [Change(t.name, "create", f"{t.partitions} partitions, "
                           f"{t.cleanup_policy}") for t in missing if t.name in created]
        _wait_visible(admin, created)
        existing = admin.list_topics(timeout=TIMEOUT_S).topics

    present = [t for t in wanted if t.name in existing]
    grow = [t for t in present if len(existing[t.name].partitions) < t.partitions]
    if grow:
        _wait(admin.create_partitions([NewPartitions(t.name, t.partitions) for t in grow]),
              "adding partitions to")
        changes += [Change(t.name, "partitions", f"-> {t.partitions}") for t in grow]

    drift = _config_drift(admin, present)
    if drift:
        resources = []
        for topic, diffs in drift.items():
            entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                       for k, (_, v) in diffs.items()]
            resources.append(ConfigResource(ConfigResource.Type.TOPIC, topic,
                                            incremental_configs=entries))
            changes += [Change(topic, "config", f"{k}: {old} -> {new}")
                        for k, (old, new) in diffs.items()]
        _wait(admin.incremental_alter_configs(resources), "altering configs of")
    return changes


def describe(bootstrap: str, topics: Iterable[Topic] = CATALOG) -> dict[str, dict[str, str]]:
    """The broker's current value of every catalog-owned config, per topic."""
    wanted = list(topics)
    current = _describe(admin_client(bootstrap), wanted)
    return {t.name: {k: current[t.name][k] for k in t.configs if k in current[t.name]}
            for t in wanted}


def _config_drift(admin: AdminClient,
                  topics: list[Topic]) -> dict[str, dict[str, tuple[str | None, str]]]:
    if not topics:
        return {}
    current = _describe(admin, topics)
    drift: dict[str, dict[str, tuple[str | None, str]]] = {}
    for t in topics:
        diffs = {k: (current[t.name].get(k), v) for k, v in t.configs.items()
                 if current[t.name].get(k) != v}
        if diffs:
            drift[t.name] = diffs
    return drift


def _describe(admin: AdminClient, topics: list[Topic]) -> dict[str, dict[str, str]]:
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t.name) for t in topics]
    futures = admin.describe_configs(resources)
    out: dict[str, dict[str, str]] = {}
    for res, fut in futures.items():
        try:
            entries = fut.result(timeout=TIMEOUT_S)
        except KafkaException as exc:
            raise BrokerError(f"describing {res.name}: {exc.args[0].str()}") from None
        out[res.name] = {k: e.value for k, e in entries.items()}
    return out
