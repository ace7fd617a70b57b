"""Every Prometheus metric the pipeline exports, declared once.

All metrics live in the module-level ``REGISTRY`` (not prometheus-client's global default),
so tests can read exact values and a second import path can never register a duplicate.
Processes import the objects below and call ``.labels(...).inc()`` / ``.observe()`` /
``.set()``; nothing else in the code base creates a metric.

Label values are bounded, operator-facing names: topics, destinations, clause ids, error
class names, sink and table names, request types and statuses. A subject id, e-mail, IP
address or any other personal data never becomes a label: it would leak into Prometheus,
which has no deletion path, and explode cardinality. ``tests/unit/test_metrics.py`` guards
the label names.

Each process serves ``/metrics`` (exposition), ``/healthz`` (liveness) and ``/ready``
(readiness) with ``serve_metrics``; the Helm chart probes exactly these paths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from threading import Thread
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    make_wsgi_app,
)

from streams import __version__

if TYPE_CHECKING:
    from aiohttp import web

PREFIX = "privacy_pipeline_"
METRICS_PATH = "/metrics"
LIVENESS_PATH = "/healthz"
READINESS_PATH = "/ready"

REGISTRY = CollectorRegistry(auto_describe=True)

# --- event flow -----------------------------------------------------------------------------
# In vs out (plus drops and dead letters) is the "nothing lost" balance: every consumed event
# ends delivered, dropped with a reason, or dead-lettered (design decision 5).
EVENTS_IN = Counter(
    "privacy_pipeline_events_in_total",
    "Events consumed from an input topic.",
    ["topic"],
    registry=REGISTRY,
)
EVENTS_OUT = Counter(
    "privacy_pipeline_events_out_total",
    "Events delivered to an output destination (one event may reach several).",
    ["destination"],
    registry=REGISTRY,
)
# clause is the policy clause id (C1..C21) that forced the drop, so on-call can answer
# "why is this dropped" without reading logs; reason is the decision's short name.
DROPS = Counter(
    "privacy_pipeline_drops_total",
    "Events dropped by a policy decision, by reason and policy clause.",
    ["reason", "clause"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "privacy_pipeline_dead_letters_total",
    "Events written to the dead-letter topic, by exception class name.",
    ["error_class"],
    registry=REGISTRY,
)

# --- batch processing -----------------------------------------------------------------------
# Batches are the unit of work (design decision 7); per-message metrics would cost more than
# the work they measure.
BATCH_SIZE = Histogram(
    "privacy_pipeline_batch_size",
    "Events per processed batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
    registry=REGISTRY,
)
PROCESSING_SECONDS = Histogram(
    "privacy_pipeline_processing_seconds",
    "Wall time to decode, decide, encode and produce one batch.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
# Event time to output ack: what downstream consumers actually experience, lag included.
END_TO_END_LATENCY_SECONDS = Histogram(
    "privacy_pipeline_end_to_end_latency_seconds",
    "Seconds from an event's own timestamp to the acknowledged write of its output.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)

# --- state ----------------------------------------------------------------------------------
CONSENT_TABLE_SUBJECTS = Gauge(
    "privacy_pipeline_consent_table_subjects",
    "Subjects with a consent record in this worker's consent table.",
    registry=REGISTRY,
)
# Falls when keys are shredded; a sudden drop to zero means the vault was not restored.
KEY_VAULT_KEYS = Gauge(
    "privacy_pipeline_key_vault_keys",
    "Wrapped per-subject keys held in this worker's key vault view.",
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "privacy_pipeline_consumer_lag",
    "Messages between the committed offset and the high watermark, per input partition.",
    ["topic", "partition"],
    registry=REGISTRY,
)

# --- sinks ----------------------------------------------------------------------------------
SINK_ROWS = Counter(
    "privacy_pipeline_sink_rows_total",
    "Rows durably written (flushed) by a sink.",
    ["sink", "table"],
    registry=REGISTRY,
)
SINK_INSERT_SECONDS = Histogram(
    "privacy_pipeline_sink_insert_seconds",
    "Wall time of one sink flush (insert of one batch).",
    ["sink"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
SINK_ERRORS = Counter(
    "privacy_pipeline_sink_errors_total",
    "Failed sink writes, by exception class name.",
    ["sink", "error_class"],
    registry=REGISTRY,
)
# A paused sink is not an error yet, but if it stays paused the input lag grows: alerting
# on it catches a stuck backend before the lag alert does.
SINK_PAUSED = Gauge(
    "privacy_pipeline_sink_paused",
    "1 while the sink is backpressured (consumption paused), else 0.",
    ["sink"],
    registry=REGISTRY,
)

# --- data-subject requests (C15) ------------------------------------------------------------
REQUESTS = Counter(
    "privacy_pipeline_requests_total",
    "Data-subject requests by type (deletion, access, correction, opt_out) and status.",
    ["type", "status"],
    registry=REGISTRY,
)
# Buckets reach 30 days: the statutory deadline; the internal SLO is 24 h (docs/operations.md).
DELETION_COMPLETION_SECONDS = Histogram(
    "privacy_pipeline_deletion_completion_seconds",
    "Seconds from a deletion request's receipt to its verified erasure receipt.",
    buckets=(60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400,
             30 * 86400),
    registry=REGISTRY,
)
# A gauge, not a histogram: an open request that never completes never gets observed, and
# that is exactly the one the DeletionRequestOverdue alert must see.
OLDEST_OPEN_REQUEST_AGE_SECONDS = Gauge(
    "privacy_pipeline_oldest_open_request_age_seconds",
    "Age of the oldest request not yet completed, per type; 0 when none is open.",
    ["type"],
    registry=REGISTRY,
)

# --- build ----------------------------------------------------------------------------------
# Constant 1 so dashboards can join on version during a rollout.
BUILD_INFO = Gauge(
    "privacy_pipeline_build_info",
    "Always 1; the version label names the running release.",
    ["version"],
    registry=REGISTRY,
)
BUILD_INFO.labels(version=__version__).set(1)


def metric_names() -> set[str]:
    """Names of every sample family in ``REGISTRY`` as Prometheus exposes them.

    Counters appear with ``_total``; histograms as the base name (the ``_bucket``, ``_sum``
    and ``_count`` series derive from it). Tests use this to check dashboard queries.
    """
    return {metric.name if metric.type != "counter" else metric.name + "_total"
            for metric in REGISTRY.collect()}


def metrics_text() -> bytes:
    """The current exposition of ``REGISTRY`` in the Prometheus text format."""
    return generate_latest(REGISTRY)


def metrics_response() -> web.Response:
    """An aiohttp response with the exposition, for a ``/metrics`` view on faust's web app."""
    from aiohttp import web  # lazy: only the faust worker has an aiohttp app to mount on

    return web.Response(body=metrics_text(), headers={"Content-Type": CONTENT_TYPE_LATEST})


