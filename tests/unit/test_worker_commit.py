"""D2 with the overlapped commit (D10): a batch's transaction commits on a thread, and the
next batch's transaction begins only once it has settled; a failed commit stops the worker.

The worker runs ``_handle`` against scripted consumer and producer stand-ins (no broker):
the first commit is held until the second batch has been decided, and the producer's
call log shows the order.
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from streams.policy import default_policy
from streams.processor import SubjectStore
from streams.settings import Settings
from streams.worker import Worker

pytestmark = pytest.mark.unit


class _Msg:
    def __init__(self, topic: str, offset: int) -> None:
        self._topic, self._offset = topic, offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"s1"

    def value(self) -> bytes:
        return b"not avro"  # a dead letter: one record to produce per batch

    def headers(self) -> None:
        return None


class _Consumer:
    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, 0) for tp in partitions]

    def consumer_group_metadata(self) -> str:
        return "group-metadata"

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        return 0, 10


class _Producer:
    def __init__(self, hold_first_commit: threading.Event, fail: bool = False) -> None:
        self.calls: list[str] = []
        self._hold, self._fail, self._commits = hold_first_commit, fail, 0

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append("produce")

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        self.calls.append("offsets")

    def commit_transaction(self, timeout: float) -> None:
        self._commits += 1
        if self._commits == 1:
            assert self._hold.wait(10), "the first commit was never released"
        if self._fail:
            raise RuntimeError("commit failed")
        self.calls.append("committed")


def _worker(tmp_path: Path) -> Worker:
    settings = Settings.from_env({
        "KAFKA_BOOTSTRAP_SERVERS": "localhost:1", "PRIVACY_PIPELINE_HOME": str(tmp_path),
        "PRIVACY_PIPELINE_MASTER_KEY": base64.b64encode(b"k" * 32).decode()})
    worker = Worker(settings, default_policy())
    worker.stores[0] = SubjectStore(worker.keyring)
    return worker


def test_next_transaction_begins_only_after_the_previous_commit(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    release = threading.Event()
    producer, consumer = _Producer(release), _Consumer()
    topic = worker.catalog.raw_playback.name
    decide = worker.processor.process_partitions
    decided: list[list[str]] = []

    def decide_then_release(*args: Any) -> Any:
        found = decide(*args)
        decided.append(list(producer.calls))
        if len(decided) == 2:
            release.set()  # the first commit settles only after the second batch is decided
        return found

    worker.processor.process_partitions = decide_then_release  # type: ignore[method-assign]
    worker._handle([_Msg(topic, 0)], consumer, producer)  # type: ignore[arg-type]
    worker._handle([_Msg(topic, 1)], consumer, producer)  # type: ignore[arg-type]
    assert "committed" not in decided[1]  # the second batch was decided during the commit
    worker._settle_commit()
    assert producer.calls == ["begin", "produce", "offsets", "committed",
                              "begin", "produce", "offsets", "committed"]


def test_a_failed_commit_stops_the_worker_before_the_next_transaction(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    release = threading.Event()
    release.set()
    producer, consumer = _Producer(release, fail=True), _Consumer()
    topic = worker.catalog.raw_playback.name
    worker._handle([_Msg(topic, 0)], consumer, producer)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="commit failed"):
        worker._handle([_Msg(topic, 1)], consumer, producer)  # type: ignore[arg-type]
    assert producer.calls.count("begin") == 1
