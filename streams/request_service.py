"""The data-subject request service: carries out ``control.requests`` (C15, C8).

Requests are consumed in batches (group ``<prefix>privacy-pipeline.requests``), verified
(``streams.subject_requests.verify``) and carried out; every step is an ``AuditRecord``
on ``privacy.audit``, which is also where request status is rebuilt from on restart.
A request whose audit trail is already complete is skipped, so a crash re-runs only open
requests (every step is idempotent). Offsets are committed after the batch.

Deletion of a batch of subjects, in order:

1. ``ledger``: a deletion-ledger entry keyed by the subject's ledger ref (the ledger key is
   created by the first deletion). Every worker drops a ledgered subject's events.
2. ``tombstones``: the subject's pseudonyms are computed from its vault key first, then
   tombstones go to every subject-keyed compacted topic but the vault. The worker, on the
   consent tombstone, catches up with the ledger and forgets the subject; we wait until
   the worker group has committed past the tombstones, so every output of the subject's
   events is committed before the purge below.
3. ``sink_purge``: a ``PurgeCommand`` (pseudonyms, no subject id) on ``privacy.purge`` for
   the ClickHouse sink process, which owns the engine, waits until it has consumed the
   analytics topic up to the command's offsets, deletes the rows physically and
   acknowledges on the audit topic.
4. ``key_shred``: the vault tombstone; cached pseudonyms are dropped from memory.
5. ``verify`` + ``receipt``: compacted topics re-read from the beginning and the sink
   table queried; the receipt (counts and methods, no identifiers) is audited.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import pairwise
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from streams import erasure, kafka_clients, metrics
from streams.codec import Codec, default_codec
from streams.errors import BrokerError, SerializationError
from streams.key_vault import Keyring
from streams.policy import Policy
from streams.pseudonym import forget_cache, subject_pseudonym
from streams.request_state import Directory
from streams.settings import Settings
from streams.subject_requests import (
    DONE,
    OPEN,
    BadRequest,
    corrected,
    opted_out,
    verify,
)

log = logging.getLogger(__name__)
BARRIER_TIMEOUT_S = 30.0
PURGE_TIMEOUT_S = 60.0
MAX_BATCH = 500
MAX_IN_FLIGHT = 3  # deletion batches carried out at once


def _done_future() -> Future[None]:
    future: Future[None] = Future()
    future.set_result(None)
    return future


def now_ms() -> int:
    return int(time.time() * 1000)


class RequestService:
    """One request-service process: follows the state topics, carries out requests."""

    def __init__(self, settings: Settings, policy: Policy, *, codec: Codec | None = None,
                 worker_group: str | None = None, sink_database: str = "privacy_pipeline",
                 purge_sinks: bool = True, purge_timeout: float = PURGE_TIMEOUT_S) -> None:
        self.settings = settings
        self.catalog = settings.catalog
        self.policy = policy
        self.codec = codec or default_codec()
        self.region = policy.processing_region
        self.keyring = Keyring(settings.master_key, settings.previous_master_keys)
        self.directory = Directory(settings.kafka_bootstrap, self.catalog, self.codec,
                                   self.keyring)
        self.producer = kafka_clients.producer(settings.kafka_bootstrap, **{"linger.ms": 2})
        self.worker_group = worker_group or settings.consumer_group("worker")
        self.sink_database = sink_database
        self.purge_sinks = purge_sinks
        self.purge_timeout = purge_timeout
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._ledger_key_lock = threading.Lock()
        self.exports: dict[str, dict[str, Any]] = {}  # request id -> access export (memory)
        self._linkable = {name: d.pseudonym_domain for name, d in policy.destinations.items()
                          if d.linkable and d.pseudonym_domain}

    # -- audit -------------------------------------------------------------------------

    def audit(self, request_id: str | None, action: str, step: str, status: str,
              detail: Any = "", actor: str = "request-service") -> None:
        text = detail if isinstance(detail, str) else json.dumps(detail, separators=(",", ":"))
        record = {"audit_id": str(uuid.uuid4()), "request_id": request_id, "action": action,
                  "step": step, "status": status, "detail": text, "occurred_at": now_ms(),
                  "actor": actor, "processing_region": self.region}
        self.producer.produce(self.catalog.audit.name, key=(request_id or "").encode() or None,
                              value=self.codec.encode("AuditRecord", record))

    def flush(self) -> None:
        if self.producer.flush(30) > 0:
            raise BrokerError("request service: records not acknowledged by the broker")

    def reject(self, request: dict[str, Any], exc: BadRequest) -> None:
        self.audit(request.get("request_id"), request.get("type") or "unknown", "intake",
                   "rejected", f"{exc.reason}: {exc}")
        metrics.REQUESTS.labels(type=request.get("type") or "unknown", status="rejected").inc()

    # -- lifecycle ---------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Consume and carry out requests until ``stop()``.

        Deletion batches run concurrently (``MAX_IN_FLIGHT``), so requests arriving while a
        batch waits for the worker and the sink do not wait behind it; offsets are committed
        only up to the oldest batch not yet finished (a crash re-runs unfinished requests).
        """
        consumer = kafka_clients.consumer(
            self.settings.kafka_bootstrap, self.settings.consumer_group("requests"),
            **{"isolation.level": "read_committed", "fetch.wait.max.ms": 20})
        pool = ThreadPoolExecutor(MAX_IN_FLIGHT, thread_name_prefix="deletion")
        pending: deque[tuple[Future[None], list[TopicPartition]]] = deque()
        waiting: list[dict[str, Any]] = []  # verified deletions not yet dispatched
        ends: dict[tuple[str, int], int] = {}  # their offsets (and of requests done)
        try:
            self.directory.load()
            self.directory.follow()
            consumer.subscribe([self.catalog.requests.name])
            self.ready.set()
            while not self._stop.is_set():
                messages = consumer.consume(MAX_BATCH, timeout=0.05)
                good = [m for m in messages if m.error() is None]
                for m in messages:
                    err = m.error()
                    if err is not None and err.code() != KafkaError._PARTITION_EOF \
                            and not err.retriable():
                        raise BrokerError(f"request service: {err.str()}")
                if good:
                    self.directory.caught_up(self.catalog.consent.name, 5.0)
                    waiting += self.handle([m.value() for m in good])
                    for m in good:
                        ends[(m.topic() or "", m.partition() or 0)] = (m.offset() or 0) + 1
                # Requests gather while every slot is busy, then go as one batch: the fixed
                # cost of a batch (worker barrier, sink catch-up) is paid once for all.
                if ends and (not waiting or sum(not f.done() for f, _ in pending)
                             < MAX_IN_FLIGHT):
                    offsets = [TopicPartition(t, p, o) for (t, p), o in ends.items()]
                    done: Future[None] = pool.submit(self.delete, waiting) if waiting \
                        else _done_future()
                    pending.append((done, offsets))
                    waiting, ends = [], {}
                while pending and pending[0][0].done():
                    future, offsets = pending.popleft()
                    future.result()  # a failed deletion stops the service loudly
                    consumer.commit(offsets=offsets, asynchronous=False)
                self._tombstone_late()
                self._gauge_open()
        finally:
            self.ready.clear()
            pool.shutdown(wait=True, cancel_futures=True)
            consumer.close()
            self.directory.close()
            self.producer.flush(10)

    def _tombstone_late(self) -> None:
        """Consent written for a subject after its deletion is tombstoned too."""
        with self.directory.lock:
            late, self.directory.late = self.directory.late, set()
        if not late:
            return
        for subject in late:
            for topic in self.catalog.subject_keyed_compacted():
                self.producer.produce(topic.name, key=subject.encode(), value=None)
        self.audit(None, "delete", "late_tombstones", "done",
                   {"subjects": len(late), "reason": "consent written after deletion"})
        self.flush()

    def _gauge_open(self) -> None:
        oldest: dict[str, int] = {}
        with self.directory.lock:
            for st in self.directory.statuses.values():
                if st.status == OPEN and st.type:
                    oldest[st.type] = min(oldest.get(st.type, st.submitted_at), st.submitted_at)
        now = now_ms()
        for kind in ("delete", "access", "correct", "opt_out"):
            at = oldest.get(kind)
            metrics.OLDEST_OPEN_REQUEST_AGE_SECONDS.labels(type=kind).set(
                (now - at) / 1000 if at else 0)

    # -- one batch ---------------------------------------------------------------------

    def handle(self, values: Iterable[bytes | None]) -> list[dict[str, Any]]:
        """Verify a batch and carry out all but deletions, which are returned."""
        deletes: list[dict[str, Any]] = []
        for value in values:
            try:
                schema, request = self.codec.decode(value or b"")
                if schema != "SubjectRequest":
                    raise SerializationError(f"{schema} on the requests topic")
            except SerializationError as exc:
                self.audit(None, "unknown", "intake", "rejected", f"malformed: {exc}")
                continue
            with self.directory.lock:
                st = self.directory.statuses.get(request["request_id"])
                done = st is not None and st.status != OPEN
            if done:
                continue  # already carried out (a restart re-reads committed requests)
            self.audit(request["request_id"], request["type"], "intake", "started",
                       {"submitted_at": request["submitted_at"],
                        "agent": request.get("agent_id") or ""})
            try:
                verify(request, self.directory.latest_consent(request["subject_id"]))
            except BadRequest as exc:
                self.reject(request, exc)
                continue
            self.audit(request["request_id"], request["type"], "verify_requester", "done",
                       "agent" if request.get("agent_id") else "account e-mail")
            kind = request["type"]
            if kind == "delete" and (self.directory.ledger.is_erased(request["subject_id"])
                                     or any(d["subject_id"] == request["subject_id"]
                                            for d in deletes)):
                # C8 raises one request per event of the subject: the first one does it.
                self._complete(request, "already erased")
            elif kind == "delete":
                deletes.append(request)
            elif kind == "access":
                self._access(request)
            else:
                self._change_consent(request)
        self.flush()
        return deletes

    def _complete(self, request: dict[str, Any], detail: Any = "") -> None:
        self.audit(request["request_id"], request["type"], "complete", "done", detail)
        metrics.REQUESTS.labels(type=request["type"], status="done").inc()

    def _change_consent(self, request: dict[str, Any]) -> None:
        """Correction or opt-out: a new consent record on the compacted topic, effective now."""
        subject = request["subject_id"]
        consent = self.directory.latest_consent(subject)
        assert consent is not None  # verified above
        now = now_ms()
        if request["type"] == "opt_out":
            record = opted_out(consent, now)
            changed = ["targeted_ads"]
        else:
            record = corrected(consent, request.get("correction") or {}, now)
            changed = sorted(request.get("correction") or {})
        self.producer.produce(self.catalog.consent.name, key=subject.encode(),
                              value=self.codec.encode("ConsentRecord", record))
        self.audit(request["request_id"], request["type"], "consent_record", "done",
                   {"fields": changed, "effective_at": now})
        self._complete(request)

    # -- access ------------------------------------------------------------------------

    def _access(self, request: dict[str, Any]) -> None:
        from streams.access_export import export

        subject = request["subject_id"]
        key = self.directory.subject_key(subject)
        pseudos = self.pseudonyms(subject, key) if key is not None else {}
        with self.directory.lock:
            history = [dict(r) for r in self.directory.consents.get(subject, [])]
            request_ids = list(self.directory.subject_requests.get(subject, []))
            requests = [self.directory.statuses[r].as_json() for r in request_ids
                        if r in self.directory.statuses]
        rows: list[dict[str, Any]] = []
        note = ""
        if pseudos.get(erasure.SINK_DESTINATION) and self.purge_sinks:
            try:
                from sinks.query import run_query

                rows = run_query(self.settings, f"SELECT * FROM {self.sink_database}."
                                 f"{erasure.SINK_TABLE} WHERE subject_pseudonym = "
                                 f"'{pseudos[erasure.SINK_DESTINATION]}' LIMIT 100000")
            except Exception as exc:  # the export says what it could not reach
                note = f"sink unreachable: {type(exc).__name__}"
        self.exports[request["request_id"]] = export(subject, history, rows, requests,
                                                     self.codec.catalog, note=note)
        self.audit(request["request_id"], "access", "export", "done",
                   {"consent_records": len(history), "sink_rows": len(rows),
                    "requests": len(requests)})
        self._complete(request)

    # -- deletion ----------------------------------------------------------------------

    def pseudonyms(self, subject: str, key: bytes) -> dict[str, str]:
        return {dest: subject_pseudonym(key, domain, subject)
                for dest, domain in self._linkable.items()}

    def delete(self, requests: list[dict[str, Any]]) -> None:
        cat = self.catalog
        started = now_ms()
        # Before anything destroys a key: the pseudonyms step 3 purges.
        pseudos: dict[str, dict[str, str]] = {}
        for r in requests:
            key = self.directory.subject_key(r["subject_id"])
            pseudos[r["request_id"]] = self.pseudonyms(r["subject_id"], key) if key else {}
        # (1) ledger
        ledger = self.directory.ledger
        with self.directory.lock, self._ledger_key_lock:
            if ledger.key is None:
                k, v = ledger.new_key_record()
                self.producer.produce(cat.deletion_ledger.name, key=k, value=v)
        for r in requests:
            ref = ledger.ref(r["subject_id"])
            assert ref is not None
            c8 = r.get("agent_id") == "privacy-pipeline:C8"
            entry = {"subject_ref": ref, "request_id": r["request_id"],
                     "reason": "under_13" if c8 else "subject_request",
                     "clause": "C8" if c8 else "C15", "requested_at": r["submitted_at"],
                     "recorded_at": now_ms(), "processing_region": self.region}
            self.producer.produce(cat.deletion_ledger.name, key=ref.encode(),
                                  value=self.codec.encode("DeletionLedgerEntry", entry))
        self.flush()
        with self.directory.lock:
            ledger.refs.update(ledger.ref(r["subject_id"]) or "" for r in requests)
        for r in requests:
            self.audit(r["request_id"], "delete", "ledger", "done", "")
        # (2) tombstones on every subject-keyed compacted topic but the vault (step 4)
        stateful = [t.name for t in cat.subject_keyed_compacted() if t != cat.key_vault]
        for r in requests:
            for topic in stateful:
                self.producer.produce(topic, key=r["subject_id"].encode(), value=None)
        self.flush()
        for r in requests:
            self.audit(r["request_id"], "delete", "tombstones", "done", {"topics": stateful})
        marks = {"tombstones": time.monotonic()}
        barrier = self._worker_barrier({r["subject_id"] for r in requests})
        marks["worker_barrier"] = time.monotonic()
        # (3) sink purge
        if self.purge_sinks:
            self._purge(requests, pseudos, barrier)
        marks["sink_purge"] = time.monotonic()
        # (4) key shredding
        for r in requests:
            self.producer.produce(cat.key_vault.name, key=r["subject_id"].encode(), value=None)
        self.flush()
        with self.directory.lock:
            for r in requests:
                self.directory.wrapped_keys.pop(r["subject_id"], None)
        forget_cache()
        for r in requests:
            self.audit(r["request_id"], "delete", "key_shred", "done",
                       {"topic": cat.key_vault.name})
        self.flush()
        marks["key_shred"] = time.monotonic()
        # (5) verify and receipt
        receipts = erasure.verify(self.settings, {r["subject_id"]: pseudos[r["request_id"]]
                                                  for r in requests},
                                  values=False, sinks=self.purge_sinks,
                                  database=self.sink_database)
        for r in requests:
            receipt = receipts[r["subject_id"]]
            ok = erasure.passed(receipt)
            self.audit(r["request_id"], "delete", "verify", "done" if ok else "failed",
                       "" if ok else f"{receipt['linkable']} linkable records remain")
            self.audit(r["request_id"], "delete", "receipt", "done", receipt)
            if ok:
                self._complete(r)
                metrics.DELETION_COMPLETION_SECONDS.observe(
                    max(0.0, (now_ms() - r["submitted_at"]) / 1000))
            else:
                metrics.REQUESTS.labels(type="delete", status="failed").inc()
        self.flush()
        marks["verify"] = time.monotonic()
        names = list(marks)
        log.info("deleted %d subjects in %.2fs (%s)", len(requests),
                 (now_ms() - started) / 1000,
                 ", ".join(f"{b}: {marks[b] - marks[a]:.2f}s" for a, b in pairwise(names)))

    def _worker_barrier(self, subjects: set[str]) -> str:
        """Wait until the worker group committed past our consent tombstones."""
        cat = self.catalog
        probe = kafka_clients.consumer(self.settings.kafka_bootstrap, self.worker_group)
        try:
            md = probe.list_topics(cat.consent.name, timeout=10)
            parts = [TopicPartition(cat.consent.name, p)
                     for p in md.topics[cat.consent.name].partitions]
            highs = {tp.partition: probe.get_watermark_offsets(tp, timeout=10)[1]
                     for tp in parts}
            deadline = time.monotonic() + BARRIER_TIMEOUT_S
            while True:
                committed = {tp.partition: tp.offset for tp in probe.committed(parts, timeout=10)}
                if all(o < 0 for o in committed.values()):
                    return "no worker group has consumed consent yet"
                if all(committed[p] >= h for p, h in highs.items()):
                    return "worker committed past the tombstones"
                if time.monotonic() > deadline:
                    log.warning("worker barrier: timed out after %.0fs", BARRIER_TIMEOUT_S)
                    return "timed out waiting for the worker"
                time.sleep(0.05)  # polling the broker's committed offsets
        finally:
            probe.close()

    def _purge(self, requests: list[dict[str, Any]], pseudos: dict[str, dict[str, str]],
               barrier: str) -> None:
        cat = self.catalog
        probe = kafka_clients.consumer(self.settings.kafka_bootstrap, f"purge-{uuid.uuid4().hex}")
        try:
            md = probe.list_topics(cat.analytics.name, timeout=10)
            after = {f"{cat.analytics.name}:{p}":
                     probe.get_watermark_offsets(TopicPartition(cat.analytics.name, p),
                                                 timeout=10)[1]
                     for p in md.topics[cat.analytics.name].partitions}
        finally:
            probe.close()
        targets = [{"request_id": r["request_id"], "pseudonyms": pseudos[r["request_id"]]}
                   for r in requests]
        command = {"command_id": str(uuid.uuid4()), "requests": targets, "after_offsets": after,
                   "issued_at": now_ms(), "processing_region": self.region}
        self.producer.produce(cat.purge.name, value=self.codec.encode("PurgeCommand", command))
        self.flush()
        for r in requests:
            self.audit(r["request_id"], "delete", "sink_purge", "started", {"barrier": barrier})
        self.flush()
        ids = {r["request_id"] for r in requests}

        def acknowledged() -> bool:
            st = self.directory.statuses
            return all(any(s["step"] == "sink_purge" and s["status"] in ("done", "failed")
                           and s.get("actor", "").startswith("sink")
                           for s in st[i].steps) for i in ids if i in st) and \
                all(i in st for i in ids)

        if not self.directory.wait_for(acknowledged, self.purge_timeout):
            for r in requests:
                self.audit(r["request_id"], "delete", "sink_purge", "failed",
                           f"no acknowledgement from the ClickHouse sink within "
                           f"{self.purge_timeout:.0f}s")


def run_service(settings: Settings, policy: Policy, stop_event: threading.Event | None = None,
                **kwargs: Any) -> RequestService:
    """Run the service on this thread until ``stop_event``; returns it when stopped."""
    service = RequestService(settings, policy, **kwargs)
    if stop_event is not None:
        def relay() -> None:
            stop_event.wait()
            service.stop()

        threading.Thread(target=relay, daemon=True).start()
    service.run()
    return service


__all__ = ["DONE", "RequestService", "run_service"]
