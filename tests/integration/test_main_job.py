"""The README's first command: the main job's printed numbers match the topics and tables,
and Ctrl-C leaves nothing running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from streams.local_kafka import free_port_pair
from tests.integration.harness import decoded, read_topic

ROOT = Path(__file__).parents[2]


def _env(kafka_bootstrap: str, home: Path, prefix: str) -> dict[str, str]:
    base = free_port_pair()  # the children take base, base+1, base+2
    return {k: v for k, v in os.environ.items() if not k.startswith("PRIVACY_PIPELINE_")} | {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "PRIVACY_PIPELINE_HOME": str(home),
        "PRIVACY_PIPELINE_TOPIC_PREFIX": prefix, "PRIVACY_PIPELINE_METRICS_PORT": str(base),
        "PRIVACY_PIPELINE_QUERY_PORT": "0"}


def _processes_of(home: Path) -> list[int]:
    """Live processes started with this run's state directory in their environment."""
    needle = f"PRIVACY_PIPELINE_HOME={home}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if needle in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_main_job_summary_matches_independent_counts(kafka_bootstrap: str, unique: str,
                                                     tmp_path: Path) -> None:
    prefix = f"main-{unique}."
    env = _env(kafka_bootstrap, tmp_path, prefix)
    out = subprocess.run([sys.executable, "-m", "streams.cli", "run", "--seconds", "6"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout)
    assert "catching up" in out.stderr or "through the pipeline" in out.stderr  # progress

    from streams.topics import Catalog

    cat = Catalog.with_prefix(prefix)
    for dest, n in summary["events_out"].items():
        assert len(read_topic(kafka_bootstrap, cat.destination(dest).name)) == n, dest
    drops = Counter(f"{r['clause']} {r['reason']}"
                    for r in decoded(read_topic(kafka_bootstrap, cat.drops.name)))
    assert dict(drops) == summary["drops"]
    letters = read_topic(kafka_bootstrap, cat.dead_letters.name)
    assert len(letters) == sum(summary["dead_letters"].values())
    assert len(letters) == summary["bad_records_generated"]
    rows = subprocess.run(
        [sys.executable, "-c", "from sinks.clickhouse_client import connect; "
         f"c = connect('chdb://{tmp_path / 'clickhouse'}'); print(c.query('SELECT count(), "
         "uniqExact(event_id) FROM privacy_pipeline.analytics_events').result_rows[0])"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    # every analytics output became exactly one row; the deletion then purged some
    assert summary["analytics_rows"]["rows"] == summary["events_out"]["analytics"]
    assert summary["analytics_rows"]["rows"] == summary["analytics_rows"]["events"]
    after = summary["analytics_rows_after_requests"]
    assert rows == str((after["rows"], after["events"]))
    assert after["rows"] <= summary["analytics_rows"]["rows"]  # minus the deleted subject's
    deletion, access = summary["requests"]["delete"], summary["requests"]["access"]
    assert deletion["status"] == "done" and deletion["receipt"]["linkable"] == 0
    assert access["status"] == "done" and "identifiers" in access["export_categories"]
    assert _processes_of(tmp_path) == []


def test_ctrl_c_stops_every_process_it_started(kafka_bootstrap: str, unique: str,
                                               tmp_path: Path) -> None:
    env = _env(kafka_bootstrap, tmp_path, f"ctrlc-{unique}.")
    main = subprocess.Popen([sys.executable, "-m", "streams.cli", "run", "--seconds", "120"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(_processes_of(tmp_path)) < 5:  # main + worker + two sinks + request API
        assert main.poll() is None, main.stderr.read().decode()[-2000:] if main.stderr else ""
        assert time.monotonic() < deadline, "children never started"
        time.sleep(0.2)  # waiting for the children to appear
    main.send_signal(signal.SIGINT)
    main.wait(60)
    assert main.returncode != 0
    deadline = time.monotonic() + 30
    while _processes_of(tmp_path):
        assert time.monotonic() < deadline, f"left running: {_processes_of(tmp_path)}"
        time.sleep(0.2)  # children stop on SIGTERM from the main job (or its death)
