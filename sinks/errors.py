"""Errors of the sinks, under the project's one root (``streams.errors``).

PipelineError
├── ClickHouseError
│   └── SinkWriteError      a write failed for good (bad data, refused DDL)
├── ConfigError
│   └── ResidencyError      this sink's region is outside the policy's allowed regions (C12)
├── SerializationError
│   └── RecordRejected      one record cannot go to this sink (dead-lettered, not fatal)
└── SinkError
    ├── SinkBackpressure    the backend is unreachable or overloaded; retry after ``retry_after``
    └── QueryRejected       ``query`` refused a statement that is not read-only

Driver and network errors are mapped at the edge (``clickhouse_sink``) to the most
specific of these.
"""

from __future__ import annotations

from streams.errors import ClickHouseError, ConfigError, PipelineError, SerializationError


class SinkError(PipelineError):
    """Root of the errors raised by sinks."""


class SinkBackpressure(SinkError):
    """The backend cannot take the batch now; the same batch is retried, never dropped."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SinkWriteError(SinkError, ClickHouseError):
    """A write failed in a way a retry will not fix."""


class ResidencyError(SinkError, ConfigError):
    """C12: the sink would store data outside the allowed processing regions."""


class RecordRejected(SinkError, SerializationError):
    """One record cannot be delivered to this sink; the runner dead-letters it."""


class QueryRejected(SinkError):
    """A statement sent to ``query`` is not read-only."""
