"""``privacy-pipeline bench throughput``: the worker against a raw pass-through, side by side.

On one broker and the same generated events: (1) a confluent-kafka consume → produce
pass-through (batches of 5,000, flush, then commit: the same durability rule as the
worker), (2) the worker as its own process. Both first run three times over other
events, untimed, so neither is measured while the fresh broker's JIT compiles its hot
paths. Then ``rounds`` timed rounds, each on fresh topics, the pass-through right
before the worker: the figures reported are the median round's (by ratio), so a round
slowed by a noisy neighbour moves neither side alone. The worker's rate counts the
messages committed between its first and its last commit, so start-up is excluded; over
the same span the worker's CPU per message (all its threads) and how busy the machine
was are reported beside the pass-through's CPU per message, to say what limits the
ratio. In the last round, end-to-end latency at half the worker's maximum rate: raw
message timestamp to analytics output timestamp, matched by event id. Prints progress,
then ONE JSON object on the last line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from confluent_kafka import TopicPartition

from streams import kafka_clients, topic_admin
from streams.codec import default_codec
from streams.errors import ConfigError
from streams.infra import bench_kafka
from streams.settings import Settings
from streams.topics import Catalog, Topic
from streams.traffic import produce_stream
from streams.traffic_model import TrafficConfig


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _end_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = kafka_clients.consumer(bootstrap, f"ends-{uuid.uuid4().hex}")
    try:
        ends = {}
        for topic in topics:
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                ends[(topic, p)] = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                                  timeout=10)[1]
        return ends
    finally:
        consumer.close()


class _Cpu(NamedTuple):
    """CPU seconds so far: of some processes (all their threads), and of the machine."""

    processes: float
    machine_busy: float
    machine_total: float


def _cpu(pids: list[int]) -> _Cpu | None:
    """Linux's /proc counters now; None where there are none."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        own = sum(sum(int(v) for v in Path(f"/proc/{pid}/stat").read_text()
                      .rsplit(")", 1)[1].split()[11:13]) for pid in pids)
    except (OSError, ValueError):
        return None
    idle = ticks[3] + ticks[4]  # idle and waiting for I/O
    return _Cpu(own / tick, (sum(ticks) - idle) / tick, sum(ticks) / tick)


class _Drain(NamedTuple):
    first: float  # time of the first progress
    last: float  # time all was committed
    counted: int  # messages committed in between
    cpu: tuple[_Cpu, _Cpu] | None  # at those two times


def _wait_drained(bootstrap: str, group: str, topics: list[str], pids: Sequence[int] = (),
                  timeout: float = 900.0) -> _Drain:
    """How a consumer group drained its backlog, with the CPU of ``pids`` and of the
    machine over the same span. The first commit's batch is not counted: it was processed
    before the clock started. One client polls throughout: a new one each time took 9 ms
    of CPU."""
    reader = kafka_clients.lag_reader(bootstrap, group)
    try:
        initial = kafka_clients.lag(reader, topics)
        first, rest, at_first = None, 0, None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lag = kafka_clients.lag(reader, topics)
            now = time.monotonic()
            if lag < initial and first is None:
                first, rest, at_first = now, lag, _cpu(list(pids))
            if lag == 0:
                at_last = _cpu(list(pids))
                return _Drain(first or now, now, rest, (at_first, at_last)
                              if at_first is not None and at_last is not None else None)
            time.sleep(0.2)  # polling committed offsets, bounded by the deadline
        raise TimeoutError(f"group {group} did not drain within {timeout}s")
    finally:
        reader.close()


def _drain_rate(bootstrap: str, group: str, topics: list[str], option: str = "--events",
                pids: Sequence[int] = ()) -> tuple[float, dict[str, float]]:
    """Messages/s of a consumer group working through its backlog, and over that span
    the CPU of ``pids`` per message (µs) and how busy the machine was (``option``: the CLI
    option that sets the backlog, named if it is too small to time)."""
    drain = _wait_drained(bootstrap, group, topics, pids)
    span = drain.last - drain.first
    if span < 1.0:  # the lag is polled every 0.2 s: no rate in one glimpse
        raise ConfigError(f"bench throughput: group {group} committed its backlog within "
                          f"{span:.1f}s of its first commit, too fast to time; "
                          f"use a larger {option}")
    cpu: dict[str, float] = {}
    if drain.cpu is not None:
        start, end = drain.cpu
        cpu = {"cpu_us_per_msg": round((end.processes - start.processes)
                                       / drain.counted * 1e6, 1),
               "machine_busy": round((end.machine_busy - start.machine_busy)
                                     / max(end.machine_total - start.machine_total, 1e-9), 3)}
    return drain.counted / span, cpu


