"""Benchmark the decision engine alone: one process, a realistic event mix.

``run()`` takes ``events`` seeded events of the traffic model (varied consent:
jurisdictions, ages, managed profiles, opt-outs, switched-off servers, some subjects with
no consent record) and times ``engine.decide`` over all of them.
``main()`` prints progress and one JSON object on its last line.
"""

from __future__ import annotations

import gc
import json
import random
import sys
import time
from collections import Counter
from typing import Any

from streams import consent, engine
from streams.codec import default_codec
from streams.consent import SubjectHistory, SubjectState
from streams.policy import Policy, default_policy
from streams.traffic_model import TrafficConfig
from streams.traffic_stream import TrafficStream

__all__ = ["build_workload", "main", "run"]

def build_workload(events: int, seed: int, subjects: int = 10_000
                   ) -> list[tuple[str, dict[str, Any], SubjectState | None, bytes]]:
    """``events`` decoded input events of the traffic model (the same mix, population and
    consent as ``privacy-pipeline generate``), each with the consent state in force at its
    time and its subject's key: what the worker hands the engine."""
    stream = TrafficStream(TrafficConfig(seed=seed, subjects=subjects, bad_fraction=0.0,
                                         request_rate=0.0))
    codec = default_codec()
    histories: dict[str, SubjectHistory] = {}
    decoded: list[tuple[str, dict[str, Any]]] = []
    while stream.events < events:
        for topic, _key, value in stream.batch(min(5_000, events - stream.events)):
            schema, record = codec.decode(value)
            if topic == "control.consent":
                sid = record["subject_id"]
                histories[sid] = consent.apply(histories.get(sid), record)
            else:
                decoded.append((schema, record))
    rng = random.Random(seed)
    keys: dict[str, bytes] = {}
    work = []
    for schema, record in decoded[:events]:
        sid = record["subject_id"]
        key = keys.get(sid) or keys.setdefault(sid, rng.randbytes(32))
        history = histories.get(sid)
        state = history.at(record["event_time"]) if history is not None else None
        work.append((schema, record, state, key))
    return work


def run(
    events: int = 200_000, seed: int = 0, policy: Policy | None = None, progress: bool = False
) -> dict[str, Any]:
    """Time ``engine.decide`` over ``events`` events; returns ``events_per_s`` and counts."""
    policy = policy or default_policy()
    if progress:
        print(f"building {events} events (seed {seed}) ...", file=sys.stderr, flush=True)
    work = build_workload(events, seed)
    decide = engine.decide
    if progress:
        print("deciding ...", file=sys.stderr, flush=True)
    outcomes: Counter[str] = Counter()
    outputs = 0
    # The workload is input data a streaming worker would never hold all at once: keep
    # the cyclic GC from rescanning it on every collection while the engine runs.
    gc.collect()
    gc.freeze()
    try:
        start, cpu_start = time.perf_counter(), time.process_time()
        decisions = [decide(s, r, st, k, policy) for s, r, st, k in work]
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    finally:
        gc.unfreeze()
    for d in decisions:
        if isinstance(d, engine.Routed):
            outcomes["routed"] += 1
            outputs += len(d.outputs)
        elif isinstance(d, engine.Dropped):
            outcomes[f"dropped:{d.reason}"] += 1
        else:
            outcomes["delete_subject"] += 1
    return {
        "benchmark": "policy_engine",
        "events": events,
        "seed": seed,
        "seconds": round(elapsed, 4),
        "cpu_seconds": round(cpu, 4),  # below "seconds" when other processes share the CPU
        "events_per_s": round(events / elapsed) if elapsed > 0 else None,
        "outputs": outputs,
        "outcomes": dict(sorted(outcomes.items())),
        "policy_version": policy.version,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m streams.bench_policy [events] [seed]``; last line is one JSON object."""
    args = sys.argv[1:] if argv is None else argv
    events = int(args[0]) if args else 200_000
    seed = int(args[1]) if len(args) > 1 else 0
    result = run(events, seed, progress=True)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
