"""Read-only analyst SQL: ``privacy-pipeline query "SQL"``.

chDB allows one engine per process and one process per data directory, so while the
ClickHouse sink runs it owns the embedded engine. The sink process therefore serves a
small read-only HTTP endpoint (``QueryServer``, loopback only) and records its port in
``<home>/clickhouse-query.json``; ``run_query`` sends the SQL there when that process is
alive, otherwise it opens the engine itself. Against an http(s) DSN it asks the server.

Only SELECT / WITH / SHOW / DESCRIBE / EXPLAIN / EXISTS are accepted, one statement, no
``INTO OUTFILE`` and no table functions that reach files, hosts or programs.
"""

from __future__ import annotations

import json
import os
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

from sinks.errors import QueryRejected
from streams.errors import ClickHouseError
from streams.settings import Settings

ENDPOINT_FILE = "clickhouse-query.json"
_READ_ONLY = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"}
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_STRINGS = re.compile(r"'(?:[^'\\]|\\.)*'")
_FORBIDDEN = re.compile(
    r"\bINTO\s+OUTFILE\b|\b(file|url|urlCluster|s3|s3Cluster|gcs|azureBlobStorage|hdfs|"
    r"remote|remoteSecure|cluster|mysql|postgresql|mongodb|redis|sqlite|odbc|jdbc|"
    r"executable|python|input)\s*\(", re.I)

Rows = list[dict[str, Any]]


def check_read_only(sql: str) -> str:
    """Return ``sql`` without a trailing ``;`` if it is one read-only statement, else raise."""
    code = _STRINGS.sub("''", _COMMENTS.sub(" ", sql)).strip().rstrip(";").strip()
    if not code:
        raise QueryRejected("empty query")
    if ";" in code:
        raise QueryRejected("one statement at a time")
    first = code.lstrip("(").split(None, 1)[0].upper()
    if first not in _READ_ONLY:
        raise QueryRejected(f"{first} refused: query is read-only "
                            f"({', '.join(sorted(_READ_ONLY))})")
    if _FORBIDDEN.search(code):
        raise QueryRejected("INTO OUTFILE and table functions reaching files, hosts or "
                            "programs are refused")
    return sql.strip().rstrip(";")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def execute(client: Any, sql: str) -> Rows:
    """Run one checked read-only statement; rows as dicts of JSON-friendly values."""
    result = client.query(check_read_only(sql))
    names = list(result.column_names)
    return [{n: _jsonable(v) for n, v in zip(names, row, strict=True)}
            for row in result.result_rows]


class QueryServer:
    """POST /query with the SQL as body -> JSON rows; 400 with {"error"} when refused."""

    def __init__(self, client_getter: Callable[[], Any], port: int = 0,
                 host: str = "127.0.0.1") -> None:
        getter = client_getter

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path != "/query":
                    self._reply(404, {"error": "not found"})
                    return
                size = int(self.headers.get("Content-Length") or 0)
                sql = self.rfile.read(size).decode("utf-8", "replace")
                try:
                    self._reply(200, {"rows": execute(getter(), sql)})
                except QueryRejected as exc:
                    self._reply(403, {"error": str(exc)})
                except Exception as exc:
                    self._reply(400, {"error": f"{type(exc).__name__}: {_first(exc)}"})

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="query-http",
                                       daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def endpoint_file(settings: Settings) -> Path:
    return settings.home / ENDPOINT_FILE


def publish_endpoint(settings: Settings, port: int) -> Path:
    path = endpoint_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "port": port,
                               "dsn_path": settings.clickhouse_dsn.split("://", 1)[-1]}))
    os.replace(tmp, path)
    return path


def _live_endpoint(settings: Settings) -> int | None:
    try:
        info = json.loads(endpoint_file(settings).read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    if info.get("dsn_path") != settings.clickhouse_dsn.split("://", 1)[-1]:
        return None
    return int(info["port"])


def run_query(settings: Settings, sql: str) -> Rows:
    """Run read-only analyst SQL against the configured ClickHouse; rows as dicts.

    Tables are named with their database (``privacy_pipeline.plays_per_title_hour_region``).
    """
    from sinks.clickhouse_client import connect, is_embedded

    check_read_only(sql)
    if is_embedded(settings.clickhouse_dsn):
        port = _live_endpoint(settings)
        if port is not None:
            return _remote(port, sql)
    return execute(connect(settings.clickhouse_dsn), sql)


def _remote(port: int, sql: str) -> Rows:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/query", data=sql.encode(),
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            rows: Rows = json.loads(resp.read())["rows"]
            return rows
    except urllib.error.HTTPError as exc:
        message = json.loads(exc.read() or b"{}").get("error", str(exc))
        if exc.code == 403:
            raise QueryRejected(message) from None
        raise ClickHouseError(f"query failed: {message}") from None
    except urllib.error.URLError as exc:
        raise ClickHouseError(f"the ClickHouse sink's query endpoint on port {port} did not "
                              f"answer: {exc.reason}") from None
