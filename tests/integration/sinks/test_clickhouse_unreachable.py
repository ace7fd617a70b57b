"""Scenario: ClickHouse server unreachable -> clear error, backoff, pause; nothing lost.

There is no ClickHouse server binary here, so "the server" is switchable: the sink's client
factory first connects to ``http://127.0.0.1:<closed port>`` (a real connection refused
through clickhouse-connect's HTTP client), then to the embedded engine once it "is back".
"""

from __future__ import annotations

import logging
import random
import socket
from pathlib import Path
from typing import Any

import pytest

from sinks.base import RetryPolicy
from sinks.clickhouse_client import connect
from sinks.service import run_clickhouse_sink
from streams.metrics import REGISTRY
from tests.integration.sinks.helpers import (
    analytics_event,
    in_thread,
    private_topics,
    produce,
    sink_settings,
    wait_for,
)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_unreachable_server_pauses_then_delivers_everything(
        kafka_bootstrap: str, clickhouse: tuple[Any, str], clickhouse_dsn: str, unique: str,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    client, db = clickhouse
    prefix, catalog = private_topics(kafka_bootstrap, unique)
    settings = sink_settings(kafka_bootstrap, prefix, tmp_path, clickhouse_dsn)
    server = {"dsn": f"http://127.0.0.1:{_closed_port()}"}

    def factory() -> Any:
        return connect(server["dsn"]) if server["dsn"].startswith("http") else client

    rng = random.Random(9)
    produce(kafka_bootstrap, catalog.analytics.name, "AnalyticsEvent",
            [analytics_event(rng, pseudonym=f"p{i}") for i in range(1000)])
    errors_before = _metric("privacy_pipeline_sink_errors_total", sink="clickhouse",
                            error_class="SinkBackpressure")
    caplog.set_level(logging.WARNING, logger="sinks.runner")
    thread, stop, out = in_thread(run_clickhouse_sink, settings, database=db,
                                  client_factory=factory, query_port=-1, metrics_port=-1,
                                  flush_seconds=0.3,
                                  retry=RetryPolicy(attempts=3, base_seconds=0.1,
                                                    max_seconds=0.5))
    try:
        wait_for(lambda: _metric("privacy_pipeline_sink_paused", sink="clickhouse") == 1, 60,
                 f"the sink to pause {out}")
        # Bounded retries with backoff came first, each with a clear one-line reason.
        retries = [r.getMessage() for r in caplog.records
                   if r.name == "sinks.runner" and "retry" in r.getMessage()]
        assert len(retries) >= 3
        assert all("ClickHouse unreachable" in m and "127.0.0.1" in m for m in retries)
        assert ["retry 1/3 in 0.1s" in retries[0], "retry 2/3 in 0.2s" in retries[1],
                "retry 3/3 in 0.4s" in retries[2]] == [True, True, True], retries
        assert any("consumption paused" in r.getMessage() for r in caplog.records)
        assert _metric("privacy_pipeline_sink_errors_total", sink="clickhouse",
                       error_class="SinkBackpressure") >= errors_before + 4
        # More traffic while paused; still nothing written, nothing committed.
        produce(kafka_bootstrap, catalog.analytics.name, "AnalyticsEvent",
                [analytics_event(rng, pseudonym=f"q{i}") for i in range(500)])
        assert not client.query(f"SELECT count() FROM system.tables WHERE database = '{db}' "
                                "AND name = 'analytics_events'").result_rows[0][0]

        server["dsn"] = clickhouse_dsn  # the server is back
        wait_for(lambda: _metric("privacy_pipeline_sink_paused", sink="clickhouse") == 0, 60,
                 "the sink to resume")
        wait_for(lambda: client.query(f"SELECT count() FROM {db}.analytics_events"
                                      ).result_rows[0][0] == 1500, 60, "all 1500 rows")
    finally:
        stop.set()
        thread.join(30)
    assert not [o for o in out if isinstance(o, BaseException)], out
    runner = out[0]
    assert sum(runner.committed.values()) == 1500
    assert client.query(f"SELECT count(), uniqExact(event_id) FROM {db}.analytics_events"
                        ).result_rows[0] == (1500, 1500)
