"""The sink contract and retry policy, with an in-memory sink (no broker, no engine)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from sinks.base import Batch, BatchingSink, RetryPolicy, TopicPartition
from sinks.errors import SinkBackpressure

A0, A1 = TopicPartition("a", 0), TopicPartition("a", 1)


class MemorySink(BatchingSink):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[tuple[TopicPartition, list[int], str]] = []
        self.fail_next = 0

    def write(self, batch: Batch) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise SinkBackpressure("down", retry_after=0.5)
        self.written.append((batch.tp, list(batch.offsets), batch.token))


def _rows(*values: int) -> pa.Table:
    return pa.table({"i": list(values)})


def test_one_batch_per_topic_partition_and_offsets_after_flush() -> None:
    sink = MemorySink()
    for off in range(3):
        sink.add(_rows(off), A0, [off])
    sink.add(_rows(9), A1, [7])
    assert sink.pending() == 4
    assert sink.flushed_offsets() == {}  # nothing written yet, nothing to commit
    sink.flush()
    assert sink.written == [(A0, [0, 1, 2], "a/0/0-2"), (A1, [7], "a/1/7-7")]
    assert sink.flushed_offsets() == {A0: 3, A1: 8}
    assert sink.flushed_offsets() == {}
    assert sink.pending() == 0


def test_backpressure_keeps_the_same_batch_for_the_retry() -> None:
    sink = MemorySink()
    for off in range(10, 13):
        sink.add(_rows(off), A0, [off])
    sink.fail_next = 1
    with pytest.raises(SinkBackpressure) as exc:
        sink.flush()
    assert exc.value.retry_after == 0.5
    assert sink.pending() == 3 and sink.flushed_offsets() == {}
    sink.add(_rows(13), A0, [13])  # consumed meanwhile: joins the batch
    sink.flush()
    assert sink.written == [(A0, [10, 11, 12, 13], "a/0/10-13")]
    assert sink.flushed_offsets() == {A0: 14}


def test_revoked_partitions_are_forgotten() -> None:
    sink = MemorySink()
    sink.add(_rows(1), A0, [1])
    sink.add(_rows(2), A1, [2])
    sink.drop_partitions([A0])
    sink.flush()
    assert [w[0] for w in sink.written] == [A1]


def test_retry_policy_backs_off_exponentially_and_honours_retry_after() -> None:
    policy = RetryPolicy(attempts=4, base_seconds=0.2, max_seconds=1.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.delay(1, SinkBackpressure("busy", retry_after=3.0)) == 3.0
