"""Entry points of the sink processes, wired into the CLI as ``sink clickhouse|training``.

Each sink is its own process and its own consumer group. The ClickHouse sink process
also serves the read-only query endpoint (``sinks.query``) because it owns the embedded
engine, and both serve ``/metrics``. SIGTERM and SIGINT stop them cleanly: pending rows
are flushed and committed first.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from sinks.base import BatchingSink, RetryPolicy
from sinks.clickhouse_client import connect
from sinks.clickhouse_sink import DEFAULT_DATABASE, ClickHouseSink
from sinks.query import QueryServer, endpoint_file, publish_endpoint
from sinks.runner import SinkRunner
from sinks.sink_policy import load_sink_policy
from sinks.training_sink import SCHEMA_NAME, TrainingSink
from streams import kafka_clients, metrics
from streams.avro_columns import decode_columns
from streams.settings import Settings

_LOG = logging.getLogger(__name__)


def group_id(settings: Settings, sink: str) -> str:
    """Each sink its own consumer group, namespaced like the topics."""
    return settings.consumer_group(f"sink.{sink}")


def _stop_on_signals(stop: threading.Event) -> None:
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())


def _run(settings: Settings, region: str, sink: BatchingSink, schemas: dict[str, str],
         stop_event: threading.Event | None, metrics_port: int | None, flush_rows: int,
         flush_seconds: float, retry: RetryPolicy | None, stack: ExitStack,
         flush_asked: threading.Event | None = None) -> SinkRunner:
    stop = stop_event or threading.Event()
    if stop_event is None:
        _stop_on_signals(stop)
    port = settings.metrics_port if metrics_port is None else metrics_port
    if port >= 0:
        stack.enter_context(metrics.serve_metrics(port))
    runner = SinkRunner(
        sink=sink, schemas=schemas, decode=decode_columns, region=region,
        consumer=kafka_clients.consumer(settings.kafka_bootstrap, group_id(settings, sink.name)),
        producer=kafka_clients.producer(settings.kafka_bootstrap),
        dead_letter_topic=settings.catalog.dead_letters.name, flush_rows=flush_rows,
        flush_seconds=flush_seconds, retry=retry, stop_event=stop, flush_asked=flush_asked)
    _LOG.info("%s sink consuming %s as group %s", sink.name, ", ".join(schemas),
              group_id(settings, sink.name))
    runner.run()
    return runner


def run_clickhouse_sink(settings: Settings, stop_event: threading.Event | None = None, *,
                        database: str = DEFAULT_DATABASE, query_port: int | None = None,
                        metrics_port: int | None = None,
                        client_factory: Callable[[], Any] | None = None,
                        flush_rows: int = 10_000, flush_seconds: float = 2.0,
                        retry: RetryPolicy | None = None) -> SinkRunner:
    """Run the ClickHouse sink until ``stop_event`` (or SIGTERM); returns the finished runner.

    ``query_port``: the read-only query endpoint (default ``settings.query_port``, 0 any, -1
    none); ``metrics_port``: /metrics (default ``settings.metrics_port``, -1 none).
    """
    policy = load_sink_policy(settings)
    factory = client_factory or (lambda: connect(settings.clickhouse_dsn))
    sink = ClickHouseSink(client_factory=factory, catalog=settings.catalog, policy=policy,
                          region=policy.region, database=database)
    catalog = settings.catalog
    schemas = {catalog.analytics.name: "AnalyticsEvent",
               catalog.aggregates.name: "AggregateCell"}
    with ExitStack() as stack:
        # Hook (issue 5): deletions' purge commands, carried out by the engine's owner.
        from sinks.purge import start_purge_consumer

        flush_asked = threading.Event()  # a purge waits for the rows consumed before it
        purge, purge_thread = start_purge_consumer(
            settings, sink.client, database=database,
            sink_group=group_id(settings, sink.name), flush_asked=flush_asked)
        stack.callback(purge_thread.join, 30)
        stack.callback(purge.stop_event.set)
        qport = settings.query_port if query_port is None else query_port
        if qport >= 0:
            server = QueryServer(sink.client, qport)
            stack.callback(server.close)
            publish_endpoint(settings, server.port)
            stack.callback(lambda: endpoint_file(settings).unlink(missing_ok=True))
        return _run(settings, policy.region, sink, schemas, stop_event, metrics_port, flush_rows,
                    flush_seconds, retry, stack, flush_asked)


def run_training_sink(settings: Settings, stop_event: threading.Event | None = None, *,
                      metrics_port: int | None = None, flush_rows: int = 10_000,
                      flush_seconds: float = 2.0,
                      retry: RetryPolicy | None = None) -> SinkRunner:
    """Run the ML-training Parquet sink (files under ``<home>/training``) until stopped."""
    policy = load_sink_policy(settings)
    sink = TrainingSink(settings.home / "training", allowed_regions=policy.allowed_regions)
    with ExitStack() as stack:
        return _run(settings, policy.region, sink, {settings.catalog.ml_training.name: SCHEMA_NAME},
                    stop_event, metrics_port, flush_rows, flush_seconds, retry, stack)
