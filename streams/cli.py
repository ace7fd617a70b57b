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
bench_app = typer.Typer(help="Benchmarks; each prints one JSON object on its last line.",
                        no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
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


@app.command("run")
def run_cmd(seconds: float = typer.Option(20.0, help="How long to generate traffic."),
            keep_running: bool = typer.Option(False, help="Leave the broker running.")) -> None:
    """Run the main job on the embedded default and print a summary."""
    from streams.main_job import run

    typer.echo(json.dumps(run(_settings(), seconds=seconds, keep_running=keep_running),
                          indent=2))


@sink_app.command("clickhouse")
def sink_clickhouse(query_port: int = typer.Option(
        8124, help="Port of the read-only query endpoint on 127.0.0.1 (0: any, -1: none).")
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
