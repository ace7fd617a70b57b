"""A small client of the request API: file a request, follow it until it completes."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from streams.errors import PipelineError


def call(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of a GET, or of a POST when ``body`` is given."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except urllib.error.URLError as exc:
        raise PipelineError(f"the request API at {url} did not answer ({exc.reason}); "
                            "is `privacy-pipeline api` running?") from None


def submit(base: str, kind: str, subject: str, email: str, agent: str | None = None,
           wait: float = 60.0, correction: dict[str, str] | None = None
           ) -> tuple[int, dict[str, Any]]:
    """File a request; wait up to ``wait`` seconds for it to complete. Returns the status
    code of the filing and the request's last known state (with the export for access)."""
    code, body = call(f"{base}/privacy/requests", {
        "type": kind, "subject_id": subject, "requester_email": email, "agent_id": agent,
        **({"correction": correction} if correction else {})})
    if code != 202:
        return code, body
    rid = str(body["request_id"])
    deadline = time.monotonic() + wait
    while wait > 0:
        _, body = call(f"{base}/privacy/requests/{rid}")
        if body.get("status") not in (None, "open") or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # polling the request's status until it completes or the wait ends
    if kind == "access" and body.get("status") == "done":
        _, export = call(f"{base}/privacy/requests/{rid}/export")
        body = {**body, "export": export}
    return code, body
