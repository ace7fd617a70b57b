"""The real broker the suite started: round trips, catalog configs, idempotent apply."""

from __future__ import annotations

import time
from collections import defaultdict

from streams import kafka_clients, topic_admin
from streams.topics import CATALOG, Catalog


def test_10k_records_round_trip_in_order_per_partition(kafka_bootstrap: str, unique: str) -> None:
    topic = CATALOG.raw_playback.name
    producer = kafka_clients.producer(kafka_bootstrap)
    sent: dict[str, list[int]] = defaultdict(list)
    for i in range(10_000):
        key = f"{unique}-subject-{i % 97}"
        producer.produce(topic, key=key, value=f"{unique}:{i}".encode())
        sent[key].append(i)
    assert producer.flush(30) == 0

    consumer = kafka_clients.consumer(kafka_bootstrap, f"roundtrip-{unique}")
    consumer.subscribe([topic])
    got: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    deadline = time.monotonic() + 60
    received = 0
    try:
        while received < 10_000 and time.monotonic() < deadline:
            for msg in consumer.consume(2000, timeout=1.0):
                assert msg.error() is None, msg.error()
                run, _, seq = msg.value().decode().partition(":")
                if run == unique:
                    key = msg.key().decode()
                    got[key].append(int(seq))
                    partitions[key].add(msg.partition())
                    received += 1
    finally:
        consumer.close()
    assert received == 10_000
    assert got == sent  # every record, and per key (hence per partition) in send order
    assert all(len(p) == 1 for p in partitions.values())


def test_catalog_topics_have_configured_cleanup_and_retention(kafka_bootstrap: str) -> None:
    actual = topic_admin.describe(kafka_bootstrap, CATALOG)
    for topic in CATALOG:
        assert actual[topic.name]["cleanup.policy"] == topic.cleanup_policy, topic.name
        assert actual[topic.name]["retention.ms"] == str(topic.retention_ms), topic.name


def test_apply_is_idempotent_and_reconciles_drift(kafka_bootstrap: str, unique: str) -> None:
    catalog = Catalog.with_prefix(f"apply-{unique}.")
    first = topic_admin.apply(kafka_bootstrap, 1, catalog)
    assert {c.topic for c in first if c.action == "create"} == {t.name for t in catalog}
    assert topic_admin.apply(kafka_bootstrap, 1, catalog) == []

    # Someone changed a retention by hand: apply puts the catalog's value back.
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    admin = kafka_clients.admin(kafka_bootstrap)
    res = ConfigResource(ConfigResource.Type.TOPIC, catalog.analytics.name, incremental_configs=[
        ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
    for fut in admin.incremental_alter_configs([res]).values():
        fut.result(10)
    deadline = time.monotonic() + 30
    while topic_admin.describe(kafka_bootstrap, [catalog.analytics])[
            catalog.analytics.name]["retention.ms"] != "1000":
        assert time.monotonic() < deadline, "the hand-made change never became visible"
        time.sleep(0.1)
    changes = topic_admin.apply(kafka_bootstrap, 1, catalog)
    assert [(c.topic, c.action) for c in changes] == [(catalog.analytics.name, "config")]
    assert topic_admin.describe(kafka_bootstrap, [catalog.analytics])[
        catalog.analytics.name]["retention.ms"] == str(catalog.analytics.retention_ms)
