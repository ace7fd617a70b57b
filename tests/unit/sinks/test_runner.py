"""The runner's commit, dead-letter and pause/resume rules, with a scripted consumer."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
from confluent_kafka import TopicPartition as KTP

from sinks.base import Batch, BatchingSink, RetryPolicy, TopicPartition
from sinks.errors import RecordRejected, SinkBackpressure
from sinks.runner import SinkRunner
from streams.avro_columns import DecodedBatch, SchemaRows


class Msg:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self._t, self._p, self._o, self._v = topic, partition, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return self._v

    def key(self) -> None:
        return None


class ScriptedConsumer:
    def __init__(self, polls: list[list[Msg]]) -> None:
        self.polls = polls
        self.commits: list[dict[tuple[str, int], int]] = []
        self.paused: list[str] = []

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        return self.polls.pop(0) if self.polls else []

    def commit(self, offsets: list[KTP], asynchronous: bool) -> None:
        self.commits.append({(o.topic, o.partition): o.offset for o in offsets})

    def pause(self, parts: list[KTP]) -> None:
        self.paused.append("pause")

    def resume(self, parts: list[KTP]) -> None:
        self.paused.append("resume")

    def get_watermark_offsets(self, tp: KTP, cached: bool) -> tuple[int, int]:
        return (0, 100)

    def position(self, parts: list[KTP]) -> list[KTP]:
        return [KTP(p.topic, p.partition, -1001) for p in parts]  # as before any consume


class Producer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def produce(self, topic: str, value: bytes, key: Any, headers: list[Any]) -> None:
        self.sent.append({"topic": topic, "value": value, **dict(headers)})

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


class FlakySink(BatchingSink):
    name = "flaky"

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.rows: list[int] = []

    def write(self, batch: Batch) -> None:
        if self.failures:
            self.failures -= 1
            raise SinkBackpressure("backend down", retry_after=0.0)
        self.rows.extend(batch.rows.column("n").to_pylist())


def _decode(values: Sequence[bytes]) -> DecodedBatch:
    """Integers as "Row" records; ``b"bad"`` does not decode."""
    good = [i for i, v in enumerate(values) if v != b"bad"]
    table = pa.table({"n": [int(values[i]) for i in good]})
    schema = SimpleNamespace(name="Row", id=1)
    return DecodedBatch((SchemaRows(schema, table, np.array(good, np.int64)),),  # type: ignore[arg-type]
                        {i: RecordRejected("bad bytes") for i, v in enumerate(values)
                         if v == b"bad"})


def _runner(sink: BatchingSink, consumer: ScriptedConsumer, producer: Producer) -> SinkRunner:
    return SinkRunner(sink=sink, consumer=consumer, producer=producer, schemas={"in": "Row"},
                      dead_letter_topic="dlq", decode=_decode, region="us-east",
                      flush_rows=3, flush_seconds=3600, stop_event=threading.Event(),
                      retry=RetryPolicy(attempts=2, base_seconds=0.001, max_seconds=0.001))


def test_commits_only_after_a_successful_flush_and_dead_letters_bad_records() -> None:
    consumer = ScriptedConsumer([[Msg("in", 0, 0, b"1"), Msg("in", 0, 1, b"bad")],
                                 [Msg("in", 0, 2, b"2"), Msg("in", 0, 3, b"3")]])
    producer, sink = Producer(), FlakySink(failures=0)
    runner = _runner(sink, consumer, producer)
    runner.step()
    assert consumer.commits == [] and sink.rows == []  # below flush_rows: nothing yet
    runner.step()
    assert sink.rows == [1, 2, 3]
    assert consumer.commits == [{("in", 0): 4}]
    assert producer.sent == [{"topic": "dlq", "value": b"bad", "source_topic": "in",
                              "source_partition": "0", "source_offset": "1",
                              "error_class": "RecordRejected", "error_message": "bad bytes",
                              "processing_region": "us-east"}]


def test_backpressure_retries_then_pauses_then_resumes_without_loss() -> None:
    consumer = ScriptedConsumer([[Msg("in", 1, o, str(o).encode()) for o in range(3)]])
    sink = FlakySink(failures=4)  # 1 try + 2 retries fail -> pause; next retry fails too
    runner = _runner(sink, consumer, Producer())
    runner.step()
    assert runner.paused and consumer.paused == ["pause"] and consumer.commits == []
    runner._next_retry = 0
    runner.step()  # still down
    assert runner.paused and consumer.commits == []
    runner._next_retry = 0
    runner.step()  # back
    assert not runner.paused and consumer.paused == ["pause", "resume"]
    assert sink.rows == [0, 1, 2] and consumer.commits == [{("in", 1): 3}]
    assert runner.committed == {TopicPartition("in", 1): 3}


def test_an_asked_for_flush_writes_and_commits_at_once_c15() -> None:
    """A deletion's sink purge asks for the rows consumed so far instead of waiting for
    the flush interval (here an hour)."""
    consumer = ScriptedConsumer([[Msg("in", 0, 0, b"1")], [], [Msg("in", 0, 1, b"2")]])
    sink = FlakySink(failures=0)
    runner = _runner(sink, consumer, Producer())
    runner.step()
    assert sink.rows == [] and consumer.commits == []  # one row: below flush_rows
    runner.flush_asked.set()
    runner.step()
    assert sink.rows == [1] and consumer.commits == [{("in", 0): 1}]
    assert not runner.flush_asked.is_set()
    runner.step()  # not asked again: back to size and interval
    assert sink.rows == [1] and consumer.commits == [{("in", 0): 1}]


class PickySink(FlakySink):
    """Refuses the row holding 2, as a sink refuses a record outside its regions."""

    def validate(self, rows: pa.Table, tp: TopicPartition) -> dict[int, RecordRejected]:
        return {i: RecordRejected("no twos") for i, n in enumerate(rows.column("n").to_pylist())
                if n == 2}


def test_rows_a_sink_refuses_are_dead_lettered_with_their_own_source() -> None:
    consumer = ScriptedConsumer([[Msg("in", 0, 0, b"1"), Msg("in", 1, 5, b"2"),
                                  Msg("in", 0, 1, b"bad"), Msg("in", 1, 6, b"3"),
                                  Msg("in", 0, 2, b"4")]])
    producer, sink = Producer(), PickySink(failures=0)
    runner = _runner(sink, consumer, producer)
    runner.step()
    assert sorted(sink.rows) == [1, 3, 4]
    assert [(m["source_partition"], m["source_offset"], m["error_message"])
            for m in producer.sent] == [("0", "1", "bad bytes"), ("1", "5", "no twos")]
    assert consumer.commits == [{("in", 0): 3, ("in", 1): 7}]
