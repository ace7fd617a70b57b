"""Scenario R1 (issue 9, item 1): SIGKILL the worker three times mid-run, restart it each
time; after the last restart drains, every input has exactly one committed outcome.

The worker is exactly-once (docs/decisions.md D2): outputs, drops, dead letters and the
consumed offsets of a batch are one Kafka transaction, so the ledger read with
``read_committed`` must hold no duplicate and no loss. Size: ``RELIABILITY_EVENTS``
(default 100,000 events).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from streams.infra import load_policy_for
from streams.traffic import BATCH, produce_stream
from streams.traffic_model import TrafficConfig
from streams.traffic_stream import TrafficStream
from tests.integration.harness import pipeline_settings, wait_for_leaders
from tests.integration.reliability.accounting import actual_from, compare, expected_from
from tests.integration.reliability.worker_proc import GroupProgress, WorkerProcess, wait_until

EVENTS = int(os.environ.get("RELIABILITY_EVENTS", 100_000))
SEED = int(os.environ.get("RELIABILITY_SEED", 20260109))
KILLS = 3


def generated(config: TrafficConfig, events: int) -> list[tuple[str, bytes, bytes]]:
    """The messages ``produce_stream`` sends for ``events`` (the generator is pure)."""
    stream = TrafficStream(config)
    out: list[tuple[str, bytes, bytes]] = []
    while stream.events < events:
        out += stream.batch(min(BATCH, events - stream.events))
    return out


def test_sigkill_three_times_every_input_accounted_exactly_once(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    print(f"R1: events={EVENTS} seed={SEED} kills={KILLS}")
    settings = pipeline_settings(kafka_bootstrap, tmp_path, f"kill-{unique}.")
    wait_for_leaders(settings)
    config = TrafficConfig(seed=SEED, subjects=3_000)
    summary = produce_stream(kafka_bootstrap, settings.catalog, config, events=EVENTS)
    assert sum(summary["bad"].values()) > 0, summary

    progress = GroupProgress(settings)
    total = progress.refresh_ends()
    rng = random.Random(SEED)
    points = sorted(rng.uniform(0.1, 0.85) for _ in range(KILLS))
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    t0 = time.monotonic()
    try:
        worker.start()
        for point in points:
            # Each kill lands mid-processing: after the restarted worker committed at
            # least one more batch, and before the inputs are drained.
            target = min(max(int(point * total), (progress.committed() or 0) + 5_000),
                         total - 1_000)

            def reached(t: int = target) -> bool:
                return (progress.committed() or 0) >= t

            wait_until(reached, 300,
                       f"committed offsets past {point:.0%}", worker)
            worker.kill()
            print(f"R1: SIGKILL at {progress.committed()}/{total} committed "
                  f"({time.monotonic() - t0:.1f}s)")
            worker.start()
        wait_until(progress.drained, 400, "the group drains the inputs", worker)
        print(f"R1: drained after {time.monotonic() - t0:.1f}s, {worker.starts} starts")
    finally:
        worker.stop()
        progress.close()

    exp = expected_from(generated(config, EVENTS), settings.catalog, load_policy_for(settings))
    report = compare(exp, actual_from(settings))
    print(f"R1: {report}")
    assert exp.inputs == sum(summary["topics"][t.name] for t in settings.catalog.raw)
    assert (report.duplicates, report.losses, report.unexpected) == (0, 0, 0), report
    assert report.dead_letters == sum(exp.dead_letters.values()) > 0
