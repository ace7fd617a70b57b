"""Shared fixtures: one real Kafka broker per session, one embedded ClickHouse engine.

The broker is the project's own launcher on free ports in a temp dir (or the cluster
named by ``KAFKA_BOOTSTRAP_SERVERS``); it dies with the test session even if pytest is
killed. chDB allows one engine per process, so the session shares one engine and each
test gets its own database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/unit are unit tests, under tests/integration integration tests."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "unit" in parts:
            item.add_marker(pytest.mark.unit)
        elif "integration" in parts:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI an integration test may never be skipped: a skip there is a failure."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and item.get_closest_marker("integration") is not None:
        report.outcome = "failed"
        report.longrepr = f"integration test skipped in CI: {report.longrepr}"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real broker shared by the whole session, catalog applied."""
    from streams import topic_admin
    from streams.local_kafka import LocalKafka, free_port_pair, resolve_jars
    from streams.settings import Settings

    settings = Settings.from_env({k: v for k, v in os.environ.items()
                                  if k != "PRIVACY_PIPELINE_HOME"}
                                 | {"PRIVACY_PIPELINE_HOME": str(tmp_path_factory.mktemp("h"))})
    if settings.bootstrap_servers:
        topic_admin.apply(settings.bootstrap_servers)
        yield settings.bootstrap_servers
        return
    libs = resolve_jars(settings.cache, settings.kafka_version, settings.kafka_home)
    broker = LocalKafka(home=tmp_path_factory.mktemp("kafka"), libs=libs, port=free_port_pair())
    broker.start(owned=True)
    try:
        topic_admin.apply(broker.bootstrap)
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def clickhouse_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"chdb://{tmp_path_factory.mktemp('clickhouse')}"


@pytest.fixture
def clickhouse(clickhouse_dsn: str) -> Iterator[tuple[object, str]]:
    """(client, database): the session's embedded engine and a fresh database for this test."""
    from sinks.clickhouse_client import connect

    client = connect(clickhouse_dsn)
    database = f"t_{uuid.uuid4().hex[:10]}"
    client.command(f"CREATE DATABASE {database}")
    try:
        yield client, database
    finally:
        client.command(f"DROP DATABASE IF EXISTS {database} SYNC")


@pytest.fixture
def unique() -> str:
    """A short unique suffix for consumer groups and scratch topics."""
    return uuid.uuid4().hex[:10]
