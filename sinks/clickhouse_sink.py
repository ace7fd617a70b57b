"""The ClickHouse sink: cleaned analytics events and aggregate cells, idempotently.

Each batch is one insert of an Arrow table (``clickhouse_rows``) through clickhouse-connect
(embedded chDB or a server, by DSN). Exactly one row per consumed offset, even across
crashes:

- a retried batch (backpressure) is the same batch, inserted with the same
  ``insert_deduplication_token`` (topic/partition/offset range), which ClickHouse
  deduplicates (``non_replicated_deduplication_window`` on the tables; verified on chDB
  in ``tests/integration/sinks/test_clickhouse_sink.py``);
- after a restart, batches may be cut differently, so tokens cannot match: every row
  records its source ``_topic/_partition/_offset``, and the first write of a partition
  after an assignment skips the offsets the table already holds beyond the committed one
  (a crash between insert and commit);
- the table is a ReplacingMergeTree on the event id for duplicates made upstream; they
  collapse when parts merge (not inside the inserted block: ``optimize_on_insert=0``).

Residency (C12): the sink refuses to start when its region is not allowed by the policy,
and dead-letters any record processed outside the allowed regions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from sinks.base import Batch, BatchingSink, Rejected, TopicPartition, outside_regions
from sinks.clickhouse_rows import cell_table, event_table, warm_up
from sinks.errors import RecordRejected, ResidencyError, SinkBackpressure, SinkWriteError
from sinks.migrations import migrate, set_k_threshold
from sinks.sink_policy import RowRetention, SinkPolicy
from streams import metrics
from streams.errors import ClickHouseError
from streams.topics import Catalog

_LOG = logging.getLogger(__name__)

DEFAULT_DATABASE = "privacy_pipeline"
EVENTS_TABLE = "analytics_events"
CELLS_TABLE = "aggregate_cells"
# Server-side conditions that pass: retry the same batch later instead of failing.
_TRANSIENT = ("TOO_MANY_PARTS", "MEMORY_LIMIT_EXCEEDED", "TIMEOUT_EXCEEDED",
              "TOO_MANY_SIMULTANEOUS_QUERIES", "NETWORK_ERROR", "SOCKET_TIMEOUT")

class ClickHouseSink(BatchingSink):
    """Analytics events and aggregate cells into ClickHouse."""

    name = "clickhouse"

    def __init__(self, *, client_factory: Callable[[], Any], catalog: Catalog,
                 policy: SinkPolicy, region: str, database: str = DEFAULT_DATABASE,
                 retry_after: float = 1.0) -> None:
        super().__init__()
        if not policy.region_allowed(region):
            raise ResidencyError(f"ClickHouse sink in region {region!r} refused: the policy "
                                 f"allows only {sorted(policy.allowed_regions)} (C12)")
        self.database = database
        self.policy = policy
        self._factory = client_factory
        self._client: Any = None
        self._retry_after = retry_after
        self._retention = RowRetention(policy)
        self._cells_retention = int(policy.aggregates_retention.total_seconds() // 3600)
        self.tables = {catalog.analytics.name: EVENTS_TABLE,
                       catalog.aggregates.name: CELLS_TABLE}
        self._recovering: dict[TopicPartition, int] = {}
        self._present: dict[TopicPartition, set[int]] = {}
        self._inserts = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse-insert")

    # --- connection ---------------------------------------------------------------------
    def client(self) -> Any:
        """The client, connecting and migrating first; unreachable -> SinkBackpressure."""
        if self._client is None:
            try:
                client = self._factory()
                migrate(client, self.database)
                set_k_threshold(client, self.database, self.policy.k_threshold)
            except (ClickHouseError, OperationalError) as exc:
                # No hint from an unreachable server: the runner's backoff decides.
                raise SinkBackpressure(f"ClickHouse unreachable: {_line(exc)}", 0.0) from exc
            warm_up()
            self._client = client
        return self._client

    def _fail(self, exc: Exception) -> SinkBackpressure:
        metrics.SINK_ERRORS.labels(sink=self.name, error_class=type(exc).__name__).inc()
        if isinstance(exc, OperationalError) or any(t in str(exc) for t in _TRANSIENT):
            self._client = None  # reconnect next time
            return SinkBackpressure(f"ClickHouse write failed: {_line(exc)}", self._retry_after)
        raise SinkWriteError(f"ClickHouse refused the write: {_line(exc)}") from exc

    # --- BatchingSink -------------------------------------------------------------------
    def validate(self, rows: pa.Table, tp: TopicPartition) -> Rejected:
        if tp.topic not in self.tables:
            refused = RecordRejected(f"{tp.topic} is not an input of the ClickHouse sink")
            return dict.fromkeys(range(rows.num_rows), refused)
        return outside_regions(rows, self.policy.allowed_regions)

    def recover(self, tp: TopicPartition, next_offset: int) -> None:
        self._recovering[tp] = next_offset
        self._present.pop(tp, None)

    def _already_written(self, tp: TopicPartition, table: str) -> set[int]:
        start = self._recovering.pop(tp, None)
        if start is not None:
            rows = self.client().query(
                f"SELECT _offset FROM {self.database}.{table} WHERE _topic = {{t:String}} "
                f"AND _partition = {{p:UInt16}} AND _offset >= {{o:UInt64}}",
                parameters={"t": tp.topic, "p": tp.partition, "o": start}).result_rows
            self._present[tp] = {int(r[0]) for r in rows}
            if rows:
                _LOG.warning("%s: %s[%d] holds %d rows past the committed offset %d (crash "
                             "between insert and commit); not writing them again", self.name,
                             tp.topic, tp.partition, len(rows), start)
        return self._present.get(tp, set())

    def write(self, batch: Batch) -> None:
        self.write_batches([batch], lambda _: None)

    def write_batches(self, batches: list[Batch], written: Callable[[Batch], None]) -> None:
        """Insert the batches in order, building each one's table while the one before it
        is inserted (decision D6): one insert in flight, and a batch counts as written only
        once its insert returned."""
        in_flight: list[tuple[Batch, Future[None]]] = []  # at most one
        try:
            for batch in batches:
                table = self._table(batch)
                _land(in_flight, written)
                in_flight.append((batch, self._inserts.submit(self._insert, batch, table)))
        finally:  # also when a later batch failed to build: the one before it still counts
            _land(in_flight, written)

    def _table(self, batch: Batch) -> pa.Table:
        """The batch's rows (pure, on the caller's thread)."""
        if self.tables[batch.tp.topic] == EVENTS_TABLE:
            return event_table(batch, self._retention)
        return cell_table(batch, self._cells_retention)

    def _insert(self, batch: Batch, rows: pa.Table) -> None:
        """Everything that talks to the engine, on the insert thread."""
        table = self.tables[batch.tp.topic]
        started = time.perf_counter()
        try:
            client = self.client()
            present = self._already_written(batch.tp, table)
            if present:
                rows = rows.filter(pc.invert(pc.is_in(rows["_offset"],
                                                      pa.array(sorted(present), pa.uint64()))))
                if not rows.num_rows:
                    return
            client.insert_arrow(f"{self.database}.{table}", rows, settings=_insert_settings(batch))
        except (OperationalError, DatabaseError) as exc:
            raise self._fail(exc) from exc
        metrics.SINK_INSERT_SECONDS.labels(sink=self.name).observe(
            time.perf_counter() - started)
        metrics.SINK_ROWS.labels(sink=self.name, table=table).inc(rows.num_rows)

    def close(self) -> None:
        self._inserts.shutdown(wait=True)

    # --- deletion -----------------------------------------------------------------------
    def purge(self, subject_pseudonym: str) -> int:
        """Delete every row of ``subject_pseudonym``; returns the rows removed.

        ``ALTER TABLE ... DELETE`` with ``mutations_sync=2`` rewrites the parts before it
        returns, so the data is physically gone, not only hidden.
        """
        return purge(self.client(), self.database, subject_pseudonym)


def purge(client: Any, database: str, subject_pseudonym: str) -> int:
    """Physically delete the rows of one pseudonym from ``analytics_events``."""
    table = f"{database}.{EVENTS_TABLE}"
    params = {"p": subject_pseudonym}
    n = int(client.query(f"SELECT count() FROM {table} WHERE subject_pseudonym = {{p:String}}",
                         parameters=params).result_rows[0][0])
    if n:
        client.command(f"ALTER TABLE {table} DELETE WHERE subject_pseudonym = {{p:String}}",
                       parameters=params, settings={"mutations_sync": 2})
    return n


def _land(in_flight: list[tuple[Batch, Future[None]]], written: Callable[[Batch], None]
          ) -> None:
    """Wait for the insert in flight; its batch is written once it returned."""
    while in_flight:
        batch, insert = in_flight.pop()
        insert.result()
        written(batch)


def _insert_settings(batch: Batch) -> dict[str, Any]:
    return {
        # A retried batch is the same batch: ClickHouse drops the second insert.
        "insert_deduplication_token": batch.token,
        # Collapsing equal event ids inside each inserted block more than doubled the
        # engine's insert time; ReplacingMergeTree still collapses them on merge, which is
        # all it ever promised (queries count uniqExact(event_id)).
        "optimize_on_insert": 0,
    }


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
