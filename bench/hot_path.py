"""The worker's CPU cost per event, without Kafka: decode, decide, encode, account.

    python -m bench.hot_path [events]              # CPU events/s; last line one JSON object
    python -m bench.hot_path [events] --profile    # cProfile, top functions by own time
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/hot.cg \\
        python -m bench.hot_path 40000 --callgrind  # instructions of the measured half only
    ... --rows          # the row reference path (``process_rows``) instead of the columnar one
    ... --batch=5000    # another batch size than the worker's ``MAX_BATCH``

Traffic-model messages (1% bad) go through ``BatchProcessor`` in the worker's batches
(``worker.MAX_BATCH``, all of one partition) in steady state: every subject's key already
loaded (as after a partition assignment) and the first half of the events run first to
warm the pseudonym and generalizer caches; the second half is measured. On a shared
2-core machine wall and even CPU time vary by 2x with the load; callgrind's instruction
count does not, so compare changes with it
(``callgrind_annotate /tmp/hot.cg | head``; divide the total by the measured events).
"""

from __future__ import annotations

import cProfile
import gc
import json
import os
import pstats
import subprocess
import sys
import time
from typing import Any

from streams.codec import default_codec
from streams.key_vault import Keyring
from streams.ledger import Ledger
from streams.policy import default_policy
from streams.processor import BatchProcessor, BatchResult, SubjectStore
from streams.topics import Catalog
from streams.traffic_model import TrafficConfig
from streams.traffic_stream import TrafficStream
from streams.worker import MAX_BATCH

BATCH = MAX_BATCH


class _Message:
    """A consumed message as the processor reads it."""

    __slots__ = ("_key", "_offset", "_topic", "_value")

    def __init__(self, topic: str, key: bytes | None, value: bytes, offset: int) -> None:
        self._topic, self._key, self._value, self._offset = topic, key, value, offset

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> None:
        return None


def _setup(events: int) -> tuple[BatchProcessor, SubjectStore, list[Any]]:
    catalog, ring = Catalog(), Keyring(os.urandom(32), ())
    ledger = Ledger(ring)
    ledger.new_key_record()  # a ledger key exists, as after the first deletion
    processor = BatchProcessor(catalog, default_codec(), default_policy(), ledger,
                               os.urandom(32))
    store = SubjectStore(ring)
    stream = TrafficStream(TrafficConfig(seed=0, subjects=10_000, bad_fraction=0.01,
                                         request_rate=0.0))
    messages: list[_Message] = []
    while stream.events < events:
        for topic, key, value in stream.batch(min(BATCH, events - stream.events)):
            messages.append(_Message(topic, key, value, len(messages)))
    consent = [m for m in messages if m.topic() == catalog.consent.name]
    raw = [m for m in messages if m.topic() != catalog.consent.name]
    for m in raw:
        if m.key():
            store.keys.setdefault(m.key().decode(), os.urandom(32))  # type: ignore[union-attr]
    processor.apply_consent(consent, store, BatchResult())
    return processor, store, raw


def _process(processor: BatchProcessor, store: SubjectStore, messages: list[Any],
             rows: bool = False, batch: int = BATCH) -> None:
    process = processor.process_rows if rows else processor.process
    for i in range(0, len(messages), batch):
        process(messages[i:i + batch], store, BatchResult())


def _callgrind(switch: str) -> None:
    subprocess.run(["callgrind_control", "-i", switch, str(os.getpid())], check=True,
                   capture_output=True)


def main(argv: list[str]) -> int:
    events = int(argv[0]) if argv and argv[0].isdigit() else 100_000
    rows = "--rows" in argv
    batch = next((int(a.split("=")[1]) for a in argv if a.startswith("--batch=")), BATCH)
    processor, store, raw = _setup(events)
    warm, measured = raw[: len(raw) // 2], raw[len(raw) // 2:]
    _process(processor, store, warm, rows, batch)
    gc.collect()
    gc.freeze()  # the held messages are input a worker never keeps: keep GC off them
    if "--callgrind" in argv:
        _callgrind("on")
        _process(processor, store, measured, rows, batch)
        _callgrind("off")
        print(json.dumps({"benchmark": "hot_path", "measured_events": len(measured),
                          "path": "rows" if rows else "columnar", "batch": batch}))
        return 0
    if "--profile" in argv:
        profile = cProfile.Profile()
        profile.runcall(_process, processor, store, measured, rows, batch)
        pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    start, cpu = time.perf_counter(), time.process_time()
    _process(processor, store, measured, rows, batch)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"benchmark": "hot_path", "measured_events": len(measured),
                      "path": "rows" if rows else "columnar", "batch": batch,
                      "events_per_s": round(len(measured) / wall),
                      "events_per_cpu_s": round(len(measured) / cpu),
                      "load_1m": os.getloadavg()[0]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