# --- HTTP endpoint --------------------------------------------------------------------------
# A small WSGI app instead of prometheus_client.start_http_server: that one answers every
# path with the exposition, so it cannot give /ready its own meaning.

WSGIEnviron = dict[str, Any]
StartResponse = Callable[..., Any]


def _make_app(ready: Callable[[], bool]) -> Callable[[WSGIEnviron, StartResponse], Iterable[bytes]]:
    exposition = make_wsgi_app(REGISTRY)

    def app(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == METRICS_PATH:
            served: Iterable[bytes] = exposition(environ, start_response)
            return served
        if path == LIVENESS_PATH:
            status, body = "200 OK", b"ok\n"
        elif path == READINESS_PATH:
            ok = ready()
            status, body = ("200 OK", b"ready\n") if ok else ("503 Service Unavailable",
                                                                b"not ready\n")
        else:
            status, body = "404 Not Found", b"not found\n"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [body]

    return app


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    # A slow scraper must not block the probes; daemon threads never hold up process exit.
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # Probes and scrapes every few seconds would drown the process log.
        return


@dataclass
class MetricsServer:
    """A running metrics endpoint; ``close()`` stops it and frees the port."""

    server: WSGIServer
    thread: Thread

    @property
    def port(self) -> int:
        """The bound port (useful when ``serve_metrics`` was given port 0)."""
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _always_ready() -> bool:
    return True


def serve_metrics(
    port: int, host: str = "0.0.0.0", *, ready: Callable[[], bool] = _always_ready
) -> MetricsServer:
    """Serve ``/metrics``, ``/healthz`` and ``/ready`` on a background thread.

    ``ready`` is called on every ``/ready`` probe; the worker passes a check that it has
    joined its consumer group and restored its tables, so Kubernetes routes nothing to it
    (and a rollout waits) until then. Port 0 picks a free port (see ``MetricsServer.port``).
    """
    server = make_server(host, port, _make_app(ready), _ThreadingWSGIServer, _QuietHandler)
    thread = Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return MetricsServer(server=server, thread=thread)


__all__ = [
    "BATCH_SIZE",
    "BUILD_INFO",
    "CONSENT_TABLE_SUBJECTS",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "DELETION_COMPLETION_SECONDS",
    "DROPS",
    "END_TO_END_LATENCY_SECONDS",
    "EVENTS_IN",
    "EVENTS_OUT",
    "KEY_VAULT_KEYS",
    "LIVENESS_PATH",
    "METRICS_PATH",
    "OLDEST_OPEN_REQUEST_AGE_SECONDS",
    "PREFIX",
    "PROCESSING_SECONDS",
    "READINESS_PATH",
    "REGISTRY",
    "REQUESTS",
    "SINK_ERRORS",
    "SINK_INSERT_SECONDS",
    "SINK_PAUSED",
    "SINK_ROWS",
    "MetricsServer",
    "metric_names",
    "metrics_response",
    "metrics_text",
    "serve_metrics",
]
