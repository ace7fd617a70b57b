"""Scenario R2 (issue 9, item 2): stop the broker mid-run and start it again on the same
data directory and ports; the worker recovers with no operator action and the committed
ledger has no duplicate and no loss.

A dedicated broker (its own temp dir and free ports), so the session broker the other
tests share is never stopped. The test acts as the worker's supervisor: if the worker
exits non-zero during the outage (a crashed worker exits loudly, see streams/worker.py),
it is started again, as a process supervisor (Kubernetes, systemd) would.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.errors import BrokerError
from streams.infra import load_policy_for
from streams.local_kafka import LocalKafka, free_port_pair, resolve_jars
from streams.settings import Settings
from streams.traffic import produce_stream
from streams.traffic_model import TrafficConfig
from tests.integration.harness import pipeline_settings, wait_for_leaders
from tests.integration.reliability.accounting import actual_from, compare, expected_from
from tests.integration.reliability.test_worker_sigkill import generated
from tests.integration.reliability.worker_proc import GroupProgress, WorkerProcess, wait_until

EVENTS = int(os.environ.get("RELIABILITY_BROKER_EVENTS", 20_000))
SEED = int(os.environ.get("RELIABILITY_SEED", 20260109)) + 1


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    base = Settings.from_env({k: v for k, v in os.environ.items()
                              if k not in ("PRIVACY_PIPELINE_HOME", "KAFKA_BOOTSTRAP_SERVERS")}
                             | {"PRIVACY_PIPELINE_HOME": str(tmp_path / "home")})
    libs = resolve_jars(base.cache, base.kafka_version, base.kafka_home)
    broker = LocalKafka(home=tmp_path / "kafka", libs=libs, port=free_port_pair())
    broker.start(owned=True)
    try:
        yield broker
    finally:
        broker.stop()


def _restart(broker: LocalKafka, timeout: float = 120.0) -> None:
    """Start on the same dir and ports; the ports may linger a moment after the stop."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            broker.start(owned=True)
            return
        except BrokerError as exc:
            if "taken" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)  # the old listener's sockets are still closing


def test_broker_stop_and_restart_mid_run_no_loss_no_duplicates(
        own_broker: LocalKafka, unique: str, tmp_path: Path) -> None:
    print(f"R2: events={EVENTS} seed={SEED}")
    settings = pipeline_settings(own_broker.bootstrap, tmp_path / "home", f"brk-{unique}.")
    wait_for_leaders(settings)
    config = TrafficConfig(seed=SEED, subjects=2_000)
    produce_stream(own_broker.bootstrap, settings.catalog, config, events=EVENTS)
    progress = GroupProgress(settings)
    total = progress.refresh_ends()
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    t0 = time.monotonic()
    try:
        worker.start()
        wait_until(lambda: (progress.committed() or 0) >= total // 3, 300,
                   "a third committed before the outage", worker)
        at = progress.committed()
        own_broker.stop()
        print(f"R2: broker stopped at {at}/{total} committed ({time.monotonic() - t0:.1f}s)")
        _restart(own_broker)
        print(f"R2: broker back ({time.monotonic() - t0:.1f}s); worker "
              f"{'exited ' + str(worker.exited()) if worker.exited() is not None else 'alive'}")
        wait_until(progress.drained, 400, "the group drains the inputs after the restart",
                   worker, restart_on_exit=True)
        print(f"R2: drained after {time.monotonic() - t0:.1f}s; worker starts: {worker.starts}")
    finally:
        worker.stop()
        progress.close()

    exp = expected_from(generated(config, EVENTS), settings.catalog, load_policy_for(settings))
    report = compare(exp, actual_from(settings))
    print(f"R2: {report}; supervisor restarts: {worker.starts - 1}")
    assert (report.duplicates, report.losses, report.unexpected) == (0, 0, 0), report
