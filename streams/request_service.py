"""The data-subject request service: carries out ``control.requests`` (C15, C8).

Requests are consumed in batches (group ``<prefix>privacy-pipeline.requests``), verified
(``streams.subject_requests.verify``) and carried out; every step is an ``AuditRecord``
on ``privacy.audit``, which is also where request status is rebuilt from on restart.
A request whose audit trail is already complete is skipped, so a crash re-runs only open
requests (every step is idempotent). Offsets are committed after the batch.

Deletions (``streams.deletion``) run as concurrent batches: each consumed batch of
deletion requests starts at once while fewer than ``MAX_IN_FLIGHT`` are under way (the
batches share their waits, so more in flight costs little); requests arriving when all
slots are busy gather into the next batch. A request for a subject whose deletion is
under way ends with that deletion. Offsets are committed up to the oldest unfinished batch.
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
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from streams import erasure, kafka_clients, metrics
from streams.codec import Codec, default_codec
from streams.deletion import Deletions
from streams.errors import BrokerError, SerializationError
from streams.key_vault import Keyring
from streams.policy import Policy
from streams.request_state import Directory
from streams.settings import Settings
from streams.subject_requests import (
    DELETION_STEPS,
    DONE,
    OPEN,
    BadRequest,
    corrected,
    opted_out,
    verify,
)

log = logging.getLogger(__name__)
PURGE_TIMEOUT_S = 60.0
MAX_BATCH = 500
MAX_IN_FLIGHT = 16  # deletion batches carried out at once


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
        self.sink_database = sink_database
        self.purge_sinks = purge_sinks
        self.purge_timeout = purge_timeout
        self.ready = threading.Event()
        self._stop = threading.Event()
        self.ledger_key_lock = threading.Lock()
        self.exports: dict[str, dict[str, Any]] = {}  # request id -> access export (memory)
        # Subjects being deleted -> later requests for them, which end with that deletion.
        self._deleting: dict[str, list[dict[str, Any]]] = {}
        self._deleting_lock = threading.Lock()
        self.deletions = Deletions(self, worker_group or settings.consumer_group("worker"))

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
                    done: Future[None] = pool.submit(self.deletions.run, waiting) if waiting \
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
            self.deletions.close()
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
            if st is not None and st.status != OPEN:
                continue  # already carried out (a restart re-reads committed requests)
            # Cut short by a restart: verified already (the subject's consent may be gone
            # now), and a deletion that began runs every step again (each is idempotent).
            steps = {(s["step"], s["status"]) for s in st.steps} if st is not None else set()
            begun = any(step in DELETION_STEPS for step, _ in steps)
            self.audit(request["request_id"], request["type"], "intake", "started",
                       {"submitted_at": request["submitted_at"],
                        "agent": request.get("agent_id") or ""})
            if ("verify_requester", "done") not in steps:
                try:
                    verify(request, self.directory.latest_consent(request["subject_id"]))
                except BadRequest as exc:
                    self.reject(request, exc)
                    continue
                self.audit(request["request_id"], request["type"], "verify_requester", "done",
                           "agent" if request.get("agent_id") else "account e-mail")
            kind = request["type"]
            if kind == "delete":
                if self._claim_deletion(request, begun):
                    deletes.append(request)
            elif kind == "access":
                self._access(request)
            else:
                self._change_consent(request)
        self.flush()
        return deletes

    def _claim_deletion(self, request: dict[str, Any], begun: bool) -> bool:
        """True: this request deletes its subject. Otherwise it ends with the deletion of
        the subject under way, or now if the subject is erased already (C8 raises one
        request per event of the subject: the first one does it)."""
        subject = request["subject_id"]
        with self._deleting_lock:
            if subject in self._deleting:
                self._deleting[subject].append(request)
                return False
            if begun or not self.directory.ledger.is_erased(subject):
                self._deleting[subject] = []
                return True
        self.complete(request, "already erased")
        return False

    def complete(self, request: dict[str, Any], detail: Any = "") -> None:
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
        self.complete(request)

    # -- access ------------------------------------------------------------------------

    def _access(self, request: dict[str, Any]) -> None:
        from streams.access_export import export

        subject = request["subject_id"]
        key = self.directory.subject_key(subject)
        pseudos = self.deletions.pseudonyms(subject, key) if key is not None else {}
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
        self.complete(request)

    # -- deletion (streams.deletion) --------------------------------------------------

    def finish_duplicates(self, request: dict[str, Any], ok: bool) -> None:
        """Requests for a subject whose deletion was under way end with that deletion."""
        with self._deleting_lock:
            duplicates = self._deleting.pop(request["subject_id"], [])
        for dup in duplicates:
            if ok:
                self.complete(dup, {"erased_by": request["request_id"]})
            else:
                self.audit(dup["request_id"], "delete", "verify", "failed",
                           f"the deletion of request {request['request_id']} failed")
                metrics.REQUESTS.labels(type="delete", status="failed").inc()


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