def passthrough(bootstrap: str, sources: list[str], sink: str, messages: int
                ) -> tuple[float, float]:
    """Messages/s of a plain consume → produce → flush → commit loop, and its CPU per
    message (µs, librdkafka's threads included)."""
    group = f"bench-passthrough-{uuid.uuid4().hex[:8]}"
    consumer = kafka_clients.consumer(bootstrap, group, **{"fetch.wait.max.ms": 50})
    producer = kafka_clients.producer(bootstrap, **{"linger.ms": 5})
    consumer.subscribe(sources)
    seen, first, cpu_first = 0, None, 0.0
    deadline = time.monotonic() + 900
    try:
        while seen < messages and time.monotonic() < deadline:
            batch = consumer.consume(5_000, timeout=0.2)
            if not batch:
                continue
            if first is None:
                first, cpu_first = time.monotonic(), time.process_time()
            for msg in batch:
                if msg.error() is None:
                    producer.produce(sink, msg.value(), msg.key())
                    seen += 1
            producer.flush(60)
            consumer.commit(asynchronous=False)
        return (seen / (time.monotonic() - (first or time.monotonic()) or 1e-9),
                (time.process_time() - cpu_first) / max(seen, 1) * 1e6)
    finally:
        consumer.close()


def _worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _latencies(bootstrap: str, catalog: Catalog, since: dict[tuple[str, int], int]
               ) -> list[float]:
    """Raw-message to analytics-output latency (ms) of events produced after ``since``."""
    codec = default_codec()
    sent: dict[str, int] = {}
    for (topic, part), start in since.items():
        for msg in _read_from(bootstrap, topic, part, start):
            try:
                sent[codec.decode(msg.value())[1]["event_id"]] = msg.timestamp()[1]
            except Exception:  # bad records carry no event id
                continue
    out = []
    for msg in _read_all(bootstrap, catalog.analytics):
        rec = codec.decode(msg.value())[1]
        if rec["event_id"] in sent:
            out.append(msg.timestamp()[1] - sent[rec["event_id"]])
    return sorted(out)


def _read_from(bootstrap: str, topic: str, part: int, start: int) -> list[Any]:
    consumer = kafka_clients.consumer(bootstrap, f"lat-{uuid.uuid4().hex}",
                                      **{"isolation.level": "read_committed"})
    end = consumer.get_watermark_offsets(TopicPartition(topic, part), timeout=10)[1]
    consumer.assign([TopicPartition(topic, part, start)])
    out: list[Any] = []
    try:
        while start + len(out) < end:
            batch = consumer.consume(10_000, timeout=1.0)
            if not batch:
                break
            out += [m for m in batch if m.error() is None]
        return out
    finally:
        consumer.close()


def _read_all(bootstrap: str, topic: Topic) -> list[Any]:
    parts = _end_offsets(bootstrap, [topic.name])
    out: list[Any] = []
    for (name, part), _ in parts.items():
        out += _read_from(bootstrap, name, part, 0)
    return out


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def _env(bootstrap: str, prefix: str, home: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items()} | {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "PRIVACY_PIPELINE_TOPIC_PREFIX": prefix,
        "PRIVACY_PIPELINE_HOME": home, "PRIVACY_PIPELINE_METRICS_PORT": "0",
        "PRIVACY_PIPELINE_LOG_LEVEL": "WARNING"}


def _topics(bootstrap: str, name: str) -> tuple[str, Catalog, Topic, list[str]]:
    """A fresh topic prefix: (prefix, its catalog, the pass-through's output, the inputs)."""
    prefix = f"{name}-{uuid.uuid4().hex[:6]}."
    catalog = Catalog.with_prefix(prefix)
    topic_admin.apply(bootstrap, 1, catalog)
    sink = Topic(f"{prefix}passthrough", "pass-through output")
    topic_admin.apply(bootstrap, 1, [sink])
    return prefix, catalog, sink, [t.name for t in catalog.raw] + [catalog.consent.name]


WARM_UP_ROUNDS = 3


class _Round(NamedTuple):
    messages: int
    worker: float  # msg/s
    passthrough: float  # msg/s
    worker_cpu: dict[str, float]
    passthrough_cpu: float  # µs a message

    @property
    def ratio(self) -> float:
        return self.worker / self.passthrough


# What to do while a round's workers are still up: (catalog, group, workers, their rate).
Then = Callable[[Catalog, str, list[subprocess.Popen[bytes]], float], None]


