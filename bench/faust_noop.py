"""Why the worker is not a faust-streaming agent: a no-op faust agent's throughput.

Decision record: docs/decisions.md (D1). Reproduce on the local broker:

    pip install faust-streaming cramjam
    privacy-pipeline kafka start
    python bench/faust_noop.py --events 200000          # produces, then consumes

Prints one JSON object on its last line: the no-op agent's events/s for plain
iteration (``stream.events()``) and batched (``stream.take_events``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid

AGENT = """
import os, time, faust
n, mode, topic = int(os.environ["N"]), os.environ["MODE"], os.environ["TOPIC"]
app = faust.App("noop-" + os.environ["RUN"] + mode, broker="kafka://" + os.environ["BOOT"],
                value_serializer="raw", key_serializer="raw", store="memory://",
                web_enabled=False, consumer_auto_offset_reset="earliest",
                topic_allow_declare=False)
src = app.topic(topic, value_serializer="raw", key_serializer="raw")
seen = {"n": 0, "t0": 0.0}

def done():
    dt = time.monotonic() - seen["t0"]
    os.write(1, f"RESULT {seen['n'] / dt:.0f}\\n".encode())
    os._exit(0)

@app.agent(src)
async def noop(stream):
    if mode == "events":
        async for _ in stream.events():
            seen["t0"] = seen["t0"] or time.monotonic()
            seen["n"] += 1
            if seen["n"] >= n:
                done()
    else:
        async for batch in stream.take_events(5000, within=0.1):
            seen["t0"] = seen["t0"] or time.monotonic()
            seen["n"] += len(batch)
            if seen["n"] >= n:
                done()

app.main()
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS",
                                                              "localhost:19092"))
    args = parser.parse_args()
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    run = uuid.uuid4().hex[:8]
    topic = f"bench-faust-{run}"
    AdminClient({"bootstrap.servers": args.bootstrap}).create_topics(
        [NewTopic(topic, 4, 1)])[topic].result()
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 20})
    for i in range(args.events):
        producer.produce(topic, key=b"subject-%d" % (i % 1000), value=b"x" * 200)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush()
    result = {}
    for mode in ("events", "take_events"):
        env = os.environ | {"N": str(args.events), "MODE": mode, "TOPIC": topic, "RUN": run,
                            "BOOT": args.bootstrap}
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-c", AGENT, "worker", "-l", "warn"], env=env,
                             capture_output=True, text=True, timeout=600)
        rate = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("RESULT")]
        result[f"faust_{mode}_per_s"] = float(rate[0]) if rate else None
        print(f"{mode}: {rate} ({time.monotonic() - t0:.0f}s)", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
