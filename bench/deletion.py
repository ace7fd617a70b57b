"""Deletion benchmark: request-to-receipt latency under load (``privacy-pipeline bench deletion``).

A worker and the ClickHouse sink (with its purge consumer) run as their own processes, as
in production (``privacy-pipeline worker``, ``privacy-pipeline sink clickhouse``); the
request service and a traffic generator at a steady rate run in this process; deletion requests for
subjects that have consent records and keys are filed in bursts on ``control.requests``
once the worker has worked off its start-up backlog (lag under a second of traffic, or
after two minutes; the lag then is reported as ``worker_lag_at_start``).
Latency is from a request's submission to its completed audit trail (the verified
receipt); ``steps_p50_s``/``steps_p99_s`` split it by audited step (the time before each
milestone of ``streams.subject_requests.DELETION_MILESTONES``). The last line printed is
one JSON object with ``p50_s`` and ``p99_s``.

A private local broker on free ports is started (and stopped afterwards) unless
``KAFKA_BOOTSTRAP_SERVERS`` is set; an embedded ClickHouse is opened in a temporary directory unless
``CLICKHOUSE_DSN`` names a server. Topics get a fresh prefix per run.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streams import kafka_clients, topic_admin
from streams.codec import default_codec
from streams.infra import bench_kafka, load_policy_for
from streams.settings import Settings
from streams.subject_requests import DELETION_MILESTONES, deletion_timeline
from streams.traffic import _topic_map
from streams.traffic_model import DAY_MS, TrafficConfig
from streams.traffic_stream import TrafficStream

log = logging.getLogger(__name__)


def _thread(name: str, target: Callable[[], Any], failures: list[BaseException]
            ) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported by the benchmark
            failures.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def _traffic(settings: Settings, stream: TrafficStream, rate: float,
             stop: threading.Event, sent: list[int]) -> None:
    producer = kafka_clients.producer(settings.kafka_bootstrap)
    topics = _topic_map(settings.catalog)
    start = time.monotonic()
    while not stop.is_set():
        due = start + (stream.events + 500) / rate
        if stop.wait(max(0.0, due - time.monotonic())):
            break
        for topic, key, value in stream.batch(500):
            if topic == "control.requests":
                continue  # the benchmark files its own requests
            try:
                producer.produce(topics[topic], value, key)
            except BufferError:
                producer.poll(0.1)
                producer.produce(topics[topic], value, key)
        producer.poll(0)
        sent[0] = stream.events
    producer.flush(30)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn(settings: Settings, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    """A pipeline process on the run's settings; returns it and its metrics port."""
    port = _free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap,
           "PRIVACY_PIPELINE_TOPIC_PREFIX": settings.topic_prefix,
           "PRIVACY_PIPELINE_HOME": str(settings.home),
           "CLICKHOUSE_DSN": settings.clickhouse_dsn,
           "PRIVACY_PIPELINE_MASTER_KEY": base64.b64encode(settings.master_key).decode(),
           "PRIVACY_PIPELINE_REGION": settings.region,
           "PRIVACY_PIPELINE_METRICS_PORT": str(port), "PRIVACY_PIPELINE_LOG_LEVEL": "WARNING"}
    if settings.policy_file is not None:
        env["PRIVACY_PIPELINE_POLICY_FILE"] = str(settings.policy_file)
    log_file = (settings.home / f"{args[0]}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", *args], env=env,
                            stdout=log_file, stderr=subprocess.STDOUT)
    return proc, port


def _ready(port: int) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 \
        else values[0]


def _per_step(timelines: list[dict[str, float]],
              stat: Callable[[list[float]], float]) -> dict[str, float]:
    """One statistic per audited step of the deletions (where their time went)."""
    return {name: round(stat(values), 3) for name, *_ in DELETION_MILESTONES
            if (values := sorted(t[name] for t in timelines if name in t))}


def bench_deletion(settings: Settings, *, requests: int = 100, subjects: int = 2_000,
                   rate: float = 500.0, burst: int = 10, burst_every_s: float = 0.5,
                   timeout: float = 300.0) -> dict[str, Any]:
    with bench_kafka(settings) as bootstrap:
        return _bench(dataclasses.replace(settings, bootstrap_servers=bootstrap),
                      requests=requests, subjects=subjects, rate=rate, burst=burst,
                      burst_every_s=burst_every_s, timeout=timeout)


