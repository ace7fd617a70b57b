"""The worker as a real process (``python -m streams.cli worker``), and its group's progress.

Tests act as the supervisor: they start, SIGKILL and restart the process, and watch the
consumer group's committed offsets (the only progress that survives a crash).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import KafkaException, TopicPartition

from streams import kafka_clients
from streams.settings import Settings
from tests.integration.harness import TEST_MASTER_KEY

ROOT = Path(__file__).parents[3]


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "PRIVACY_"))}
    return env | {"KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap,
                  "PRIVACY_PIPELINE_HOME": str(settings.home),
                  "PRIVACY_PIPELINE_TOPIC_PREFIX": settings.topic_prefix,
                  "PRIVACY_PIPELINE_MASTER_KEY": TEST_MASTER_KEY,
                  "PRIVACY_PIPELINE_METRICS_PORT": "0"}


class WorkerProcess:
    """One supervised worker process at a time; logs appended to ``log``."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings, self.log = settings, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts + 1}\n".encode())
            out.flush()
            self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"],
                                         cwd=ROOT, env=worker_env(self.settings),
                                         stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, the open transaction is left to the broker."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class GroupProgress:
    """Committed offsets of the worker group against the inputs' end offsets."""

    def __init__(self, settings: Settings) -> None:
        cat = settings.catalog
        self.client = kafka_clients.consumer(settings.kafka_bootstrap,
                                             settings.consumer_group("worker"))
        self.parts = [TopicPartition(t.name, p) for t in (*cat.raw, cat.consent)
                      for p in range(t.partitions)]
        self.ends: dict[tuple[str, int], int] = {}

    def refresh_ends(self) -> int:
        for tp in self.parts:
            self.ends[(tp.topic, tp.partition)] = kafka_clients.watermarks(self.client, tp)[1]
        return sum(self.ends.values())

    def committed(self) -> int | None:
        """Sum of committed offsets (None while the broker does not answer)."""
        try:
            got = self.client.committed(self.parts, timeout=10)
        except KafkaException:
            return None
        return sum(max(tp.offset, 0) for tp in got)

    def drained(self) -> bool:
        try:
            got = self.client.committed(self.parts, timeout=10)
        except KafkaException:
            return False
        return all(max(tp.offset, 0) >= self.ends[(tp.topic, tp.partition)] for tp in got)

    def lagging(self) -> dict[tuple[str, int], tuple[int, int]]:
        got = self.client.committed(self.parts, timeout=10)
        return {(tp.topic, tp.partition): (tp.offset, self.ends[(tp.topic, tp.partition)])
                for tp in got if max(tp.offset, 0) < self.ends[(tp.topic, tp.partition)]}

    def close(self) -> None:
        self.client.close()


def wait_until(cond: Callable[[], bool], timeout: float, what: str,
               worker: WorkerProcess | None = None,
               restart_on_exit: bool = False) -> None:
    """Poll ``cond`` until it holds; a worker that exits fails the wait, or is restarted
    (acting as its supervisor) when ``restart_on_exit``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if worker is not None and (code := worker.exited()) is not None:
            if not restart_on_exit:
                raise AssertionError(f"worker exited with {code} while waiting for {what}:\n"
                                     f"{worker.tail()}")
            worker.start()
        if time.monotonic() > deadline:
            tail = worker.tail() if worker is not None else ""
            raise AssertionError(f"{what}: not within {timeout:.0f}s\n{tail}")
        time.sleep(0.2)  # polling the group's committed offsets, bounded by the deadline
