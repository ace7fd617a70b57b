"""What a process needs from settings: the local broker, the policy."""

from __future__ import annotations

from streams.local_kafka import LocalKafka, resolve_jars
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
