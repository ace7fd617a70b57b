"""Settings: one frozen object built from the environment.

This module is the only reader of ``os.environ`` in the project. Every variable is
declared once in ``VARIABLES`` (name, default, meaning); the README's configuration
table is generated from the same list (``privacy-pipeline settings --markdown``).
Secrets are masked whenever the object is printed or logged.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from streams.errors import ConfigError
from streams.topics import Catalog

_MASK = "******"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class Variable(NamedTuple):
    name: str
    default: str
    meaning: str
    secret: bool = False


def _state_default() -> str:
    return "$XDG_STATE_HOME/privacy-pipeline (else ~/.local/state/privacy-pipeline)"


VARIABLES: tuple[Variable, ...] = (
    Variable("KAFKA_BOOTSTRAP_SERVERS", "",
             "Kafka bootstrap servers. Empty: use the local broker the project starts itself."),
    Variable("KAFKA_HOME", "",
             "An Apache Kafka install to run the local broker from; empty: resolve the jars "
             "from Maven Central."),
    Variable("PRIVACY_PIPELINE_KAFKA_VERSION", "3.9.1",
             "Apache Kafka version of the local broker when resolved with Maven."),
    Variable("PRIVACY_PIPELINE_KAFKA_PORT", "19092",
             "Client port of the local broker (its controller listens on the next port)."),
    Variable("PRIVACY_PIPELINE_HOME", _state_default(),
             "Where local broker data and logs, the embedded ClickHouse and training files live."),
    Variable("PRIVACY_PIPELINE_CACHE", "$XDG_CACHE_HOME/privacy-pipeline (else ~/.cache/…)",
             "Where downloaded Kafka jars are cached."),
    Variable("CLICKHOUSE_DSN", "chdb:///$PRIVACY_PIPELINE_HOME/clickhouse",
             "ClickHouse: chdb:///<dir> for the embedded engine, http(s)://user:pw@host:port/db "
             "for a server.", secret=True),
    Variable("PRIVACY_PIPELINE_MASTER_KEY", "generated once into $PRIVACY_PIPELINE_HOME",
             "Base64 of 32 random bytes wrapping every subject key (a Kubernetes Secret in "
             "production).", secret=True),
    Variable("PRIVACY_PIPELINE_PREVIOUS_MASTER_KEYS", "",
             "Comma-separated older master keys (base64), only to unwrap during a rotation.",
             secret=True),
    Variable("PRIVACY_PIPELINE_POLICY_FILE", "packaged schemas/policy.yaml",
             "The privacy policy file (destinations, consents, retention, k-threshold)."),
    Variable("PRIVACY_PIPELINE_REGION", "",
             "Processing region stamped on every output record and sink row (C12); empty: "
             "the policy file's processing.region. Must be one of its allowed_regions."),
    Variable("PRIVACY_PIPELINE_TOPIC_PREFIX", "",
             "Prefix for every topic name of the catalog (one namespace per environment)."),
    Variable("PRIVACY_PIPELINE_REPLICATION_FACTOR", "1",
             "Replication factor for every catalog topic (3 in production)."),
    Variable("PRIVACY_PIPELINE_METRICS_PORT", "9464",
             "Port of /metrics, /healthz and /ready on each process (0: any free port)."),
    Variable("PRIVACY_PIPELINE_API_PORT", "8080",
             "Port of the data-subject request API (0: any free port)."),
    Variable("PRIVACY_PIPELINE_QUERY_PORT", "8124",
             "Port (127.0.0.1) of the ClickHouse sink's read-only query endpoint, through "
             "which `privacy-pipeline query` reaches the embedded engine (0: any free port)."),
    Variable("PRIVACY_PIPELINE_LOG_LEVEL", "INFO", "One of DEBUG, INFO, WARNING, ERROR."),
)
_KNOWN = {v.name for v in VARIABLES}


def _port(name: str, raw: str, *, any_free: bool = False) -> int:
    """A port number; 0 (any free port) only where the process listens (``any_free``)."""
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a port number") from None
    if not (0 if any_free else 1) <= port < 65536:
        raise ConfigError(f"{name}={raw!r} is not a port number "
                          f"({0 if any_free else 1}-65535)")
    return port


def _positive(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < 1:
        raise ConfigError(f"{name}={raw!r} must be at least 1")
    return value


def check_clickhouse_dsn(dsn: str) -> str:
    """Return ``dsn`` if it names an embedded engine or a server, else raise ConfigError."""
    parts = urlsplit(dsn)
    if parts.scheme == "chdb":
        if not parts.path or parts.path == "/":
            raise ConfigError(f"CLICKHOUSE_DSN {dsn!r}: chdb needs a data directory, "
                              "e.g. chdb:///var/lib/privacy-pipeline/clickhouse")
        return dsn
    if parts.scheme in ("http", "https"):
        try:
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            raise ConfigError("CLICKHOUSE_DSN has a malformed port") from None
        if not parts.hostname:
            raise ConfigError("CLICKHOUSE_DSN has no host, e.g. http://clickhouse:8123")
        return dsn
    raise ConfigError(f"CLICKHOUSE_DSN scheme {parts.scheme!r} is not one of chdb, http, https")


def _mask_dsn(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password:
        return dsn.replace(f":{parts.password}@", f":{_MASK}@", 1)
    return dsn


def _master_key(raw: str, home: Path, name: str = "PRIVACY_PIPELINE_MASTER_KEY") -> bytes:
    if raw:
        try:
            key = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{name} is not valid base64") from None
        if len(key) != 32:
            raise ConfigError(f"{name} must decode to 32 bytes")
        return key
    # Local default only: one random key kept beside the local state, readable by the owner.
    path = home / "master.key"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(base64.b64encode(secrets.token_bytes(32)))
    return _master_key(path.read_text().strip(), home)


@dataclass(frozen=True)
class Settings:
    """Everything configurable, read once from the environment."""

    bootstrap_servers: str
    kafka_home: Path | None
    kafka_version: str
    kafka_port: int
    home: Path
    cache: Path
    clickhouse_dsn: str = field(repr=False)
    master_key: bytes = field(repr=False)
    previous_master_keys: tuple[bytes, ...] = field(repr=False)
    policy_file: Path | None
    region: str
    topic_prefix: str
    replication_factor: int
    metrics_port: int
    api_port: int
    query_port: int
    log_level: str

    @property
    def uses_local_kafka(self) -> bool:
        """True when no external cluster is configured, so the project runs its own broker."""
        return not self.bootstrap_servers

    @property
    def catalog(self) -> Catalog:
        """The topic catalog of this deployment (names carry the topic prefix)."""
        return Catalog.with_prefix(self.topic_prefix)

    @property
    def kafka_bootstrap(self) -> str:
        return self.bootstrap_servers or f"localhost:{self.kafka_port}"

    def consumer_group(self, role: str) -> str:
        """The consumer group of a pipeline role, namespaced like the topics."""
        return f"{self.topic_prefix}privacy-pipeline.{role}"

    def child_env(self) -> dict[str, str]:
        """The environment for a child process that must see these same settings."""
        return dict(os.environ) | {"PRIVACY_PIPELINE_HOME": str(self.home),
                                   "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap}

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "clickhouse_dsn":
                value = _mask_dsn(value)
            elif f.name in ("master_key", "previous_master_keys"):
                value = _MASK
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    __str__ = __repr__

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: the process environment)."""
        env = os.environ if environ is None else environ

        def get(name: str, default: str = "") -> str:
            assert name in _KNOWN, name
            return env.get(name, "").strip() or default

        xdg_state = get_path(env, "XDG_STATE_HOME", Path.home() / ".local" / "state")
        xdg_cache = get_path(env, "XDG_CACHE_HOME", Path.home() / ".cache")
        home = Path(get("PRIVACY_PIPELINE_HOME") or xdg_state / "privacy-pipeline").expanduser()
        cache = Path(get("PRIVACY_PIPELINE_CACHE") or xdg_cache / "privacy-pipeline").expanduser()
        level = get("PRIVACY_PIPELINE_LOG_LEVEL", "INFO").upper()
        if level not in LOG_LEVELS:
            raise ConfigError(f"PRIVACY_PIPELINE_LOG_LEVEL={level!r} is not one of "
                              f"{', '.join(LOG_LEVELS)}")
        bootstrap = get("KAFKA_BOOTSTRAP_SERVERS")
        for server in filter(None, bootstrap.split(",")):
            host, _, port = server.strip().rpartition(":")
            if not host:
                raise ConfigError(f"KAFKA_BOOTSTRAP_SERVERS entry {server!r} is not host:port")
            _port("KAFKA_BOOTSTRAP_SERVERS", port)
        kafka_home = get("KAFKA_HOME")
        policy = get("PRIVACY_PIPELINE_POLICY_FILE")
        return cls(
            bootstrap_servers=bootstrap,
            kafka_home=Path(kafka_home).expanduser() if kafka_home else None,
            kafka_version=get("PRIVACY_PIPELINE_KAFKA_VERSION", "3.9.1"),
            kafka_port=_port("PRIVACY_PIPELINE_KAFKA_PORT",
                             get("PRIVACY_PIPELINE_KAFKA_PORT", "19092")),
            home=home,
            cache=cache,
            clickhouse_dsn=check_clickhouse_dsn(
                get("CLICKHOUSE_DSN") or f"chdb://{home / 'clickhouse'}"),
            master_key=_master_key(get("PRIVACY_PIPELINE_MASTER_KEY"), home),
            previous_master_keys=tuple(
                _master_key(k.strip(), home, "PRIVACY_PIPELINE_PREVIOUS_MASTER_KEYS")
                for k in get("PRIVACY_PIPELINE_PREVIOUS_MASTER_KEYS").split(",") if k.strip()),
            policy_file=Path(policy).expanduser() if policy else None,
            region=get("PRIVACY_PIPELINE_REGION").lower(),
            topic_prefix=get("PRIVACY_PIPELINE_TOPIC_PREFIX"),
            replication_factor=_positive("PRIVACY_PIPELINE_REPLICATION_FACTOR",
                                         get("PRIVACY_PIPELINE_REPLICATION_FACTOR", "1")),
            metrics_port=_port("PRIVACY_PIPELINE_METRICS_PORT",
                               get("PRIVACY_PIPELINE_METRICS_PORT", "9464"), any_free=True),
            api_port=_port("PRIVACY_PIPELINE_API_PORT", get("PRIVACY_PIPELINE_API_PORT", "8080"),
                           any_free=True),
            query_port=_port("PRIVACY_PIPELINE_QUERY_PORT",
                             get("PRIVACY_PIPELINE_QUERY_PORT", "8124"), any_free=True),
            log_level=level,
        )


def get_path(env: Mapping[str, str], name: str, default: Path) -> Path:
    """A base directory from a standard XDG variable, else ``default``."""
    raw = env.get(name, "").strip()
    return Path(raw).expanduser() if raw else default


def markdown_table() -> str:
    """The README's configuration table, from ``VARIABLES``."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{v.name}` | {v.default or '(empty)'} | {v.meaning}"
             f"{' Secret: masked when printed.' if v.secret else ''} |" for v in VARIABLES]
    return "\n".join(rows)
