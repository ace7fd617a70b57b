"""The main job on the embedded default: the whole pipeline, fed, queried and summarised.

Starts what it needs (the local broker unless ``KAFKA_BOOTSTRAP_SERVERS`` is set; the
worker, both sinks and the request API as child processes; the embedded ClickHouse
lives in the ClickHouse sink), generates traffic for a bounded time, waits until every
stage has caught up, runs a deletion and an access request end to end, and prints what
happened. Everything it started is stopped on the way out, Ctrl-C included, unless
``keep_running`` asks to leave it up.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextlib import ExitStack
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from sinks.query import run_query
from streams import kafka_clients, topic_admin
from streams.errors import PipelineError
from streams.infra import local_kafka
from streams.processes import Supervisor
from streams.settings import Settings
from streams.traffic import generate
from streams.traffic_model import TrafficConfig

log = logging.getLogger(__name__)
DRAIN_TIMEOUT_S = 180.0

EXAMPLE_QUERIES = {
    "top plays per title, hour and region (k-anonymous)":
        "SELECT * FROM privacy_pipeline.plays_per_title_hour_region "
        "ORDER BY plays DESC LIMIT 5",
    "distinct pseudonymous viewers per platform and day (k-anonymous)":
        "SELECT * FROM privacy_pipeline.viewers_per_platform_day ORDER BY viewers DESC LIMIT 5",
}


def _say(message: str) -> None:
    print(f"[privacy-pipeline] {message}", file=sys.stderr, flush=True)


def _wait_drained(settings: Settings, supervisor: Supervisor) -> None:
    cat = settings.catalog
    stages = {
        settings.consumer_group("worker"): [t.name for t in cat.raw] + [cat.consent.name],
        settings.consumer_group("sink.clickhouse"): [cat.analytics.name],
        settings.consumer_group("sink.training"): [cat.ml_training.name],
    }
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        supervisor.check()
        lags = {g: kafka_clients.group_lag(settings.kafka_bootstrap, g, t)
                for g, t in stages.items()}
        if not any(lags.values()):
            return
        _say("catching up: " + ", ".join(f"{g.rsplit('.', 1)[-1]} {n:,}"
                                         for g, n in lags.items() if n))
        time.sleep(1.0)  # progress poll, bounded by the deadline
    raise PipelineError(f"the pipeline did not catch up within {DRAIN_TIMEOUT_S:.0f}s")


def _counters(text: str) -> dict[str, dict[str, int]]:
    """Counter totals by name and by their one interesting label (counts are whole)."""
    out: dict[str, dict[str, int]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            labels = sample.labels
            label = (labels.get("destination") or labels.get("topic") or labels.get("clause")
                     or labels.get("error_class") or "")
            if "reason" in labels:
                label = f"{labels['clause']} {labels['reason']}"
            bucket = out.setdefault(sample.name.removeprefix("privacy_pipeline_"), {})
            bucket[label] = bucket.get(label, 0) + int(sample.value)
    return out


def _requests_demo(api: str, config: TrafficConfig) -> dict[str, Any]:
    """One deletion and one access request for generated accounts, through the API."""
    from streams.request_client import submit
    from streams.traffic_stream import TrafficStream

    stream = TrafficStream(config)
    stream.initial_consents()  # the generated accounts' consent records, with their e-mail
    accounts = [(c["subject_id"], c["email"]) for c in stream.consents.values()]
    out: dict[str, Any] = {}
    for kind in ("delete", "access"):
        while accounts:
            subject, email = accounts.pop(0)
            _say(f"{kind} request for {subject} …")
            t0 = time.monotonic()
            code, body = submit(api, kind, subject, email, wait=120)
            if code == 202 and body.get("status") == "done":
                out[kind] = {"subject_id": subject, "status": body["status"],
                             "seconds": round(time.monotonic() - t0, 2),
                             "steps": [s.get("step") for s in body.get("steps", [])]}
                if kind == "delete":
                    out[kind]["receipt"] = body.get("receipt")
                else:
                    out[kind]["export_categories"] = sorted(
                        (body.get("export") or {}).get("categories", {}))
                break
            _say(f"{kind} for {subject} not completed ({code}: {body.get('status') or body}); "
                 "trying another account")
    return out


def run(settings: Settings, *, seconds: float, keep_running: bool, rate: float = 2_000.0,
        subjects: int = 2_000) -> dict[str, Any]:
    """Run the whole pipeline once and return the summary it prints."""
    with ExitStack() as stack:
        if settings.uses_local_kafka:
            broker = local_kafka(settings)
            started = broker.pid() is None
            t0 = time.monotonic()
            broker.start()
            _say(f"kafka ready at {broker.bootstrap} in {time.monotonic() - t0:.1f}s")
            if started and not keep_running:
                stack.callback(broker.stop)
        changes = topic_admin.apply(settings.kafka_bootstrap, settings.replication_factor,
                                    settings.catalog)
        _say(f"topics applied ({len(changes)} changes)")

        env = settings.child_env()
        supervisor = Supervisor(env, settings.home / "logs")
        if not keep_running:
            stack.callback(supervisor.stop)
        base = settings.metrics_port or 9464
        worker = supervisor.start("worker", "worker", metrics_port=base)
        supervisor.start("sink-clickhouse", "sink", "clickhouse", metrics_port=base + 1)
        supervisor.start("sink-training", "sink", "training", metrics_port=base + 2)
        api_port = base + 4
        supervisor.start("api", "api", metrics_port=base + 3,
                         PRIVACY_PIPELINE_API_PORT=str(api_port))
        _say("starting worker, sinks and request API …")
        supervisor.wait_ready()

        _say(f"generating traffic for {seconds:.0f}s at {rate:,.0f} events/s …")
        t0 = time.monotonic()
        # Event times start now: sink TTLs (C14) would expire rows of a past start at once.
        start_ms = int(time.time() * 1000)
        # The run files its own requests below, so the traffic carries none: every number
        # in the summary can then be checked against the topics and tables.
        config = TrafficConfig(seed=7, subjects=subjects, start_ms=start_ms,
                               event_gap_ms=max(1, round(1000 / rate)), request_rate=0.0)
        traffic = generate(settings, config, seconds=seconds, rate=rate)
        _wait_drained(settings, supervisor)
        elapsed = time.monotonic() - t0
        _say(f"{traffic['events']:,} events through the pipeline in {elapsed:.1f}s")

        rows_sql = ("SELECT count() AS rows, uniqExact(event_id) AS events "
                    "FROM privacy_pipeline.analytics_events")
        rows_before = run_query(settings, rows_sql)[0]
        requests = _requests_demo(f"http://127.0.0.1:{api_port}", config)
        counters = _counters(worker.scrape())
        queries = {title: run_query(settings, sql) for title, sql in EXAMPLE_QUERIES.items()}
        summary = {
            "events_generated": traffic["events"],
            "bad_records_generated": sum(traffic["bad"].values()),
            "events_in": counters.get("events_in_total", {}),
            "events_out": counters.get("events_out_total", {}),
            "drops": counters.get("drops_total", {}),
            "dead_letters": counters.get("dead_letters_total", {}),
            "throughput_events_per_s": round(traffic["events"] / elapsed, 1),
            "analytics_rows": rows_before,
            "analytics_rows_after_requests": run_query(settings, rows_sql)[0],
            "analyst_queries": queries,
            "requests": requests,
            "metrics": {c.name: c.metrics_url for c in supervisor.children},
            "logs": str(supervisor.log_dir),
        }
        if keep_running:
            _say("left running: " + json.dumps(summary["metrics"]) +
                 "; query with `privacy-pipeline query \"SQL\"`")
        return summary
    raise AssertionError("unreachable")  # pragma: no cover
