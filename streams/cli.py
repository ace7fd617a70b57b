"""The ``privacy-pipeline`` command line.

Every command reads settings once; a ``PipelineError`` becomes one clear line on
stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys

import typer

from streams import __version__
from streams.errors import PipelineError
from streams.settings import Settings, markdown_table

app = typer.Typer(help="A streaming privacy event pipeline: enforce a privacy policy on every "
                       "Kafka event, and prove it forgot someone.",
                  no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})
kafka_app = typer.Typer(help="Run the local single-node Kafka broker.", no_args_is_help=True)
topics_app = typer.Typer(help="Create and reconcile the catalog's topics.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage the master key that wraps every subject key.",
                       no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks; each prints one JSON object on its last line.",
                        no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(keys_app, name="keys")
app.add_typer(bench_app, name="bench")
sink_app = typer.Typer(help="Run a sink process (each its own consumer group).",
                       no_args_is_help=True)
app.add_typer(sink_app, name="sink")


def _settings() -> Settings:
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return settings


def _version(value: bool) -> None:
    if value:
        typer.echo(f"privacy-pipeline {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Privacy pipeline command line."""


@app.command("settings")
def settings_cmd(markdown: bool = typer.Option(False, "--markdown",
                                               help="Print the README's variable table.")
                 ) -> None:
    """Show the effective settings, secrets masked."""
    typer.echo(markdown_table() if markdown else repr(_settings()))


@kafka_app.command("start")
def kafka_start() -> None:
    """Start the local broker (resolving its jars once) and wait until it answers."""
    from streams.infra import local_kafka

    broker = local_kafka(_settings())
    broker.start()
    typer.echo(f"kafka ready at {broker.bootstrap} (logs: {broker.log_file})")


@kafka_app.command("stop")
def kafka_stop() -> None:
    """Stop the local broker."""
    from streams.infra import local_kafka

    stopped = local_kafka(_settings()).stop()
    typer.echo("kafka stopped" if stopped else "kafka was not running")


@kafka_app.command("status")
def kafka_status() -> None:
    """Say whether the local broker runs; exit 1 if not."""
    from streams.infra import local_kafka

    broker = local_kafka(_settings())
    pid = broker.pid()
    if pid is None:
        typer.echo("kafka is not running")
        raise typer.Exit(1)
    typer.echo(f"kafka running, pid {pid}, at {broker.bootstrap}")


@topics_app.command("apply")
def topics_apply() -> None:
    """Create missing catalog topics and reconcile their configs (idempotent)."""
    from streams import topic_admin

    settings = _settings()
    changes = topic_admin.apply(settings.kafka_bootstrap, settings.replication_factor,
                                settings.catalog)
    if not changes:
        typer.echo("topics up to date: nothing changed")
    for change in changes:
        typer.echo(f"{change.action:10} {change.topic}: {change.detail}")


@topics_app.command("list")
def topics_list() -> None:
    """Print the topic catalog."""
    for t in _settings().catalog:
        typer.echo(f"{t.name:34} {t.partitions:>2}p {t.cleanup_policy:8} {t.purpose}")


@app.command("worker")
def worker_cmd() -> None:
    """Run the stream worker: apply the policy to every raw event, exactly once."""
    from streams.infra import load_policy_for
    from streams.worker import run_worker

    settings = _settings()
    run_worker(settings, load_policy_for(settings))


@bench_app.command("throughput")
def bench_throughput(events: int = typer.Option(200_000, help="Events to push through."),
                     workers: int = typer.Option(1, help="Worker processes (one group)."),
                     warm_up: int = typer.Option(
                         100_000, help="Events per warm-up round (three, untimed; 0: none)."),
                     rounds: int = typer.Option(
                         3, min=1, help="Timed rounds; the median round is reported.")
                     ) -> None:
    """The worker against a raw confluent-kafka pass-through on the same broker and events."""
    from streams import bench_throughput as bench

    bench.main(_settings(), events, workers, warm_up, rounds)


