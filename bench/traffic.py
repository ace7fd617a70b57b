"""Traffic generator benchmark; the last line is one JSON object with ``events_per_s``.

    python -m bench.traffic [events] [seed]            # model only: encode, no broker
    KAFKA_BOOTSTRAP_SERVERS=host:port python -m bench.traffic 1000000 0 --kafka

``--kafka`` produces to the settings' broker and catalog (apply the topics first).
"""

from __future__ import annotations

import json
import sys
import time

from streams.traffic_model import TrafficConfig
from streams.traffic_stream import TrafficStream


def model_only(events: int, seed: int) -> dict[str, object]:
    stream = TrafficStream(TrafficConfig(seed=seed))
    start = time.perf_counter()
    messages = nbytes = 0
    while stream.events < events:
        batch = stream.batch(min(10_000, events - stream.events))
        messages += len(batch)
        nbytes += sum(len(v) for _, _, v in batch)
    elapsed = time.perf_counter() - start
    return {"benchmark": "traffic_model", "events": stream.events, "messages": messages,
            "bytes": nbytes, "seconds": round(elapsed, 3),
            "events_per_s": round(stream.events / elapsed)}


def main(argv: list[str]) -> int:
    flags = {a for a in argv if a.startswith("--")}
    args = [a for a in argv if not a.startswith("--")]
    events = int(args[0]) if args else 1_000_000
    seed = int(args[1]) if len(args) > 1 else 0
    if "--kafka" in flags:
        from streams.settings import Settings
        from streams.traffic import generate

        result = {"benchmark": "traffic_kafka",
                  **generate(Settings.from_env(), TrafficConfig(seed=seed), events=events)}
    else:
        result = model_only(events, seed)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
