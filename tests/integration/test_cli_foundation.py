"""The command line: idempotent topic apply, and one clear error line for bad settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from streams.topics import Catalog

ROOT = Path(__file__).parents[2]


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CLICKHOUSE_"))}
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], cwd=ROOT,
                          env=full | env, capture_output=True, text=True, timeout=120)


def test_topics_apply_twice_changes_nothing_the_second_time(kafka_bootstrap: str, unique: str,
                                                            tmp_path: Path) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "PRIVACY_PIPELINE_HOME": str(tmp_path),
           "PRIVACY_PIPELINE_TOPIC_PREFIX": f"cli-{unique}."}
    first = cli("topics", "apply", **env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("create") == sum(1 for _ in Catalog())
    second = cli("topics", "apply", **env)
    assert second.returncode == 0 and second.stdout.strip() == "topics up to date: nothing changed"


def _one_line_error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines()
             if line.startswith("privacy-pipeline: error:")]
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_unreachable_bootstrap_is_one_clear_line(tmp_path: Path) -> None:
    _one_line_error(cli("topics", "apply", KAFKA_BOOTSTRAP_SERVERS="localhost:1",
                        PRIVACY_PIPELINE_HOME=str(tmp_path)), "no Kafka broker answers")


def test_malformed_dsn_is_one_clear_line(tmp_path: Path) -> None:
    _one_line_error(cli("settings", CLICKHOUSE_DSN="postgres://x",
                        PRIVACY_PIPELINE_HOME=str(tmp_path)), "CLICKHOUSE_DSN")


def test_unknown_variable_value_is_one_clear_line(tmp_path: Path) -> None:
    _one_line_error(cli("settings", PRIVACY_PIPELINE_LOG_LEVEL="CHATTY",
                        PRIVACY_PIPELINE_HOME=str(tmp_path)), "PRIVACY_PIPELINE_LOG_LEVEL")


def test_help_lists_commands_and_version_prints() -> None:
    out = cli("--help")
    assert out.returncode == 0
    for command in ("kafka", "topics", "run", "settings", "bench"):
        assert command in out.stdout
    assert cli("--version").stdout.startswith("privacy-pipeline ")