@bench_app.command("policy")
def bench_policy_cmd(events: int = typer.Option(200_000, help="Events to decide."),
                     seed: int = typer.Option(0, help="Event mix seed.")) -> None:
    """The policy engine alone, one process, on a realistic event mix."""
    from streams import bench_policy

    typer.echo(json.dumps(bench_policy.run(events=events, seed=seed)))


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Re-wrap every subject key under PRIVACY_PIPELINE_MASTER_KEY (pseudonyms unchanged).

    Old entries are unwrapped with PRIVACY_PIPELINE_PREVIOUS_MASTER_KEYS; run it after the
    workers run with the new key and the old one as previous, then drop the old one.
    """
    from streams.key_rotation import rotate

    settings = _settings()
    typer.echo(f"re-wrapped {rotate(settings, settings.master_key)} keys")


@app.command("run")
def run_cmd(seconds: float = typer.Option(20.0, help="How long to generate traffic."),
            keep_running: bool = typer.Option(False, help="Leave the broker running.")) -> None:
    """Run the main job on the embedded default and print a summary."""
    from streams.main_job import run

    typer.echo(json.dumps(run(_settings(), seconds=seconds, keep_running=keep_running),
                          indent=2))


@app.command("generate")
def generate_cmd(events: int = typer.Option(None, help="Stop after this many input events."),
                 seconds: float = typer.Option(None, help="Stop after this many seconds."),
                 rate: float = typer.Option(0.0, help="Target events/s (0 = as fast as "
                                                       "possible)."),
                 seed: int = typer.Option(0, help="Seed: same seed, same records."),
                 subjects: int = typer.Option(10_000, help="Number of accounts."),
                 bad_fraction: float = typer.Option(0.01, help="Share of bad input records.")
                 ) -> None:
    """Produce seeded synthetic traffic to the catalog topics and print a summary."""
    from streams.traffic import generate
    from streams.traffic_model import TrafficConfig

    if events is None and seconds is None:
        raise typer.BadParameter("give --events or --seconds")
    config = TrafficConfig(seed=seed, subjects=subjects, bad_fraction=bad_fraction)
    typer.echo(json.dumps(generate(_settings(), config, events=events, seconds=seconds,
                                   rate=rate), indent=2))


@sink_app.command("clickhouse")
def sink_clickhouse(query_port: int = typer.Option(
        None, help="Override PRIVACY_PIPELINE_QUERY_PORT (0: any free port, -1: none).")
                    ) -> None:
    """Analytics events and aggregate cells into ClickHouse (embedded chDB or a server)."""
    from sinks.service import run_clickhouse_sink

    runner = run_clickhouse_sink(_settings(), query_port=query_port)
    typer.echo(f"clickhouse sink stopped; dead-lettered {runner.dead_lettered}")


@sink_app.command("training")
def sink_training() -> None:
    """Anonymized ML-training examples into day-partitioned Parquet files."""
    from sinks.service import run_training_sink

    runner = run_training_sink(_settings())
    typer.echo(f"training sink stopped; dead-lettered {runner.dead_lettered}")


@app.command("query")
def query_cmd(sql: str = typer.Argument(..., help="One read-only statement (SELECT, WITH, "
                                                  "SHOW, DESCRIBE, EXPLAIN).")) -> None:
    """Run analyst SQL on ClickHouse; prints one JSON object per row."""
    from sinks.query import run_query

    for row in run_query(_settings(), sql):
        typer.echo(json.dumps(row, default=str))


@bench_app.command("sink")
def bench_sink_cmd() -> None:
    """ClickHouse sink inserts at 1k, 10k and 100k rows per batch (rows/s)."""
    from sinks.bench import bench_sink

    bench_sink(_settings(), echo=typer.echo)

# --- data-subject requests (issue 5) ------------------------------------------------------
request_app = typer.Typer(help="File and follow data-subject requests through the API.",
                          no_args_is_help=True)
app.add_typer(request_app, name="request")


def _api_url(api: str | None) -> str:
    return (api or f"http://127.0.0.1:{_settings().api_port}").rstrip("/")


def _submit(kind: str, subject: str, email: str, agent: str | None, api: str | None,
            wait: float, correction: dict[str, str] | None = None) -> None:
    from streams.request_client import submit

    code, body = submit(_api_url(api), kind, subject, email, agent, wait, correction)
    typer.echo(json.dumps(body, indent=2, default=str))
    if code != 202 or body.get("status") in ("rejected", "failed"):
        raise typer.Exit(1)


_EMAIL = typer.Option(..., "--email",
                      help="The requester's e-mail (the account's, or the agent's).")
_SET = typer.Option(..., "--set",
                    help="FIELD=VALUE, repeatable (email, jurisdiction, birth_year, ...)")
_AGENT = typer.Option(None, "--agent", help="Authorized agent filing for the account.")
_API = typer.Option(None, "--api", help="Request API base URL (default: this host's API port).")
_WAIT = typer.Option(60.0, "--wait", help="Seconds to wait for completion (0: do not wait).")


@request_app.command("delete")
def request_delete(subject: str, email: str = _EMAIL, agent: str | None = _AGENT,
                   api: str | None = _API, wait: float = _WAIT) -> None:
    """Delete everything held about SUBJECT (C15); prints the status and erasure receipt."""
    _submit("delete", subject, email, agent, api, wait)


@request_app.command("access")
def request_access(subject: str, email: str = _EMAIL, agent: str | None = _AGENT,
                   api: str | None = _API, wait: float = _WAIT) -> None:
    """Export everything held about SUBJECT as JSON, grouped by C13 category."""
    _submit("access", subject, email, agent, api, wait)


@request_app.command("correct")
def request_correct(subject: str, field: list[str] = _SET, email: str = _EMAIL,
                    agent: str | None = _AGENT, api: str | None = _API,
                    wait: float = _WAIT) -> None:
    """Correct SUBJECT's profile or consent values (a new consent record, effective now)."""
    pairs = dict(f.split("=", 1) for f in field if "=" in f)
    if len(pairs) != len(field):
        raise PipelineError("--set takes FIELD=VALUE")
    _submit("correct", subject, email, agent, api, wait, pairs)


