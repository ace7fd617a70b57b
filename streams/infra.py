"""What a process needs from settings: the local broker, the policy."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streams.local_kafka import LocalKafka, free_port_pair, resolve_jars
from streams.policy import Policy, load_policy
from streams.settings import Settings


def local_kafka(settings: Settings) -> LocalKafka:
    """The project's own broker, under the state directory."""
    libs = resolve_jars(settings.cache, settings.kafka_version, settings.kafka_home)
    return LocalKafka(home=settings.home / "kafka", libs=libs, port=settings.kafka_port)


def load_policy_for(settings: Settings) -> Policy:
    """The policy file of the settings, processing in the configured region (C12)."""
    policy = load_policy(settings.policy_file)
    return policy.with_region(settings.region) if settings.region else policy


@contextmanager
def bench_kafka(settings: Settings) -> Iterator[str]:
    """Bootstrap servers for a benchmark: the configured cluster, or a private local
    broker on free ports that is stopped (and its data removed) afterwards."""
    if settings.bootstrap_servers:
        yield settings.bootstrap_servers
        return
    libs = resolve_jars(settings.cache, settings.kafka_version, settings.kafka_home)
    with tempfile.TemporaryDirectory(prefix="privacy-pipeline-bench-") as home:
        broker = LocalKafka(home=Path(home), libs=libs, port=free_port_pair())
        broker.start(owned=True)
        try:
            yield broker.bootstrap
        finally:
            broker.stop()
