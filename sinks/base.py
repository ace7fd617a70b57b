"""The one contract every sink implements, and the batching base class.

A sink receives decoded records with ``add(record, tp, offset)``, makes them durable on
``flush()`` and releases resources on ``close()``. ``BatchingSink`` keeps one batch per
topic-partition; subclasses implement only ``write(batch)``. A write that cannot happen now
raises ``SinkBackpressure``: the batch stays in place and the next ``flush()`` retries the
very same batch (same offsets, so the same idempotency token). The runner commits offsets
only from ``flushed_offsets()``, i.e. only after a successful write.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from sinks.errors import SinkBackpressure


class TopicPartition(NamedTuple):
    topic: str
    partition: int


@dataclass
class Batch:
    """Records of one topic-partition, in offset order."""

    tp: TopicPartition
    records: list[Mapping[str, Any]] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)

    @property
    def first_offset(self) -> int:
        return self.offsets[0]

    @property
    def last_offset(self) -> int:
        return self.offsets[-1]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def token(self) -> str:
        """Idempotency token of this batch: the same offsets give the same token."""
        return f"{self.tp.topic}/{self.tp.partition}/{self.first_offset}-{self.last_offset}"


class Sink(Protocol):
    name: str

    def add(self, record: Mapping[str, Any], tp: TopicPartition, offset: int) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class BatchingSink(abc.ABC):
    """One batch per topic-partition; ``flush`` writes them, ``write`` is the subclass's job."""

    name = "sink"

    def __init__(self) -> None:
        self._batches: dict[TopicPartition, Batch] = {}
        self._flushed: dict[TopicPartition, int] = {}

    def add(self, record: Mapping[str, Any], tp: TopicPartition, offset: int) -> None:
        self.validate(record, tp)
        batch = self._batches.get(tp)
        if batch is None:
            batch = self._batches[tp] = Batch(tp)
        batch.records.append(record)
        batch.offsets.append(offset)

    def validate(self, record: Mapping[str, Any], tp: TopicPartition) -> None:
        """Raise ``RecordRejected`` if ``record`` may not go to this sink (default: accept)."""
        return

    def recover(self, tp: TopicPartition, next_offset: int) -> None:
        """Called on assignment with the committed offset; a sink whose backend may hold
        rows past it (a crash between write and commit) must not write them twice."""
        return

    def pending(self) -> int:
        """Rows added but not yet written."""
        return sum(len(b) for b in self._batches.values())

    def batches(self) -> Iterator[Batch]:
        return iter(list(self._batches.values()))

    def flush(self) -> None:
        """Write every pending batch; on backpressure the failed batch (and later ones) stay."""
        self.write_batches([b for b in self.batches() if b.records], self._written)

    def _written(self, batch: Batch) -> None:
        del self._batches[batch.tp]
        self._flushed[batch.tp] = batch.last_offset + 1

    def write_batches(self, batches: list[Batch], written: Callable[[Batch], None]) -> None:
        """Write ``batches`` in order, calling ``written`` with each once it is durable; an
        error stops at the failing batch (default: one ``write`` after the other)."""
        for batch in batches:
            self.write(batch)
            written(batch)

    def flushed_offsets(self) -> dict[TopicPartition, int]:
        """Next offsets to commit (last written + 1) since the last call; then forgotten."""
        done, self._flushed = self._flushed, {}
        return done

    def drop_partitions(self, tps: list[TopicPartition]) -> None:
        """Forget unwritten batches of revoked partitions (their new owner re-reads them)."""
        for tp in tps:
            self._batches.pop(tp, None)
            self._flushed.pop(tp, None)

    @abc.abstractmethod
    def write(self, batch: Batch) -> None:
        """Make ``batch`` durable, idempotently; raise ``SinkBackpressure`` to be retried."""

    def close(self) -> None:
        """Release resources (default: nothing)."""
        return


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff before consumption is paused."""

    attempts: int = 4
    base_seconds: float = 0.2
    max_seconds: float = 5.0

    def delay(self, attempt: int, error: SinkBackpressure | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (1-based); at least ``retry_after``."""
        backoff = min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1))
        return max(backoff, error.retry_after if error is not None else 0.0)
