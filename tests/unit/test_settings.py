"""Settings: the only reader of the environment; secrets masked; bad values rejected."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.settings import VARIABLES, Settings, markdown_table

KEY = base64.b64encode(bytes(range(32))).decode()


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PRIVACY_PIPELINE_HOME": str(tmp_path), "PRIVACY_PIPELINE_MASTER_KEY": KEY, **extra}


def test_defaults_use_local_broker_and_embedded_clickhouse(tmp_path: Path) -> None:
    s = Settings.from_env(env(tmp_path))
    assert s.uses_local_kafka and s.kafka_bootstrap == "localhost:19092"
    assert s.clickhouse_dsn == f"chdb://{tmp_path / 'clickhouse'}"
    assert s.master_key == bytes(range(32))
    assert s.catalog.raw_playback.name == "raw.playback"


def test_secrets_are_masked_when_printed(tmp_path: Path) -> None:
    s = Settings.from_env(env(tmp_path, CLICKHOUSE_DSN="https://analyst:hunter2@ch.example:8443/db"))
    shown = repr(s) + str(s)
    assert "hunter2" not in shown and KEY not in shown and "******" in shown
    assert repr(bytes(range(32))) not in shown


def test_master_key_generated_once_with_owner_only_permissions(tmp_path: Path) -> None:
    first = Settings.from_env({"PRIVACY_PIPELINE_HOME": str(tmp_path)}).master_key
    second = Settings.from_env({"PRIVACY_PIPELINE_HOME": str(tmp_path)}).master_key
    assert first == second and len(first) == 32
    assert (tmp_path / "master.key").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(("name", "value", "message"), [
    ("CLICKHOUSE_DSN", "mysql://x", "scheme 'mysql'"),
    ("CLICKHOUSE_DSN", "chdb://", "data directory"),
    ("CLICKHOUSE_DSN", "http://host:notaport", "malformed port"),
    ("KAFKA_BOOTSTRAP_SERVERS", "broker-without-port", "not host:port"),
    ("KAFKA_BOOTSTRAP_SERVERS", "broker:http", "not a port number"),
    ("PRIVACY_PIPELINE_LOG_LEVEL", "LOUD", "not one of"),
    ("PRIVACY_PIPELINE_METRICS_PORT", "99999", "port number"),
    ("PRIVACY_PIPELINE_KAFKA_PORT", "0", "port number"),
    ("PRIVACY_PIPELINE_REPLICATION_FACTOR", "0", "at least 1"),
    ("PRIVACY_PIPELINE_MASTER_KEY", "not base64!", "not valid base64"),
    ("PRIVACY_PIPELINE_MASTER_KEY", base64.b64encode(b"short").decode(), "32 bytes"),
])
def test_bad_values_raise_one_clear_config_error(tmp_path: Path, name: str, value: str,
                                                 message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        Settings.from_env(env(tmp_path, **{name: value}))
    assert name.split("_")[-1].lower() in str(err.value).lower() or name in str(err.value)
    assert "\n" not in str(err.value)


def test_topic_prefix_namespaces_every_topic(tmp_path: Path) -> None:
    s = Settings.from_env(env(tmp_path, PRIVACY_PIPELINE_TOPIC_PREFIX="staging."))
    assert all(t.name.startswith("staging.") for t in s.catalog)


def test_readme_documents_every_variable() -> None:
    """The README's table is the generated one (``privacy-pipeline settings --markdown``)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = markdown_table()
    assert all(f"`{var.name}`" in table for var in VARIABLES)
    assert table in readme, "README table is stale: paste `privacy-pipeline settings --markdown`"
