"""Traffic generator benchmark; the last line is one JSON object with ``events_per_s``.

    python -m bench.traffic [events] [seed]            # onto a broker (issue 8: >= 100k/s)
    python -m bench.traffic [events] [seed] --model    # the stream alone: encode, no broker

The broker run is ``privacy-pipeline generate``'s code path (``produce_stream``) on fresh
prefixed topics of the broker named by ``KAFKA_BOOTSTRAP_SERVERS``, or of a private
local broker started for the run. ``events_per_s`` counts from the first event to the
broker's last acknowledgement; setting up the population is reported apart
(``setup_s``). ``cpu_us_per_event`` is the process's CPU time (every thread, librdkafka's
included) per event, which on a shared machine says more than the wall-clock rate;
``load_1m`` is the machine's load average when the run ended.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

from streams.traffic import BATCH
from streams.traffic_model import TrafficConfig
from streams.traffic_stream import TrafficStream, gc_paused


def model_only(events: int, seed: int) -> dict[str, object]:
    t0 = time.perf_counter()
    stream = TrafficStream(TrafficConfig(seed=seed))
    start, cpu = time.perf_counter(), time.process_time()
    messages = nbytes = 0
    with gc_paused():  # as produce_stream runs, in its batches
        while stream.events < events:
            _, _, values = stream.columns(min(BATCH, events - stream.events))
            messages += len(values)
            nbytes += sum(map(len, values))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"benchmark": "traffic_model", "events": stream.events, "messages": messages,
            "bytes": nbytes, "setup_s": round(start - t0, 3), "seconds": round(elapsed, 3),
            "events_per_s": round(stream.events / elapsed),
            "cpu_us_per_event": round(cpu / stream.events * 1e6, 2)}


def onto_broker(events: int, seed: int) -> dict[str, object]:
    from streams import topic_admin
    from streams.infra import bench_kafka
    from streams.settings import Settings
    from streams.topics import Catalog
    from streams.traffic import produce_stream

    with bench_kafka(Settings.from_env()) as bootstrap:
        catalog = Catalog.with_prefix(f"bench-{uuid.uuid4().hex[:6]}.")
        topic_admin.apply(bootstrap, 1, catalog)
        t0 = time.perf_counter()
        summary = produce_stream(bootstrap, catalog, TrafficConfig(seed=seed), events=events)
        total = time.perf_counter() - t0
    return {"benchmark": "traffic_kafka", **summary,
            "setup_s": round(total - summary["seconds"], 3),
            "cpu_us_per_event": round(summary["cpu_seconds"] / summary["events"] * 1e6, 2)}


def main(argv: list[str]) -> int:
    flags = {a for a in argv if a.startswith("--")}
    args = [a for a in argv if not a.startswith("--")]
    events = int(args[0]) if args else 1_000_000
    seed = int(args[1]) if len(args) > 1 else 0
    result = model_only(events, seed) if "--model" in flags else onto_broker(events, seed)
    print(json.dumps({**result, "load_1m": round(os.getloadavg()[0], 2)}, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
