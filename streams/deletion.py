"""Deletion of a batch of subjects (C15, C8), as the request service carries it out.

In order, each step an ``AuditRecord`` per request:

1. ``ledger``: a deletion-ledger entry keyed by the subject's ledger ref (the ledger key is
   created by the first deletion). Every worker drops a ledgered subject's events.
2. ``tombstones``: the subject's pseudonyms are computed from its vault key first, then
   tombstones go to every subject-keyed compacted topic but the vault. The worker, on the
   consent tombstone, catches up with the ledger and forgets the subject; we wait until
   the worker group has committed past the consent tombstones (on the partitions they
   landed on), so every output of the subject's events is committed before the purge.
3. ``sink_purge``: a ``PurgeCommand`` (pseudonyms, no subject id) on ``privacy.purge`` for
   the ClickHouse sink process, which owns the engine, waits until it has consumed the
   analytics topic up to the command's offsets, deletes the rows physically and
   acknowledges on the audit topic.
4. ``key_shred``: the vault tombstone; cached pseudonyms are dropped from memory.
5. ``verify`` + ``receipt``: compacted topics re-read from the beginning and the sink
   table queried; the receipt (counts and methods, no identifiers) is audited.

Batches run concurrently and share what they wait on: one ``GroupProgress`` reads the
worker group's offsets for all of them, the sink carries out the purge commands it has
in hand at once, and receipts queued behind a running verification share the next one
(``Coalesced``: a verification always starts after the key shredding it reports on).
"""

from __future__ import annotations

import logging
import time
import uuid
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from streams import erasure, metrics
from streams.coalesce import Coalesced
from streams.errors import BrokerError
from streams.group_progress import GroupProgress
from streams.pseudonym import forget_cache, subject_pseudonym

if TYPE_CHECKING:
    from streams.request_service import RequestService

log = logging.getLogger(__name__)
BARRIER_TIMEOUT_S = 30.0


def now_ms() -> int:
    return int(time.time() * 1000)


