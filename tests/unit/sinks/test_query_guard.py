"""``query`` accepts read-only statements only."""

from __future__ import annotations

import pytest

from sinks.errors import QueryRejected
from sinks.query import check_read_only


@pytest.mark.parametrize("sql", [
    "SELECT 1", "  select * from privacy_pipeline.plays_per_title_hour_region;",
    "WITH x AS (SELECT 1) SELECT * FROM x", "SHOW TABLES FROM privacy_pipeline",
    "DESCRIBE TABLE privacy_pipeline.analytics_events", "EXPLAIN SELECT 1",
    "-- comment\nSELECT 'DROP TABLE x; DELETE'", "(SELECT 1) UNION ALL (SELECT 2)",
])
def test_read_only_statements_pass(sql: str) -> None:
    assert check_read_only(sql)


@pytest.mark.parametrize("sql", [
    "", "DROP TABLE t", "INSERT INTO t VALUES (1)", "ALTER TABLE t DELETE WHERE 1",
    "SELECT 1; DROP TABLE t", "/* SELECT */ TRUNCATE t", "SELECT 1 INTO OUTFILE '/tmp/x'",
    "SELECT * FROM file('/etc/passwd')", "SELECT * FROM url('http://x', CSV)",
    "SELECT * FROM remote('h', db.t)", "OPTIMIZE TABLE t FINAL", "SET readonly = 0",
    "SYSTEM SHUTDOWN", "CREATE TABLE t (x Int8) ENGINE = Memory",
])
def test_anything_else_is_rejected(sql: str) -> None:
    with pytest.raises(QueryRejected):
        check_read_only(sql)