def _bench(settings: Settings, *, requests: int, subjects: int, rate: float, burst: int,
           burst_every_s: float, timeout: float) -> dict[str, Any]:
    from sinks.clickhouse_client import is_embedded
    from sinks.query import endpoint_file
    from streams.request_service import RequestService

    tmp = tempfile.TemporaryDirectory(prefix="bench-deletion-")
    policy = load_policy_for(settings)
    run_settings = dataclasses.replace(
        settings, topic_prefix=f"bench-del-{uuid.uuid4().hex[:8]}.",
        region=settings.region or policy.processing_region,
        clickhouse_dsn=f"chdb://{Path(tmp.name) / 'clickhouse'}"
        if is_embedded(settings.clickhouse_dsn) else settings.clickhouse_dsn,
        home=Path(tmp.name))
    stop = threading.Event()
    failures: list[BaseException] = []
    threads: list[threading.Thread] = []
    service = None
    procs: list[subprocess.Popen[bytes]] = []
    try:
        topic_admin.apply(run_settings.kafka_bootstrap, run_settings.replication_factor,
                          run_settings.catalog)
        cat = run_settings.catalog
        config = TrafficConfig(seed=7, subjects=subjects, request_rate=0.0,
                               start_ms=int(time.time() * 1000) - DAY_MS)
        stream = TrafficStream(config)
        codec = default_codec()
        producer = kafka_clients.producer(run_settings.kafka_bootstrap)
        emails: dict[str, str] = {}
        for _, key, value in stream.initial_consents():
            producer.produce(cat.consent.name, value, key)
            consent = codec.decode(value)[1]
            if consent["email"] and (consent["age_band"] == "adult" or (
                    consent["birth_year"] or 9999) < 1990):
                emails[key.decode()] = consent["email"]  # adults: no C8 deletion races ours
        producer.flush(30)
        worker, worker_port = _spawn(run_settings, "worker")
        sink, _ = _spawn(run_settings, "sink", "clickhouse", "--query-port", "0")
        procs += [worker, sink]
        service = RequestService(run_settings, policy)
        sent = [0]
        threads.append(_thread("traffic", lambda: _traffic(run_settings, stream, rate, stop,
                                                           sent), failures))
        threads.append(_thread("requests", service.run, failures))
        deadline = time.monotonic() + 120
        while not (_ready(worker_port) and endpoint_file(run_settings).exists()
                   and service.ready.is_set()):
            if failures or any(p.poll() is not None for p in procs) or \
                    time.monotonic() > deadline:
                raise RuntimeError(f"pipeline not ready: {failures} (logs in {tmp.name})")
            time.sleep(0.2)  # polling readiness
        # Subjects with keys (they have events) and an e-mail to verify with.
        deadline = time.monotonic() + 60
        while len(service.directory.wrapped_keys.keys() & emails.keys()) < requests:
            if failures or time.monotonic() > deadline:
                raise RuntimeError(f"too few subjects with keys: {failures}")
            time.sleep(0.2)  # polling the key vault view
        # Steady state first: the worker's start-up backlog (every initial consent record)
        # is not what a deletion under load waits for.
        inputs = [t.name for t in cat.raw] + [cat.consent.name]
        group = run_settings.consumer_group("worker")
        deadline = time.monotonic() + 120
        while (lag := kafka_clients.group_lag(run_settings.kafka_bootstrap, group,
                                              inputs)) > rate and time.monotonic() < deadline:
            if failures:
                raise RuntimeError(f"pipeline failed: {failures}")
            time.sleep(0.5)  # polling the worker group's lag
        victims = sorted(service.directory.wrapped_keys.keys() & emails.keys())[:requests]
        index = {s.subject_id: i for i, s in enumerate(stream.population.subjects)}
        stream.deleted.update(index[v] for v in victims)  # no more consent changes for them
        submitted: dict[str, int] = {}
        for i in range(0, len(victims), burst):
            for subject in victims[i:i + burst]:
                rid = str(uuid.uuid4())
                now = int(time.time() * 1000)
                submitted[rid] = now
                producer.produce(cat.requests.name, codec.encode("SubjectRequest", {
                    "request_id": rid, "type": "delete", "subject_id": subject,
                    "requester_email": emails[subject], "agent_id": None,
                    "submitted_at": now, "correction": None}), subject.encode())
            producer.flush(30)
            time.sleep(burst_every_s)  # paced submission: requests arrive over time
        deadline = time.monotonic() + timeout
        while True:
            with service.directory.lock:
                st = {r: service.directory.statuses.get(r) for r in submitted}
            if all(s is not None and s.status != "open" for s in st.values()):
                break
            if failures or time.monotonic() > deadline:
                import faulthandler

                faulthandler.dump_traceback(all_threads=True)
                raise RuntimeError(f"deletions did not complete: {failures}")
            time.sleep(0.2)  # polling the audit-derived statuses
        latencies = sorted((s.completed_at - submitted[r]) / 1000 for r, s in st.items()
                           if s is not None and s.completed_at is not None)
        failed = sum(1 for s in st.values() if s is None or s.status != "done")
        linkable = sum(1 for s in st.values()
                       if s is not None and s.receipt and s.receipt.get("linkable"))
        for r, s in st.items():
            if s is None or s.status != "done":
                log.warning("request %s: %s %s; receipt %s", r, s and s.status,
                            s and s.reason, s and s.receipt)
        timelines = [deletion_timeline(s.steps, submitted[r]) for r, s in st.items()
                     if s is not None and s.status == "done"]
        return {"benchmark": "deletion", "requests": len(submitted), "failed": failed,
                "receipts_with_linkable_records": linkable,
                "p50_s": round(statistics.median(latencies), 3),
                "p99_s": round(_p99(latencies), 3), "max_s": round(latencies[-1], 3),
                "steps_p50_s": _per_step(timelines, statistics.median),
                "steps_p99_s": _per_step(timelines, _p99),
                "traffic_events": sent[0], "traffic_rate_per_s": rate, "subjects": subjects,
                "worker_lag_at_start": lag,
                "load_avg_1m": round(os.getloadavg()[0], 2)}
    finally:
        stop.set()
        if service is not None:
            service.stop()
        for t in threads:
            t.join(60)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        if service is not None:
            service.stop()
        for t in threads:
            t.join(60)
        if not failures:
            tmp.cleanup()


def main() -> None:
    import sys

    logging.basicConfig(level=logging.INFO)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    print(json.dumps(bench_deletion(Settings.from_env(), requests=n)))


if __name__ == "__main__":
    main()
