"""The one contract every sink implements, and the batching base class.

A sink receives decoded records as Arrow tables with ``add(rows, tp, offsets)`` (the
runner's batch decoder, ``streams.avro_columns``, gives one per schema), makes them durable
on ``flush()`` and releases resources on ``close()``. ``BatchingSink`` keeps one batch per
topic-partition; subclasses implement only ``write(batch)``, and ``validate(rows, tp)`` to
refuse rows (the runner dead-letters them). A write that cannot happen now raises
``SinkBackpressure``: the batch stays in place and the next ``flush()`` retries the very
same batch (same offsets, so the same idempotency token). The runner commits offsets only
from ``flushed_offsets()``, i.e. only after a successful write.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sinks.errors import RecordRejected, SinkBackpressure


class TopicPartition(NamedTuple):
    topic: str
    partition: int


@dataclass
class Batch:
    """Rows of one topic-partition, in offset order, as the tables they were added in."""

    tp: TopicPartition
    chunks: list[pa.Table] = field(default_factory=list)
    offset_chunks: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def of(cls, tp: TopicPartition, rows: pa.Table, offsets: Sequence[int]) -> Batch:
        return cls(tp, [rows], [np.asarray(offsets, np.int64)])

    def append(self, rows: pa.Table, offsets: np.ndarray) -> None:
        self.chunks.append(rows)
        self.offset_chunks.append(offsets)

    @property
    def rows(self) -> pa.Table:
        """The batch's rows as one table (one chunk per column)."""
        if len(self.chunks) == 1:
            return self.chunks[0].combine_chunks()
        return pa.concat_tables(self.chunks).combine_chunks()

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate(self.offset_chunks) if self.offset_chunks else np.zeros(0, int)

    @property
    def first_offset(self) -> int:
        return int(self.offset_chunks[0][0])

    @property
    def last_offset(self) -> int:
        return int(self.offset_chunks[-1][-1])

    def __len__(self) -> int:
        return sum(len(o) for o in self.offset_chunks)

    @property
    def token(self) -> str:
        """Idempotency token of this batch: the same offsets give the same token."""
        return f"{self.tp.topic}/{self.tp.partition}/{self.first_offset}-{self.last_offset}"


Rejected = dict[int, RecordRejected]  # row of an added table -> why the sink refuses it


def outside_regions(rows: pa.Table, allowed: Collection[str]) -> Rejected:
    """Rows whose ``processing_region`` the policy does not allow (C12)."""
    regions = rows.column("processing_region")
    inside = pc.is_in(regions, value_set=pa.array(sorted(allowed), pa.string()))
    bad = np.flatnonzero(~np.asarray(inside.fill_null(False)))
    found = regions.take(bad).to_pylist() if len(bad) else []
    return {int(i): RecordRejected(f"processing_region {region!r} is outside the allowed "
                                   f"regions {sorted(allowed)} (C12)")
            for i, region in zip(bad, found, strict=True)}


class Sink(Protocol):
    name: str

    def add(self, rows: pa.Table, tp: TopicPartition, offsets: Sequence[int]) -> Rejected: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class BatchingSink(abc.ABC):
    """One batch per topic-partition; ``flush`` writes them, ``write`` is the subclass's job."""

    name = "sink"

    def __init__(self) -> None:
        self._batches: dict[TopicPartition, Batch] = {}
        self._flushed: dict[TopicPartition, int] = {}

    def add(self, rows: pa.Table, tp: TopicPartition, offsets: Sequence[int]) -> Rejected:
        """Add decoded rows consumed at ``offsets``; returns the rows refused (not added)."""
        at = np.asarray(offsets, np.int64)
        rejected = self.validate(rows, tp)
        if rejected:
            keep = np.ones(len(at), bool)
            keep[list(rejected)] = False
            rows, at = rows.filter(pa.array(keep)), at[keep]
        if len(at):
            batch = self._batches.get(tp)
            if batch is None:
                batch = self._batches[tp] = Batch(tp)
            batch.append(rows, at)
        return rejected

    def validate(self, rows: pa.Table, tp: TopicPartition) -> Rejected:
        """The rows of ``rows`` that may not go to this sink (default: none)."""
        return {}

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
        self.write_batches([b for b in self.batches() if len(b)], self._written)

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
