"""The ML-training sink: anonymized examples as Parquet files partitioned by day.

Layout: ``<root>/day=YYYY-MM-DD/part-<topic>-<partition>-<first>-<last>.parquet`` plus
``<root>/_manifest.json`` (files, rows, offsets, schema). Each file is written to a temp
name and renamed, so readers never see half a file. Names come from the batch's offset
range: a retried batch overwrites its own files. After a restart, files of a partition
that start at or past the committed offset were written by a run that crashed before its
commit; they are removed on assignment and written again, so nothing is duplicated.

The columns are exactly the MlTrainingExample schema, which has no event id, subject id
or pseudonym (C7, C20): nothing in these files links to a person, so a deletion does not
need to rewrite them.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sinks.base import Batch, BatchingSink, Rejected, TopicPartition, outside_regions
from sinks.errors import SinkBackpressure
from streams import metrics
from streams.schema_catalog import default_catalog

SCHEMA_NAME = "MlTrainingExample"
ARROW_SCHEMA = pa.schema([
    pa.field("source", pa.string(), nullable=False),
    pa.field("event_type", pa.string(), nullable=False),
    pa.field("event_hour", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("processing_region", pa.string(), nullable=False),
    pa.field("policy_version", pa.string(), nullable=False),
    pa.field("features", pa.map_(pa.string(), pa.string()), nullable=False),
    pa.field("measures", pa.map_(pa.string(), pa.float64()), nullable=False),
])
_PART = re.compile(r"^part-(?P<topic>.+)-(?P<partition>\d+)-(?P<first>\d+)-(?P<last>\d+)\.parquet$")


_DAY_MS = 86_400_000


def _day(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")


def to_table(rows: pa.Table) -> pa.Table:
    """Decoded MlTrainingExample rows as the Parquet files' table (hours as timestamps)."""
    return pa.Table.from_arrays([rows.column(f.name).cast(f.type) for f in ARROW_SCHEMA],
                                schema=ARROW_SCHEMA)


class TrainingSink(BatchingSink):
    """MlTrainingExample records into day-partitioned Parquet under ``root``."""

    name = "training"

    def __init__(self, root: Path, allowed_regions: frozenset[str] | None = None) -> None:
        super().__init__()
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.allowed_regions = allowed_regions
        # "_" prefix: dataset readers (pyarrow, pandas) skip it when reading the directory.
        self.manifest_path = self.root / "_manifest.json"
        self._files: dict[str, dict[str, Any]] = {}
        if self.manifest_path.exists():
            self._files = {f["path"]: f for f in json.loads(
                self.manifest_path.read_text())["files"]}

    def validate(self, rows: pa.Table, tp: TopicPartition) -> Rejected:
        if self.allowed_regions is None:
            return {}
        return outside_regions(rows, self.allowed_regions)

    def recover(self, tp: TopicPartition, next_offset: int) -> None:
        """Remove files of ``tp`` written past the committed offset by a crashed run."""
        for path in sorted(self.root.glob("day=*/part-*.parquet")):
            m = _PART.match(path.name)
            if (m and m["topic"] == tp.topic and int(m["partition"]) == tp.partition
                    and int(m["first"]) >= next_offset):
                path.unlink()
                self._files.pop(str(path.relative_to(self.root)), None)
        self._write_manifest()

    def write(self, batch: Batch) -> None:
        started = time.perf_counter()
        rows, offsets = batch.rows, batch.offsets
        days = np.asarray(rows.column("event_hour")) // _DAY_MS
        name = (f"part-{batch.tp.topic}-{batch.tp.partition}-"
                f"{batch.first_offset}-{batch.last_offset}.parquet")
        try:
            for day in np.unique(days).tolist():
                here = days == day
                path = self.root / f"day={_day(day)}" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                pq.write_table(to_table(rows.filter(pa.array(here))), tmp, compression="zstd")
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
                rel = str(path.relative_to(self.root))
                self._files[rel] = {"path": rel, "day": _day(day), "rows": int(here.sum()),
                                    "topic": batch.tp.topic, "partition": batch.tp.partition,
                                    "first_offset": int(offsets[here].min()),
                                    "last_offset": int(offsets[here].max())}
            self._write_manifest()
        except OSError as exc:  # disk full, read-only volume: retry later, drop nothing
            metrics.SINK_ERRORS.labels(sink=self.name, error_class=type(exc).__name__).inc()
            raise SinkBackpressure(f"cannot write Parquet under {self.root}: {exc}") from exc
        metrics.SINK_INSERT_SECONDS.labels(sink=self.name).observe(time.perf_counter() - started)
        metrics.SINK_ROWS.labels(sink=self.name, table="training").inc(len(batch))

    def _write_manifest(self) -> None:
        files = sorted(self._files.values(), key=lambda f: f["path"])
        manifest = {
            "format": "parquet",
            "partitioning": "hive (day=YYYY-MM-DD)",
            "rows": sum(f["rows"] for f in files),
            "files": files,
            "schema": {"avro": default_catalog().by_name(SCHEMA_NAME).raw,
                       "arrow": ARROW_SCHEMA.to_string()},
            "updated_at": datetime.now(UTC).isoformat(),
        }
        tmp = self.manifest_path.with_name(".manifest.json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2, default=str))
        os.replace(tmp, self.manifest_path)
