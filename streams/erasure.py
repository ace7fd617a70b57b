"""Erasure verification: re-read every topic and sink table, say what still links.

For each subject the receipt lists, per system, the records found and how:

- subject-keyed compacted topics (consent, key vault, consent changelog): read from the
  beginning, committed records only; a *live value* under the subject id after its last
  tombstone is **linkable** (fails the receipt);
- sink tables holding pseudonyms (ClickHouse ``analytics_events``): rows carrying any of
  the subject's destination pseudonyms are **linkable**;
- every other topic (``values=True``): records whose value carries the subject id, or any of
  its pseudonyms, byte for byte. Pseudonyms on retention-bound output topics are
  **unlinkable** once the subject key is shredded (nobody can recompute or confirm them,
  design decision 3); the subject id in append-only input and request logs is
  **retained until expiry** by retention (``retention.ms``) and never re-emitted, because
  every worker drops a ledgered subject's events (C15). ``strict`` counts those too.

Receipts hold counts, methods and times, never the subject id or a pseudonym, so they
can go to the audit topic.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from streams import kafka_clients
from streams.settings import Settings
from streams.topics import Topic

ERASED, UNLINKABLE, RETAINED, LINKABLE = "erased", "unlinkable", "retained_until_expiry", \
    "linkable"
SINK_TABLE = "analytics_events"
SINK_DESTINATION = "analytics"  # the ClickHouse sink's input


def read_all(bootstrap: str, topics: list[str], timeout: float = 300.0) -> dict[str, list[Any]]:
    """Every committed record of ``topics`` from the beginning to their end as of now."""
    # A short fetch wait: the broker holds a fetch at a partition's end that long, and
    # the read is over once every partition reported its end.
    consumer = kafka_clients.consumer(bootstrap, f"verify-{uuid.uuid4().hex}", **{
        "isolation.level": "read_committed", "enable.partition.eof": True,
        "fetch.wait.max.ms": 10})
    out: dict[str, list[Any]] = {t: [] for t in topics}
    try:
        parts = []
        for topic in topics:
            md = consumer.list_topics(topic, timeout=10)
            parts += [TopicPartition(topic, p, 0) for p in md.topics[topic].partitions]
        ends = {(tp.topic, tp.partition): kafka_clients.watermarks(consumer, tp)
                for tp in parts}
        pending = {k for k, (low, high) in ends.items() if high > low}
        consumer.assign(parts)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            # consume() waits out its timeout unless the batch fills: keep it short.
            for msg in consumer.consume(10_000, timeout=0.05):
                err = msg.error()
                key = (str(msg.topic()), msg.partition() or 0)
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(key)
                    continue
                out[key[0]].append(msg)
                if (msg.offset() or 0) + 1 >= ends[key][1]:
                    pending.discard(key)
            for tp in consumer.position([TopicPartition(t, p) for t, p in pending]):
                if tp.offset >= ends[(tp.topic, tp.partition)][1]:
                    pending.discard((tp.topic, tp.partition))
        return out
    finally:
        consumer.close()


def needle_pattern(needles: Iterable[bytes]) -> re.Pattern[bytes]:
    """A regex finding any of ``needles``, the longest where several start at one place.

    Built as a trie (``acct-00(?:12|34)``): a flat alternation of a thousand subjects'
    ids and pseudonyms tries every one at every byte, hundreds of times slower.
    """
    trie: dict[int, Any] = {}
    for needle in filter(None, needles):  # an empty needle would match everywhere
        node = trie
        for byte in needle:
            node = node.setdefault(byte, {})
        node[-1] = {}  # a needle ends here

    def build(node: dict[int, Any]) -> bytes:
        branches = [re.escape(bytes([byte])) + build(child)
                    for byte, child in sorted(node.items()) if byte >= 0]
        if not branches:
            return b""
        body = branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"
        return b"(?:" + body + b")?" if -1 in node else body  # greedy: longer first

    return re.compile(build(trie))


def sink_rows(settings: Settings, pseudonyms: list[str], database: str) -> dict[str, int]:
    """Rows per pseudonym in the ClickHouse sink table (through the sink's query path)."""
    from sinks.query import run_query

    safe = [p for p in pseudonyms if re.fullmatch(r"[0-9a-f]{8,64}", p)]
    if not safe:
        return {}
    counts: dict[str, int] = {}
    for i in range(0, len(safe), 2_000):
        chunk = ", ".join(f"'{p}'" for p in safe[i:i + 2_000])
        rows = run_query(settings, f"SELECT subject_pseudonym AS p, count() AS n FROM "
                                   f"{database}.{SINK_TABLE} WHERE subject_pseudonym IN "
                                   f"({chunk}) GROUP BY subject_pseudonym")
        counts.update({str(r["p"]): int(r["n"]) for r in rows})
    return counts


def verify(settings: Settings, subjects: Mapping[str, Mapping[str, str]], *,
           values: bool = True, sinks: bool = True, database: str = "privacy_pipeline",
           key_shredded: bool = True) -> dict[str, dict[str, Any]]:
    """A receipt per subject id; ``subjects`` maps each to its pseudonyms by destination."""
    catalog = settings.catalog
    compacted = list(catalog.subject_keyed_compacted())
    compacted_names = {t.name for t in compacted}
    others: list[Topic] = [t for t in catalog if t.name not in compacted_names] if values else []
    started = time.time()
    wanted = {p: s for s, ps in subjects.items() for d, p in ps.items()
              if d == SINK_DESTINATION} if sinks else {}
    with ThreadPoolExecutor(1, thread_name_prefix="verify-sink") as pool:
        # The sink table is queried while the topics are read: neither waits on the other.
        sink_counts = pool.submit(sink_rows, settings, list(wanted), database) if sinks \
            else None
        records = read_all(settings.kafka_bootstrap, [t.name for t in compacted + others])
        counts = sink_counts.result() if sink_counts is not None else {}
    keys = {s.encode(): s for s in subjects}
    systems: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in subjects}
    for topic in compacted:
        live: dict[str, bool] = {}
        for msg in records[topic.name]:
            subject = keys.get(msg.key())
            if subject is not None:
                live[subject] = msg.value() is not None
        for s in subjects:
            n = int(live.get(s, False))
            systems[s][f"topic:{topic.name}"] = {
                "found": n, "status": LINKABLE if n else ERASED,
                "method": "from-beginning read, read_committed: live value under the subject "
                          "key after its last tombstone (compacted topic)"}
    if others:
        needles: dict[bytes, tuple[str, bool]] = {}
        for s, pseudos in subjects.items():
            needles[s.encode()] = (s, False)
            for p in pseudos.values():
                needles[p.encode()] = (s, True)
        pattern = needle_pattern(needles)
        for topic in others:
            found: dict[str, list[int]] = {s: [0, 0] for s in subjects}  # [by id, by pseudonym]
            for msg in records[topic.name]:
                hits = set(pattern.findall(msg.value() or b""))
                if topic.subject_keyed and msg.key() in keys:
                    hits.add(msg.key())
                for hit in hits:
                    s, pseudo = needles[hit]
                    found[s][1 if pseudo else 0] += 1
            for s, (by_id, by_pseudo) in found.items():
                if by_id:
                    status = RETAINED
                elif by_pseudo:
                    status = UNLINKABLE if key_shredded else LINKABLE
                else:
                    status = ERASED
                systems[s][f"topic:{topic.name}"] = {
                    "found": by_id + by_pseudo, "status": status,
                    "method": "from-beginning read, read_committed: values carrying the subject "
                              "id or one of its pseudonyms",
                    **({"expires_within_ms": topic.retention_ms} if status == RETAINED else {})}
    if sinks:
        for s, ps in subjects.items():
            sink_pseudo = ps.get(SINK_DESTINATION)
            n = counts.get(sink_pseudo, 0) if sink_pseudo else 0
            systems[s][f"clickhouse:{database}.{SINK_TABLE}"] = {
                "found": n, "status": LINKABLE if n else ERASED,
                "method": "SELECT count() WHERE subject_pseudonym = <analytics pseudonym>"
                if sink_pseudo else "no subject key held: never issued (no pseudonymized "
                                    "rows exist) or destroyed by an earlier run (rows left "
                                    "are unlinkable)"}
            systems[s]["training:parquet"] = {
                "found": 0, "status": ERASED,
                "method": "no subject link by design (C7): training rows carry no pseudonym"}
    finished = time.time()
    return {s: {"verified_at": int(finished * 1000),
                "seconds": round(finished - started, 3),
                "linkable": sum(v["found"] for v in sysmap.values()
                                if v["status"] == LINKABLE),
                "retained_until_expiry": sum(v["found"] for v in sysmap.values()
                                             if v["status"] == RETAINED),
                "systems": sysmap}
            for s, sysmap in systems.items()}


def passed(receipt: Mapping[str, Any], strict: bool = False) -> bool:
    return receipt["linkable"] == 0 and (not strict or receipt["retained_until_expiry"] == 0)
