"""Benchmark the decision engine alone: one process, a realistic event mix.

``run()`` takes ``events`` seeded events of the traffic model (varied consent:
jurisdictions, ages, managed profiles, opt-outs, switched-off servers, some subjects with
no consent record) and times ``engine.decide`` over all of them (``events_per_s``), then
the columnar engine (``streams.batch_engine``) on the same events in the worker's batches
of 5,000, grouped by schema: deciding and building the output tables
(``columnar_events_per_s``, the same work as ``decide``), and that plus encoding every
output to framed Avro (``columnar_encode_events_per_s``; the row engine's counterpart with
``codec.encode`` is ``row_encode_events_per_s``); ``columnar_from_arrow_events_per_s``
decides the same batches handed over as Arrow tables (``decide_table``, what a native
decoder will give: no dict-to-Arrow conversion). Each run starts with empty pseudonym and
generalizer caches. ``events_per_s`` keeps all its decisions (to count outcomes), the
other runs drop theirs as they go, which alone makes them up to a third faster.
``main()`` prints progress and one JSON object on its last line.

On the shared 2-core machine times move with the load; instruction counts do not:

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/policy.cg \\
        python -m streams.bench_policy 20000 --callgrind=columnar

counts the second half of the events only (the first half warms the caches), for one of
``row``, ``row_encode``, ``columnar``, ``columnar_encode``, ``columnar_from_arrow``; divide
``callgrind_annotate``'s total by the ``measured_events`` it prints.
"""

from __future__ import annotations

import gc
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from streams import consent, engine, generalize, pseudonym
from streams.arrow_avro import encode_bodies, frame
from streams.batch_engine import ROUTED, decide_batch, decide_table
from streams.codec import default_codec
from streams.consent import SubjectHistory, SubjectState
from streams.policy import Policy, default_policy
from streams.traffic_model import TrafficConfig
from streams.traffic_stream import TrafficStream
from streams.worker import MAX_BATCH

__all__ = ["build_workload", "main", "run"]

BATCH = MAX_BATCH  # the worker's batches under load
Work = list[tuple[str, dict[str, Any], SubjectState | None, bytes]]

def build_workload(events: int, seed: int, subjects: int = 10_000) -> Work:
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
    _forget_caches()
    try:
        start, cpu_start = time.perf_counter(), time.process_time()
        decisions = [decide(s, r, st, k, policy) for s, r, st, k in work]
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        batches = _schema_batches(work)
        if progress:
            print("deciding in columns ...", file=sys.stderr, flush=True)
        row_encode, _ = _timed(lambda: _row_encode(work, policy))
        columnar, routed = _timed(lambda: _columnar(batches, policy, encode=False))
        columnar_encode, _ = _timed(lambda: _columnar(batches, policy, encode=True))
        tables = _as_tables(batches)
        from_arrow, _ = _timed(lambda: _columnar(tables, policy, encode=False))
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
        "row_encode_events_per_s": round(events / row_encode) if row_encode > 0 else None,
        "columnar_events_per_s": round(events / columnar) if columnar > 0 else None,
        "columnar_encode_events_per_s": (
            round(events / columnar_encode) if columnar_encode > 0 else None),
        "columnar_from_arrow_events_per_s": round(events / from_arrow) if from_arrow > 0 else None,
        "columnar_routed": routed,  # equals outcomes["routed"]
        "load_1m": round(os.getloadavg()[0], 2),
        "outputs": outputs,
        "outcomes": dict(sorted(outcomes.items())),
        "policy_version": policy.version,
    }


def _schema_batches(work: Work) -> list[tuple[str, list[Any], list[Any], list[Any]]]:
    """The work in batches of ``BATCH`` events, each split by input schema."""
    batches: list[tuple[str, list[Any], list[Any], list[Any]]] = []
    for i in range(0, len(work), BATCH):
        by_schema: dict[str, tuple[list[Any], list[Any], list[Any]]] = defaultdict(
            lambda: ([], [], []))
        for schema, record, state, key in work[i:i + BATCH]:
            records, states, keys = by_schema[schema]
            records.append(record)
            states.append(state)
            keys.append(key)
        batches.extend((schema, *columns) for schema, columns in by_schema.items())
    return batches


