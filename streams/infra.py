"""The infrastructure a local run needs: the broker and the topics, from settings."""

from __future__ import annotations

from streams.local_kafka import LocalKafka, resolve_jars
from streams.settings import Settings


def local_kafka(settings: Settings) -> LocalKafka:
    """The project's own broker, under the state directory."""
    libs = resolve_jars(settings.cache, settings.kafka_version, settings.kafka_home)
    return LocalKafka(home=settings.home / "kafka", libs=libs, port=settings.kafka_port)