@request_app.command("opt-out")
def request_opt_out(subject: str, email: str = _EMAIL, agent: str | None = _AGENT,
                    api: str | None = _API, wait: float = _WAIT) -> None:
    """Opt SUBJECT out of targeted advertising (sale/share, C1/C15)."""
    _submit("opt_out", subject, email, agent, api, wait)


@request_app.command("status")
def request_status(request_id: str, api: str | None = _API) -> None:
    """Print a request's status, steps with timestamps and receipt."""
    from streams.request_client import call

    code, body = call(f"{_api_url(api)}/privacy/requests/{request_id}")
    typer.echo(json.dumps(body, indent=2))
    if code != 200:
        raise typer.Exit(1)


@app.command("api")
def api_cmd() -> None:
    """Serve the data-subject request API and carry out requests (with /metrics)."""
    import signal
    import threading

    from streams import metrics
    from streams.infra import load_policy_for
    from streams.request_api import ApiServer
    from streams.request_service import RequestService

    settings = _settings()
    service = RequestService(settings, load_policy_for(settings))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with metrics.serve_metrics(settings.metrics_port, ready=service.ready.is_set):
        server = ApiServer(service, settings.api_port)
        typer.echo(f"request API on port {server.port}")
        while not stop.wait(1.0) and server.failure is None:
            pass
        server.close()


@app.command("verify-erasure")
def verify_erasure_cmd(subject: str, strict: bool = typer.Option(
        False, help="Also fail on records retained until their topic's retention expires."),
        database: str = typer.Option("privacy_pipeline", help="The ClickHouse sink database.")
        ) -> None:
    """Re-read every topic and sink table; print an erasure receipt; exit 1 if linkable."""
    from streams import erasure
    from streams.infra import load_policy_for
    from streams.request_service import RequestService

    settings = _settings()
    service = RequestService(settings, load_policy_for(settings))
    service.directory.load()
    key = service.directory.subject_key(subject)
    pseudos = service.deletions.pseudonyms(subject, key) if key is not None else {}
    receipt = erasure.verify(settings, {subject: pseudos}, database=database,
                             key_shredded=key is None)[subject]
    ok = erasure.passed(receipt, strict)
    service.audit(None, "verify_erasure", "receipt", "done" if ok else "failed", receipt,
                  actor="cli")
    service.flush()
    service.deletions.close()
    service.directory.close()
    typer.echo(json.dumps({"subject_id": subject, "passed": ok, **receipt}, indent=2))
    if not ok:
        raise typer.Exit(1)


@bench_app.command("deletion")
def bench_deletion_cmd(requests: int = typer.Option(100, help="Deletion requests.")) -> None:
    """Request-to-receipt latency of deletions under load (p50_s, p99_s)."""
    from bench.deletion import bench_deletion

    typer.echo(json.dumps(bench_deletion(_settings(), requests=requests)))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except PipelineError as exc:
        typer.echo(f"privacy-pipeline: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("privacy-pipeline: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