class Deletions:
    """The deletion steps of one request service; ``run(batch)`` from any thread."""

    def __init__(self, service: RequestService, worker_group: str) -> None:
        self.service = service
        self.catalog = service.catalog
        settings = service.settings
        self.worker = GroupProgress(settings.kafka_bootstrap, worker_group,
                                    self.catalog.consent.name)
        self.verify: Coalesced[str, dict[str, str], dict[str, Any]] = Coalesced(
            lambda subjects: erasure.verify(settings, subjects, values=False,
                                            sinks=service.purge_sinks,
                                            database=service.sink_database))
        self._linkable = {name: d.pseudonym_domain
                          for name, d in service.policy.destinations.items()
                          if d.linkable and d.pseudonym_domain}

    def close(self) -> None:
        self.worker.close()

    def pseudonyms(self, subject: str, key: bytes) -> dict[str, str]:
        return {dest: subject_pseudonym(key, domain, subject)
                for dest, domain in self._linkable.items()}

    def run(self, requests: list[dict[str, Any]]) -> None:
        svc, cat, directory = self.service, self.catalog, self.service.directory
        started = now_ms()
        marks = {"start": time.monotonic()}
        # Before anything destroys a key: the pseudonyms step 3 purges.
        pseudos: dict[str, dict[str, str]] = {}
        for r in requests:
            key = directory.subject_key(r["subject_id"])
            pseudos[r["request_id"]] = self.pseudonyms(r["subject_id"], key) if key else {}
        self._ledger(requests)
        marks["ledger"] = time.monotonic()
        landed = self._tombstones(requests)
        marks["tombstones"] = time.monotonic()
        barrier = self._worker_barrier(landed)
        marks["worker_barrier"] = time.monotonic()
        if svc.purge_sinks:
            self._purge(requests, pseudos, barrier)
        marks["sink_purge"] = time.monotonic()
        # (4) key shredding
        for r in requests:
            svc.producer.produce(cat.key_vault.name, key=r["subject_id"].encode(), value=None)
        svc.flush()
        with directory.lock:
            for r in requests:
                directory.wrapped_keys.pop(r["subject_id"], None)
        forget_cache()
        for r in requests:
            svc.audit(r["request_id"], "delete", "key_shred", "done",
                      {"topic": cat.key_vault.name})
        svc.flush()
        marks["key_shred"] = time.monotonic()
        # (5) verify and receipt
        receipts = self.verify({r["subject_id"]: pseudos[r["request_id"]] for r in requests})
        for r in requests:
            receipt = receipts[r["subject_id"]]
            ok = erasure.passed(receipt)
            svc.audit(r["request_id"], "delete", "verify", "done" if ok else "failed",
                      "" if ok else f"{receipt['linkable']} linkable records remain")
            svc.audit(r["request_id"], "delete", "receipt", "done", receipt)
            if ok:
                svc.complete(r)
                metrics.DELETION_COMPLETION_SECONDS.observe(
                    max(0.0, (now_ms() - r["submitted_at"]) / 1000))
            else:
                metrics.REQUESTS.labels(type="delete", status="failed").inc()
            svc.finish_duplicates(r, ok)
        svc.flush()
        marks["verify"] = time.monotonic()
        log.info("deleted %d subjects in %.2fs (%s)", len(requests),
                 (now_ms() - started) / 1000,
                 ", ".join(f"{b}: {marks[b] - marks[a]:.2f}s" for a, b in pairwise(marks)))

    def _ledger(self, requests: list[dict[str, Any]]) -> None:
        svc, cat, directory = self.service, self.catalog, self.service.directory
        ledger = directory.ledger
        with directory.lock, svc.ledger_key_lock:
            if ledger.key is None:
                k, v = ledger.new_key_record()
                svc.producer.produce(cat.deletion_ledger.name, key=k, value=v)
        for r in requests:
            ref = ledger.ref(r["subject_id"])
            assert ref is not None
            c8 = r.get("agent_id") == "privacy-pipeline:C8"
            entry = {"subject_ref": ref, "request_id": r["request_id"],
                     "reason": "under_13" if c8 else "subject_request",
                     "clause": "C8" if c8 else "C15", "requested_at": r["submitted_at"],
                     "recorded_at": now_ms(), "processing_region": svc.region}
            svc.producer.produce(cat.deletion_ledger.name, key=ref.encode(),
                                 value=svc.codec.encode("DeletionLedgerEntry", entry))
        svc.flush()
        with directory.lock:
            ledger.refs.update(ledger.ref(r["subject_id"]) or "" for r in requests)
        for r in requests:
            svc.audit(r["request_id"], "delete", "ledger", "done", "")

    def _tombstones(self, requests: list[dict[str, Any]]) -> dict[int, int]:
        """Tombstones on every subject-keyed compacted topic but the vault (step 4);
        returns, per consent partition, the offset just past our last tombstone there."""
        svc, cat = self.service, self.catalog
        stateful = [t.name for t in cat.subject_keyed_compacted() if t != cat.key_vault]
        landed: dict[int, int] = {}
        failed: list[str] = []

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                failed.append(f"{msg.topic()}: {err.str()}")
            elif msg.topic() == cat.consent.name:
                landed[msg.partition()] = max(landed.get(msg.partition(), 0), msg.offset() + 1)

        for r in requests:
            for topic in stateful:
                svc.producer.produce(topic, key=r["subject_id"].encode(), value=None,
                                     on_delivery=delivered)
        svc.flush()  # returns once every delivery report above was served
        if failed:
            raise BrokerError(f"tombstones not written: {failed[:3]}")
        for r in requests:
            svc.audit(r["request_id"], "delete", "tombstones", "done", {"topics": stateful})
        return landed

    def _worker_barrier(self, landed: dict[int, int]) -> str:
        """Wait until the worker group committed past our consent tombstones."""
        if all(o < 0 for o in self.worker.committed().values()):
            return "no worker group has consumed consent yet"
        if self.worker.wait_past(landed, BARRIER_TIMEOUT_S):
            return "worker committed past the tombstones"
        log.warning("worker barrier: timed out after %.0fs", BARRIER_TIMEOUT_S)
        return "timed out waiting for the worker"

    def _purge(self, requests: list[dict[str, Any]], pseudos: dict[str, dict[str, str]],
               barrier: str) -> None:
        svc, cat = self.service, self.catalog
        # After the barrier: every output of the subjects' events is below these offsets.
        after = {f"{cat.analytics.name}:{p}": high
                 for p, high in svc.directory.highs(cat.analytics.name).items()}
        targets = [{"request_id": r["request_id"], "pseudonyms": pseudos[r["request_id"]]}
                   for r in requests]
        command = {"command_id": str(uuid.uuid4()), "requests": targets, "after_offsets": after,
                   "issued_at": now_ms(), "processing_region": svc.region}
        for r in requests:
            svc.audit(r["request_id"], "delete", "sink_purge", "started", {"barrier": barrier})
        svc.flush()  # "started" is on the audit topic before the sink can acknowledge
        svc.producer.produce(cat.purge.name, value=svc.codec.encode("PurgeCommand", command))
        svc.flush()
        ids = {r["request_id"] for r in requests}

        def acknowledged() -> bool:
            st = svc.directory.statuses
            return all(i in st and any(
                s["step"] == "sink_purge" and s["status"] in ("done", "failed")
                and s.get("actor", "").startswith("sink") for s in st[i].steps) for i in ids)

        if not svc.directory.wait_for(acknowledged, svc.purge_timeout):
            for r in requests:
                svc.audit(r["request_id"], "delete", "sink_purge", "failed",
                          f"no acknowledgement from the ClickHouse sink within "
                          f"{svc.purge_timeout:.0f}s")