def _row_encode(work: Work, policy: Policy) -> int:
    """``engine.decide`` and ``codec.encode`` of every output, as the worker does today."""
    encode, outputs = default_codec().encode, 0
    for schema, record, state, key in work:
        decision = engine.decide(schema, record, state, key, policy)
        if isinstance(decision, engine.Routed):
            for out in decision.outputs:
                encode(policy.destinations[out.destination].output_schema, out.record)
                outputs += 1
    return outputs


def _as_tables(batches: list[tuple[str, Any, list[Any], list[Any]]]
               ) -> list[tuple[str, Any, list[Any], list[Any]]]:
    return [(schema, pa.Table.from_pylist(records), states, keys)
            for schema, records, states, keys in batches]


def _forget_caches() -> None:
    pseudonym.forget_cache()
    for func, _ in generalize.METHODS.values():
        getattr(func, "cache_clear", lambda: None)()


def _timed(work: Callable[[], int]) -> tuple[float, int]:
    _forget_caches()
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def _columnar(batches: list[tuple[str, Any, list[Any], list[Any]]], policy: Policy,
              encode: bool) -> int:
    """Decide (and encode) every batch in columns; returns the number of routed events."""
    catalog, routed = policy.catalog, 0
    for schema, records, states, keys in batches:
        if isinstance(records, pa.Table):
            outcome = decide_table(schema, records, states, keys, policy)
        else:
            outcome = decide_batch(schema, records, states, keys, policy)
        routed += int((outcome.kinds == ROUTED).sum())
        if encode:
            for table in outcome.tables:
                info = catalog.by_name(table.output_schema)
                frame(encode_bodies(table.table, info.raw), b"\x00" + info.id.to_bytes(4, "big"))
    return routed


def _callgrind(label: str, events: int, seed: int) -> dict[str, Any]:
    """Run one path over the second half of the events with callgrind counting."""
    policy = default_policy()
    work = build_workload(events, seed)
    half = len(work) // 2
    paths: dict[str, Callable[[Work], object]] = {
        "row": lambda w: [engine.decide(s, r, st, k, policy) for s, r, st, k in w],
        "row_encode": lambda w: _row_encode(w, policy),
        "columnar": lambda w: _columnar(_schema_batches(w), policy, encode=False),
        "columnar_encode": lambda w: _columnar(_schema_batches(w), policy, encode=True),
        "columnar_from_arrow": lambda w: _columnar(_as_tables(_schema_batches(w)), policy,
                                                   encode=False),
    }
    paths[label](work[:half])
    if label == "columnar_from_arrow":  # the conversion is the decoder's work: not counted
        tables = _as_tables(_schema_batches(work[half:]))
        paths[label] = lambda _: _columnar(tables, policy, encode=False)
    gc.collect()
    gc.freeze()
    measured = work[half:]
    subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True,
                   capture_output=True)
    paths[label](measured)
    subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], check=True,
                   capture_output=True)
    return {"benchmark": "policy_engine_callgrind", "path": label,
            "measured_events": len(measured)}


def main(argv: list[str] | None = None) -> int:
    """``python -m streams.bench_policy [events] [seed] [--callgrind=PATH]``; the last line
    is one JSON object."""
    args = sys.argv[1:] if argv is None else argv
    counted = [a.split("=", 1)[1] for a in args if a.startswith("--callgrind=")]
    args = [a for a in args if not a.startswith("--")]
    events = int(args[0]) if args else 200_000
    seed = int(args[1]) if len(args) > 1 else 0
    if counted:
        print(json.dumps(_callgrind(counted[0], events, seed), sort_keys=True))
        return 0
    result = run(events, seed, progress=True)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
