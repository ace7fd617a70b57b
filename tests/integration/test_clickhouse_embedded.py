"""The embedded ClickHouse engine (chDB through clickhouse-connect) keeps data on disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

WRITE = """
from sinks.clickhouse_client import connect
c = connect({dsn!r})
c.command("CREATE TABLE plays (event_id String, title String) ENGINE = MergeTree ORDER BY event_id")
c.insert("plays", [[f"e{{i}}", f"title-{{i % 7}}"] for i in range(1000)],
         column_names=["event_id", "title"])
"""
READ = """
from sinks.clickhouse_client import connect
c = connect({dsn!r})
print(c.query("SELECT count(), uniqExact(title) FROM plays").result_rows[0])
"""


def _python(code: str) -> str:
    root = Path(__file__).parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout.strip()


def test_rows_written_are_read_back_by_a_fresh_process(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'ch'}"
    _python(WRITE.format(dsn=dsn))
    assert _python(READ.format(dsn=dsn)) == "(1000, 7)"


def test_session_engine_isolates_tests_by_database(clickhouse: tuple) -> None:
    client, db = clickhouse
    client.command(f"CREATE TABLE {db}.t (a UInt32) ENGINE = MergeTree ORDER BY a")
    client.insert(f"{db}.t", [[i] for i in range(10)], column_names=["a"])
    assert client.query(f"SELECT sum(a) FROM {db}.t").result_rows == [(45,)]