def _round(bootstrap: str, traffic: TrafficConfig, events: int, workers: int, home: str,
           name: str = "bench", option: str = "--events", then: Then | None = None
           ) -> _Round:
    """One round on fresh topics: the pass-through, then the worker, over the same
    events (``option``: the CLI option that sets ``events``)."""
    prefix, catalog, sink, inputs = _topics(bootstrap, name)
    produce_stream(bootstrap, catalog, traffic, events=events)
    messages = sum(_end_offsets(bootstrap, inputs).values())
    pt_rate, pt_cpu = passthrough(bootstrap, inputs, sink.name, messages)
    _say(f"  pass-through: {pt_rate:,.0f} msg/s, {pt_cpu:.1f} µs CPU a message")
    with tempfile.TemporaryDirectory(dir=home) as worker_home:
        procs = [_worker(_env(bootstrap, prefix, worker_home)) for _ in range(workers)]
        try:
            group = f"{prefix}privacy-pipeline.worker"
            rate, cpu = _drain_rate(bootstrap, group, inputs, option,
                                    pids=[p.pid for p in procs])
            _say(f"  workers: {rate:,.0f} msg/s, {cpu.get('cpu_us_per_msg')} µs CPU a "
                 f"message, machine {cpu.get('machine_busy')} busy; ratio {rate / pt_rate:.3f}")
            if then is not None:
                then(catalog, group, procs, rate)
        finally:
            for proc in procs:
                proc.terminate()
            errors = [(p.communicate(timeout=60)[1], p.returncode) for p in procs]
    for err, code in errors:
        if code not in (0, -15):
            raise RuntimeError(f"worker exited {code}: {err.decode()[-500:]}")
    return _Round(messages, rate, pt_rate, cpu, pt_cpu)


def _warm_up(bootstrap: str, events: int, home: str) -> list[float]:
    """Both paths over other events, untimed, ``WARM_UP_ROUNDS`` times; returns the
    worker's rate in each round. A fresh broker spends seconds of CPU compiling its hot
    paths (C2 JIT: 6.7, 3.7, then 1.0 s of CPU in three successive worker drains on the
    two cores here), and the pass-through and the worker exercise different ones
    (transactions, compression); a running cluster has compiled them long before."""
    rates: list[float] = []
    while len(rates) < WARM_UP_ROUNDS:
        _say(f"warm-up round {len(rates) + 1} of {WARM_UP_ROUNDS} …")
        rates.append(_round(bootstrap, TrafficConfig(seed=3 + len(rates), subjects=2_000),
                            events, 1, home, "warm", "--warm-up").worker)
    return rates


def run(settings: Settings, *, events: int = 200_000, latency_seconds: float = 15.0,
        workers: int = 1, warm_up: int = 100_000, rounds: int = 3) -> dict[str, Any]:
    with bench_kafka(settings) as bootstrap, tempfile.TemporaryDirectory() as home:
        warm_rates: list[float] = []
        if warm_up:
            _say(f"warming up the broker, {warm_up} events a round through both paths …")
            warm_rates = _warm_up(bootstrap, warm_up, home)
        latency: dict[str, Any] = {}

        def measure_latency(catalog: Catalog, group: str, procs: list[subprocess.Popen[bytes]],
                            rate: float) -> None:
            """The last round's workers at half their maximum rate."""
            target = rate / 2
            _say(f"  latency at {target:,.0f} events/s for {latency_seconds:.0f}s …")
            inputs = [t.name for t in catalog.raw]
            since = _end_offsets(bootstrap, inputs)
            produce_stream(bootstrap, catalog, TrafficConfig(seed=2, subjects=10_000),
                           seconds=latency_seconds, rate=target)
            _wait_drained(bootstrap, group, [*inputs, catalog.consent.name])
            latency.update(values=_latencies(bootstrap, catalog, since), target=target,
                           rss=max(_peak_rss_mb(p.pid) for p in procs))

        timed: list[_Round] = []
        for n in range(1, rounds + 1):
            _say(f"round {n} of {rounds}: {events} events, {workers} worker process(es) …")
            timed.append(_round(bootstrap, TrafficConfig(seed=1, subjects=10_000), events,
                                workers, home, then=measure_latency if n == rounds else None))
    mid = sorted(timed, key=lambda r: r.ratio)[len(timed) // 2]  # the median round
    values = latency["values"]
    return {"events": events, "messages": mid.messages, "rounds": rounds,
            "pipeline_events_per_s": round(mid.worker),
            "passthrough_events_per_s": round(mid.passthrough),
            "ratio": round(mid.ratio, 3),
            "round_ratios": [round(r.ratio, 3) for r in timed],
            "pipeline_cpu_us_per_msg": mid.worker_cpu.get("cpu_us_per_msg"),
            "passthrough_cpu_us_per_msg": round(mid.passthrough_cpu, 1),
            "machine_busy_during_pipeline": mid.worker_cpu.get("machine_busy"),
            "p50_ms": _pct(values, 0.5), "p99_ms": _pct(values, 0.99),
            "latency_samples": len(values),
            "latency_rate_events_per_s": round(latency["target"]),
            "rss_mb": round(latency["rss"], 1),
            "worker_processes": workers, "warm_up_events": warm_up,
            "warm_up_rates": [round(r) for r in warm_rates]}


def main(settings: Settings, events: int, workers: int, warm_up: int = 100_000,
         rounds: int = 3) -> None:
    print(json.dumps(run(settings, events=events, workers=workers, warm_up=warm_up,
                         rounds=rounds)))
