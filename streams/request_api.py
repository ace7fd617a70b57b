"""The data-subject request HTTP API (``privacy-pipeline api``), served with aiohttp.

    POST /privacy/requests          JSON {type, subject_id, requester_email, agent_id?,
                                    correction?, request_id?} -> 202 {request_id, status_url}
    GET  /privacy/requests/{id}     -> status, steps with timestamps, receipt
    GET  /privacy/requests/{id}/export  -> the access export (access requests, this process)

A request is verified at intake (the account's e-mail or an authorized agent) so the
caller learns at once why it is refused; refusals are JSON ``{"error", "message",
"request_id"}`` with a 4xx status and an ``AuditRecord`` (step ``intake``, status
``rejected``). Accepted requests go to ``control.requests``, where the request service
(running in the same process) verifies them again and carries them out. Status comes
from the audit topic only, so it survives restarts.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

from aiohttp import web

from streams import metrics
from streams.request_service import RequestService
from streams.subject_requests import BadRequest, parse_api_request, verify

SERVICE: web.AppKey[RequestService] = web.AppKey("service", RequestService)


def _error(exc: BadRequest, request_id: str) -> web.Response:
    return web.json_response({"error": exc.reason, "message": str(exc),
                              "request_id": request_id}, status=exc.status)


async def submit(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    rejected_id = str(uuid.uuid4())
    body: Any = None
    try:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadRequest("malformed", "body is not valid JSON") from None
        record = parse_api_request(body, int(time.time() * 1000))
        directory = service.directory
        with directory.lock:
            duplicate = record["request_id"] in directory.statuses or \
                record["request_id"] in directory.request_subject
            open_same = [r for r in directory.subject_requests.get(record["subject_id"], [])
                         if (st := directory.statuses.get(r)) is not None
                         and st.status == "open" and st.type == record["type"]]
        if duplicate:
            raise BadRequest("duplicate", "a request with this request_id exists", 409)
        if open_same:
            raise BadRequest("duplicate", f"a {record['type']} request for this subject is "
                                          f"already open: {open_same[0]}", 409)
        verify(record, directory.latest_consent(record["subject_id"]))
    except BadRequest as exc:
        kind = body.get("type") if isinstance(body, dict) else None
        await asyncio.to_thread(_audit_rejection, service, rejected_id,
                                kind if isinstance(kind, str) else "unknown", exc)
        return _error(exc, rejected_id)
    await asyncio.to_thread(_accept, service, record)
    rid = record["request_id"]
    return web.json_response({"request_id": rid, "status": "open",
                              "status_url": f"/privacy/requests/{rid}"}, status=202)


def _audit_rejection(service: RequestService, request_id: str, kind: str,
                     exc: BadRequest) -> None:
    service.reject({"request_id": request_id, "type": kind}, exc)
    service.flush()


def _accept(service: RequestService, record: dict[str, Any]) -> None:
    cat = service.catalog
    with service.directory.lock:  # a second POST of the same id now counts as a duplicate
        service.directory.request_subject[record["request_id"]] = record["subject_id"]
        service.directory.subject_requests[record["subject_id"]].append(record["request_id"])
    service.producer.produce(cat.requests.name, key=record["subject_id"].encode(),
                             value=service.codec.encode("SubjectRequest", record))
    service.audit(record["request_id"], record["type"], "intake", "started",
                  {"submitted_at": record["submitted_at"], "via": "api"})
    service.flush()
    metrics.REQUESTS.labels(type=record["type"], status="accepted").inc()


async def status(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    rid = request.match_info["request_id"]
    with service.directory.lock:
        st = service.directory.statuses.get(rid)
        body = st.as_json() if st is not None else None
    if body is None:
        return web.json_response({"error": "not_found", "message": "no such request",
                                  "request_id": rid}, status=404)
    return web.json_response(body)


async def export(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    rid = request.match_info["request_id"]
    doc = service.exports.get(rid)
    if doc is None:
        return web.json_response({"error": "not_found", "message": "no export for this "
                                  "request in this process (exports are not stored; file a "
                                  "new access request)", "request_id": rid}, status=404)
    return web.json_response(doc, dumps=lambda o: json.dumps(o, default=str))


def make_app(service: RequestService) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[SERVICE] = service
    app.router.add_post("/privacy/requests", submit)
    app.router.add_get("/privacy/requests/{request_id}", status)
    app.router.add_get("/privacy/requests/{request_id}/export", export)
    return app


class ApiServer:
    """The request service on a thread plus the HTTP API on another; ``close()`` stops both."""

    def __init__(self, service: RequestService, port: int, host: str = "0.0.0.0") -> None:
        self.service = service
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run_service, name="request-service",
                                        daemon=True)
        self._thread.start()
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(make_app(service), access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, host, port)
        self._loop.run_until_complete(site.start())
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        self._http = threading.Thread(target=self._loop.run_forever, name="request-api",
                                      daemon=True)
        self._http.start()

    def _run_service(self) -> None:
        try:
            self.service.run()
        except BaseException as exc:  # surfaced by close() and the CLI
            self.failure = exc

    def close(self) -> None:
        self.service.stop()
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._http.join(10)
        self._thread.join(30)
        if self.failure is not None:
            raise self.failure
