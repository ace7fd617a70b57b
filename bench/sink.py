"""Benchmark: ClickHouse sink inserts at 1k/10k/100k rows per batch (last line: JSON)."""

from sinks.bench import bench_sink
from streams.settings import Settings

if __name__ == "__main__":
    bench_sink(Settings.from_env())
