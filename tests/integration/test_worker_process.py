"""`privacy-pipeline worker` as a real process: a loud crash, and its /metrics scrape.

A worker that cannot unwrap its vault (wrong master key) must log why and exit non-zero
so its supervisor restarts it; a running worker's counters move by exactly what the
pure engine says its input deserves, and the scrape passes ``promtool check metrics``.
"""

from __future__ import annotations

import base64
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from streams.codec import default_codec
from streams.decisions import Routed
from streams.errors import SerializationError
from streams.infra import load_policy_for
from streams.key_vault import Keyring
from streams.local_kafka import free_port_pair
from streams.settings import Settings
from tests.factories import make_consent, sample_events
from tests.integration.harness import (
    expected_outcomes,
    pipeline_settings,
    produce,
    produce_events,
    wait_for_leaders,
)
from tests.tools import require_tool

ROOT = Path(__file__).parents[2]
BAD = [b"", b"\x00", b"\x01\x00\x00\x00\x01garbage", b"\x00\x00\x00\x03\xe7\x02",
       b"\x00\x00\x00\x00\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"]


def _env(settings: Settings, master: bytes, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "PRIVACY_"))}
    return env | {"KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap,
                  "PRIVACY_PIPELINE_HOME": str(settings.home),
                  "PRIVACY_PIPELINE_TOPIC_PREFIX": settings.topic_prefix,
                  "PRIVACY_PIPELINE_MASTER_KEY": base64.b64encode(master).decode(),
                  "PRIVACY_PIPELINE_METRICS_PORT": str(port)}


@contextmanager
def _worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def test_worker_with_wrong_master_key_exits_non_zero_with_one_clear_line(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    """Issue 4 (7): a worker that cannot unwrap its vault logs why and exits non-zero,
    with one error line and no traceback (its supervisor restarts it)."""
    settings = pipeline_settings(kafka_bootstrap, tmp_path, f"crash-{unique}.")
    written_under = os.urandom(32)
    entry = {"subject_id": "crash-subject", "key_version": 1, "created_at": 0,
             "processing_region": "us-east",
             "wrapped_key": Keyring(written_under).wrap("crash-subject", os.urandom(32))}
    produce(settings, settings.catalog.key_vault.name, [("crash-subject", entry)],
            schema="KeyVaultEntry")
    wait_for_leaders(settings)
    log = tmp_path / "worker.log"
    with _worker(_env(settings, os.urandom(32), free_port_pair()), log) as proc:
        code = proc.wait(120)
    output = log.read_text()
    assert code != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("privacy-pipeline: error:")]
    assert len(errors) == 1, output
    assert "master key" in errors[0] and "does not hold" in errors[0], output


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())
    except (urllib.error.URLError, ConnectionError):
        return None


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, ConnectionError):
        return False


def _counters(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _moved(before: dict, after: dict, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v - before.get((n, labels), 0.0) for (n, labels), v in after.items()
            if n == name and v - before.get((n, labels), 0.0) != 0}


def test_metrics_scrape_counters_move_by_expected_amounts(kafka_bootstrap: str, unique: str,
                                                          tmp_path: Path) -> None:
    """Issue 7 acceptance 1: scrape a running worker's /metrics; events in, events out per
    destination, drops per reason and clause, dead letters per error class move by exactly
    the expected amounts; ``promtool check metrics`` accepts the scrape."""
    promtool = require_tool("promtool")
    settings = pipeline_settings(kafka_bootstrap, tmp_path, f"scrape-{unique}.")
    cat = settings.catalog
    wait_for_leaders(settings)
    port = free_port_pair()
    master = os.urandom(32)
    with _worker(_env(settings, master, port), tmp_path / "worker.log") as proc:
        deadline = time.monotonic() + 90
        while not _ready(port):
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, "worker never became ready"
            time.sleep(0.2)  # polling the readiness probe, not waiting for results
        before = _counters(_scrape(port) or "")

        rng = random.Random(9)
        events = sample_events(400, seed=21, subjects=40)
        consents = [make_consent(f"acct-{i:06d}", rng,
                                 jurisdiction=rng.choice(["US-CA", "EU", "US"]))
                    for i in range(0, 40, 2)]
        produce(settings, cat.consent.name, [(c["subject_id"], c) for c in consents],
                schema="ConsentRecord")
        produce_events(settings, events)
        bad = [(f"bad-{i}", BAD[i % len(BAD)]) for i in range(10)]
        produce(settings, cat.raw_server.name, bad)

        expected_in = Counter({cat.consent.name: len(consents)})
        topic_of = {s.name: cat.by_name(settings.topic_prefix + s.topic).name
                    for s in default_codec().catalog if s.role == "input"}
        expected_in.update(topic_of[schema] for schema, _ in events)
        expected_in[cat.raw_server.name] += len(bad)
        out: Counter[str] = Counter()
        drops: Counter[tuple[str, str]] = Counter()
        for decision in expected_outcomes(events, consents, load_policy_for(settings)).values():
            if isinstance(decision, Routed):
                out.update(o.destination for o in decision.outputs)
            else:
                drops[(decision.reason, decision.clause)] += 1
        letters: Counter[str] = Counter()
        for _, value in bad:
            try:
                default_codec().decode(value)
            except SerializationError as exc:
                letters[type(exc).__name__] += 1

        total_in = sum(expected_in.values())
        deadline = time.monotonic() + 120
        while True:
            text = _scrape(port) or ""
            moved_in = _moved(before, _counters(text), "privacy_pipeline_events_in_total")
            if sum(moved_in.values()) >= total_in:
                break
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, f"events_in moved {moved_in}, want {total_in}"
            time.sleep(0.5)  # polling the scrape until the counters moved
        after = _counters(text)

    assert _moved(before, after, "privacy_pipeline_events_in_total") == {
        (("topic", t),): float(n) for t, n in expected_in.items()}
    assert _moved(before, after, "privacy_pipeline_events_out_total") == {
        (("destination", d),): float(n) for d, n in out.items()}
    assert _moved(before, after, "privacy_pipeline_drops_total") == {
        (("clause", c), ("reason", r)): float(n) for (r, c), n in drops.items()}
    assert _moved(before, after, "privacy_pipeline_dead_letters_total") == {
        (("error_class", e),): float(n) for e, n in letters.items()}
    assert len(out) >= 4 and len(drops) >= 3 and letters

    check = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                           capture_output=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
