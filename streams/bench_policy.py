"""Benchmark the decision engine alone: one process, a realistic event mix.

``run()`` takes ``events`` seeded events of the traffic model (varied consent:
jurisdictions, ages, managed profiles, opt-outs, switched-off servers, some subjects with
no consent record), in the worker's batches (``worker.MAX_BATCH`` messages) split by
schema, as the decoder hands them over: Arrow tables, each row with its consent state at
its event time and its subject key, both factored as the worker's lookups hand them over
(``batch_inputs.Factored``). ``events_per_s`` is the engine the worker runs,
``batch_engine.decide_table``, deciding every batch and building every destination's
output table (the median of three runs); ``encode_events_per_s`` adds encoding each
output table to framed Avro (``arrow_avro``). The reference row engine runs the same
events one by one: ``row_events_per_s`` (``engine.decide``) and ``row_encode_events_per_s``
(plus ``codec.encode`` per output); its outcomes are the ``outcomes`` counts, and the batch
engine's routed count must equal theirs.

The batch runs are steady state: one untimed pass first compiles the native kernels and
resolves each subject state once (a worker's store keeps its subjects' states, and their
memo, from batch to batch). Generalizer caches are emptied before every run; the batch
engine keeps no pseudonym between calls. ``main()`` prints progress and one JSON object on
its last line.

On the shared 2-core machine times move with the load; instruction counts do not:

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/policy.cg \\
        python -m streams.bench_policy 40000 --callgrind=engine

counts the second half of the events only (the first half warms the caches), for one of
``row``, ``row_encode``, ``engine``, ``engine_encode``; divide ``callgrind_annotate``'s
total by the ``measured_events`` it prints. (Under valgrind OpenSSL cannot use the CPU's
SHA instructions, so the pseudonyms' SHA-256 counts several times its real share.)
"""

from __future__ import annotations

import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from streams import consent, engine, generalize, pseudonym
from streams.arrow_avro import encode_framed
from streams.batch_engine import ROUTED, decide_table
from streams.batch_inputs import Factored
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
    """Time the batch engine (and the row engine) over ``events`` events; see the module
    docstring."""
    policy = policy or default_policy()
    if progress:
        print(f"building {events} events (seed {seed}) ...", file=sys.stderr, flush=True)
    work = build_workload(events, seed)
    tables = _as_tables(_schema_batches(work))
    if progress:
        print("deciding ...", file=sys.stderr, flush=True)
    _columnar(tables, policy, encode=False)  # steady state: kernels compiled, states resolved
    # The workload is input data a streaming worker would never hold all at once: keep
    # the cyclic GC from rescanning it on every collection while the engine runs.
    gc.collect()
    gc.freeze()
    try:
        runs = [_timed(lambda: _columnar(tables, policy, encode=False)) for _ in range(3)]
        encode, _ = _timed(lambda: _columnar(tables, policy, encode=True))
        if progress:
            print("deciding row by row ...", file=sys.stderr, flush=True)
        row, decisions = _timed_rows(work, policy)
        row_encode, _ = _timed(lambda: _row_encode(work, policy))
    finally:
        gc.unfreeze()
    outcomes: Counter[str] = Counter()
    outputs = 0
    for d in decisions:
        if isinstance(d, engine.Routed):
            outcomes["routed"] += 1
            outputs += len(d.outputs)
        elif isinstance(d, engine.Dropped):
            outcomes[f"dropped:{d.reason}"] += 1
        else:
            outcomes["delete_subject"] += 1
    seconds = statistics.median(r[0] for r in runs)
    routed = {r[1] for r in runs}
    if routed != {outcomes["routed"]}:
        raise AssertionError(f"batch engine routed {routed}, row engine {outcomes['routed']}")
    return {
        "benchmark": "policy_engine",
        "events": events,
        "seed": seed,
        "batch": BATCH,
        "seconds": round(seconds, 4),
        "events_per_s": _rate(events, seconds),
        "runs_events_per_s": [_rate(events, r[0]) for r in runs],
        "encode_events_per_s": _rate(events, encode),
        "row_events_per_s": _rate(events, row),
        "row_encode_events_per_s": _rate(events, row_encode),
        "load_1m": round(os.getloadavg()[0], 2),
        "outputs": outputs,
        "outcomes": dict(sorted(outcomes.items())),
        "policy_version": policy.version,
    }


def _rate(events: int, seconds: float) -> int | None:
    return round(events / seconds) if seconds > 0 else None


def _timed_rows(work: Work, policy: Policy) -> tuple[float, list[Any]]:
    """``engine.decide`` over every event, keeping the decisions (to count outcomes)."""
    _forget_caches()
    decide = engine.decide
    start = time.perf_counter()
    decisions = [decide(s, r, st, k, policy) for s, r, st, k in work]
    return time.perf_counter() - start, decisions


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
               ) -> list[tuple[str, Any, Factored[Any], Factored[Any]]]:
    """Each batch as the worker hands it to the engine: an Arrow table, and the states and
    keys factored (each distinct one once, and per row its code; ``Factored``)."""
    return [(schema, pa.Table.from_pylist(records), _factored(states, id),
             _factored(keys, lambda key: key)) for schema, records, states, keys in batches]


def _factored(values: list[Any], identity: Callable[[Any], Any]) -> Factored[Any]:
    seen: dict[Any, int] = {}
    distinct: list[Any] = []
    codes = np.empty(len(values), np.int64)
    for i, value in enumerate(values):
        code = seen.setdefault(identity(value), len(distinct))
        if code == len(distinct):
            distinct.append(value)
        codes[i] = code
    return Factored(distinct, codes)


def _forget_caches() -> None:
    pseudonym.forget_cache()
    for func, _ in generalize.METHODS.values():
        getattr(func, "cache_clear", lambda: None)()


def _timed(work: Callable[[], int]) -> tuple[float, int]:
    _forget_caches()
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def _columnar(tables: list[tuple[str, pa.Table, Factored[Any], Factored[Any]]], policy: Policy,
              encode: bool) -> int:
    """Decide (and encode) every batch in columns; returns the number of routed events."""
    catalog, routed = policy.catalog, 0
    for schema, table, states, keys in tables:
        outcome = decide_table(schema, table, states, keys, policy)
        routed += int((outcome.kinds == ROUTED).sum())
        if encode:
            for out in outcome.tables:
                info = catalog.by_name(out.output_schema)
                encode_framed(out.table, info.raw, b"\x00" + info.id.to_bytes(4, "big"))
    return routed


def _callgrind(label: str, events: int, seed: int) -> dict[str, Any]:
    """Run one path over the second half of the events with callgrind counting."""
    policy = default_policy()
    work = build_workload(events, seed)
    half = len(work) // 2
    paths: dict[str, Callable[[Work], object]] = {
        "row": lambda w: [engine.decide(s, r, st, k, policy) for s, r, st, k in w],
        "row_encode": lambda w: _row_encode(w, policy),
        "engine": lambda w: _columnar(_as_tables(_schema_batches(w)), policy, encode=False),
        "engine_encode": lambda w: _columnar(_as_tables(_schema_batches(w)), policy,
                                             encode=True),
    }
    paths[label](work[:half])
    if label.startswith("engine"):  # the conversion is the decoder's work: not counted
        tables = _as_tables(_schema_batches(work[half:]))
        encode = label == "engine_encode"
        paths[label] = lambda _: _columnar(tables, policy, encode=encode)
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
