"""Scenario: SIGKILL the ClickHouse sink mid-run and restart it; exactly one row per event.

The sink runs as a subprocess with its own chDB directory (one engine per process, one
process per directory); the table is read after it exits, from a fresh process.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition as KTP

from sinks.query import ENDPOINT_FILE, _remote
from sinks.service import group_id
from streams import kafka_clients
from streams.errors import ClickHouseError
from tests.integration.sinks.helpers import (
    BASE_MS,
    private_topics,
    produce,
    sink_settings,
    wait_for,
)

EVENTS = 200_000
REPO = Path(__file__).resolve().parents[3]
COUNT = "SELECT count() AS n FROM privacy_pipeline.analytics_events"


def _events(n: int, seed: int = 11) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
             "subject_pseudonym": f"p{rng.randint(1, 5000)}", "source": "PlaybackEvent",
             "event_type": "play", "event_time": BASE_MS + rng.randint(0, 86_000_000),
             "processing_region": "us-east", "policy_version": "2024-06-28",
             "attributes": {"platform": "ios", "country": "US"}, "measures": {}}
            for _ in range(n)]


def _committed(bootstrap: str, group: str, topic: str) -> int:
    c = kafka_clients.consumer(bootstrap, group)
    try:
        return sum(max(p.offset, 0) for p in c.committed([KTP(topic, p) for p in range(4)],
                                                          timeout=10))
    finally:
        c.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(proc: subprocess.Popen[bytes], log: Path) -> None:
    assert proc.poll() is None, f"sink exited {proc.returncode}: {log.read_text()[-3000:]}"


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "sink", "clickhouse",
                             "--query-port", "0"], cwd=REPO, env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def test_sigkill_mid_run_then_restart_leaves_one_row_per_event(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    prefix, catalog = private_topics(kafka_bootstrap, unique)
    data = tmp_path / "clickhouse"
    settings = sink_settings(kafka_bootstrap, prefix, tmp_path / "home", f"chdb://{data}")
    group = group_id(settings, "clickhouse")
    topic = catalog.analytics.name
    produced = 0

    def more(seed: int) -> int:
        produce(kafka_bootstrap, topic, "AnalyticsEvent", _events(EVENTS, seed),
                key=lambda r: str(r["subject_pseudonym"]))
        return produced + EVENTS

    produced = more(11)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "PRIVACY_PIPELINE_TOPIC_PREFIX": prefix, "PRIVACY_PIPELINE_HOME": str(settings.home),
           "CLICKHOUSE_DSN": f"chdb://{data}", "PRIVACY_PIPELINE_REGION": "us-east",
           "PRIVACY_PIPELINE_METRICS_PORT": str(_free_port()), "PYTHONPATH": str(REPO)}
    log = tmp_path / "sink.log"

    # Kill while rows are in the table past the committed offsets (insert done, commit not),
    # seen through the sink's own query endpoint; checked afterwards from a fresh process.
    exercised = False
    for attempt in range(5):
        first = _start(env, log)
        try:
            def rows_past_commit(proc: subprocess.Popen[bytes] = first,
                                 total: int = produced) -> bool | str:
                _alive(proc, log)
                port = _endpoint_port(settings.home)
                if port is None:
                    return False
                try:
                    written = _remote(port, COUNT)[0]["n"]
                except ClickHouseError:
                    return False  # not migrated yet
                committed = _committed(kafka_bootstrap, group, topic)
                return bool(written > committed) or ("finished" if committed == total
                                                     else False)

            seen = wait_for(rows_past_commit, 120, "rows written but not committed",
                            every=0.05)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(30)
        if seen == "finished":  # consumed everything between two polls: fresh events, again
            produced = more(100 + attempt)
            continue
        written = _probe(data)[0]
        committed = _committed(kafka_bootstrap, group, topic)
        if written > committed:
            exercised = True
            break
    assert exercised, "never killed between an insert and its commit"

    second = _start(env, log)
    try:
        def lag_zero() -> bool:
            _alive(second, log)
            return _committed(kafka_bootstrap, group, topic) == produced

        wait_for(lag_zero, 150, f"consumer group lag 0 (log: {log})", every=0.5)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, log.read_text()[-3000:]

    assert _probe(data) == [produced, produced]
    assert "past the committed offset" in log.read_text()  # the restart skipped them


def _probe(data: Path) -> list[int]:
    """count() and uniqExact(event_id), read by a fresh process once the sink is gone."""
    probe = ("import clickhouse_connect, json;"
             f"c = clickhouse_connect.get_client(dsn='chdb://{data}');"
             "print(json.dumps(c.query('SELECT count(), uniqExact(event_id) FROM "
             "privacy_pipeline.analytics_events').result_rows[0]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, check=True)
    result: list[int] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _endpoint_port(home: Path) -> int | None:
    try:
        return int(json.loads((home / ENDPOINT_FILE).read_text())["port"])
    except (OSError, ValueError, KeyError):
        return None
