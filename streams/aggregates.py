"""Hourly tumbling aggregates with small-cell suppression (C20). Pure.

Metric ``plays``: play events of *catalog* titles per (hour, title, platform, country),
counted as distinct subjects. Personal-content titles never enter a cell (C17): only
``content_source == "catalog"`` plays count.

Two stages, because one cell's subjects are spread over every worker partition:

1. ``Contributions`` (in the worker, per batch): per cell, the number of plays and a
   set of *subject tokens*, HMACs of (window, subject id) under a key derived from the
   master key. A token names a subject only within one window, so it joins with nothing
   else (no pseudonym, no other window).
2. ``Windows`` (in the aggregator, keyed by cell): merges contributions, and when a
   window closes emits the cells whose distinct-subject count reaches k. A cell below k
   is never emitted; a late contribution to a closed window re-emits the cell with the
   higher count (counts only grow, so a cell once >= k stays >= k), and never a total or
   margin from which a suppressed cell could be recovered by subtraction.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

METRIC = "plays"
WINDOW_MS = 3_600_000
DIMENSIONS = ("title", "platform", "country")

TOKEN_HEX = 24  # a subject token: 96 bits of the HMAC, in hex
Cell = tuple[int, tuple[str, ...]]  # (window_start, dimension values)


def token_key(master_key: bytes) -> bytes:
    return hmac.new(master_key, b"privacy-pipeline aggregate tokens", hashlib.sha256).digest()


def subject_token(key: bytes, window_start: int, subject_id: str) -> str:
    return hmac.new(key, f"{window_start}:{subject_id}".encode(),
                    hashlib.sha256).hexdigest()[:TOKEN_HEX]


def cell_of(analytics: Mapping[str, Any]) -> Cell | None:
    """The cell a cleaned analytics record counts in, or None if it does not count."""
    if analytics.get("event_type") != "play" or analytics.get("source") != "PlaybackEvent":
        return None
    attrs = analytics.get("attributes") or {}
    if attrs.get("content_source") != "catalog":
        return None
    values = tuple(attrs.get(d) or "unknown" for d in DIMENSIONS)
    if values[0] == "unknown":
        return None
    window = analytics["event_time"] - analytics["event_time"] % WINDOW_MS
    return window, values


@dataclass
class Contributions:
    """One batch's plays per cell, with the tokens of the subjects who played."""

    key: bytes
    cells: dict[Cell, tuple[int, set[str]]] = field(default_factory=dict)

    def add(self, analytics: Mapping[str, Any], subject_id: str) -> None:
        cell = cell_of(analytics)
        if cell is None:
            return
        plays, tokens = self.cells.get(cell, (0, set()))
        tokens.add(subject_token(self.key, cell[0], subject_id))
        self.cells[cell] = (plays + 1, tokens)

    def add_columns(self, windows: np.ndarray, dims: Sequence[pa.Array],
                    tokens: pa.Array) -> None:
        """``add`` for plays whose cells are known, in columns (the worker's columnar
        path): row i played in window ``windows[i]`` with dimension values ``dims[k][i]``
        by the subject whose ``subject_token`` is ``tokens[i]``; cells are merged once per
        distinct cell."""
        names = [f"d{k}" for k in range(len(dims))]
        table = pa.table([pa.array(windows, pa.int64()), *dims, tokens],
                         names=["window", *names, "token"])
        grouped = table.group_by(["window", *names], use_threads=False).aggregate(
            [("token", "count"), ("token", "distinct")])
        keys = zip(grouped.column("window").to_pylist(),
                   *(grouped.column(name).to_pylist() for name in names), strict=True)
        for (window, *values), plays, distinct in zip(
                keys, grouped.column("token_count").to_pylist(),
                grouped.column("token_distinct").to_pylist(), strict=True):
            cell = (window, tuple(values))
            found = self.cells.get(cell)
            if found is None:
                self.cells[cell] = (plays, set(distinct))
            else:
                found[1].update(distinct)
                self.cells[cell] = (found[0] + plays, found[1])

    def records(self, region: str) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """(cell key, AggregatePartial record) per cell."""
        for (window, values), (plays, tokens) in self.cells.items():
            dims = dict(zip(DIMENSIONS, values, strict=True))
            yield cell_key(window, values), {
                "metric": METRIC, "window_start": window, "window_ms": WINDOW_MS,
                "dimensions": dims, "events": plays, "subject_tokens": sorted(tokens),
                "processing_region": region}

    def table(self, region: str, schema: pa.Schema) -> tuple[list[bytes | None], pa.Table]:
        """``records`` in columns: the cell keys, and the records as a table of ``schema``
        (the AggregatePartial schema's Arrow form) for the columnar encoder."""
        n, width = len(self.cells), len(DIMENSIONS)
        windows = [window for window, _ in self.cells]
        tokens = [sorted(t) for _, t in self.cells.values()]
        dims = pa.MapArray.from_arrays(
            pa.array(np.arange(0, width * n + 1, width, dtype=np.int32)),
            pa.array(DIMENSIONS * n, pa.string()),
            pa.array([v for _, values in self.cells for v in values], pa.string()))
        subject_tokens = pa.ListArray.from_arrays(
            pa.array(np.cumsum([0, *map(len, tokens)], dtype=np.int32)),
            pa.array([t for ts in tokens for t in ts], pa.string()))
        columns = [pa.repeat(pa.scalar(METRIC), n), pa.array(windows, pa.int64()),
                   pa.repeat(pa.scalar(WINDOW_MS), n), dims,
                   pa.array([plays for plays, _ in self.cells.values()], pa.int64()),
                   subject_tokens, pa.repeat(pa.scalar(region), n)]
        keys: list[bytes | None] = [cell_key(window, values) for window, values in self.cells]
        return keys, pa.Table.from_arrays(columns, schema=schema)


def cell_key(window: int, values: tuple[str, ...]) -> bytes:
    return "\x1f".join((METRIC, str(window), *values)).encode()


@dataclass
class Windows:
    """Open and recently closed windows of one aggregator; emits cells >= k."""

    k: int
    region: str
    open: dict[int, dict[tuple[str, ...], set[str]]] = field(default_factory=dict)
    closed: dict[int, dict[tuple[str, ...], set[str]]] = field(default_factory=dict)
    emitted: dict[Cell, int] = field(default_factory=dict)
    late_dropped: int = 0
    watermark: int = 0  # highest window start seen

    def add(self, partial: Mapping[str, Any], closed_before: int) -> list[dict[str, Any]]:
        """Merge one contribution; returns corrected cells if it was late."""
        return self.add_cell(partial["window_start"],
                             tuple(partial["dimensions"].get(d, "unknown") for d in DIMENSIONS),
                             partial["subject_tokens"], closed_before)

    def add_cell(self, window: int, values: tuple[str, ...], tokens: Sequence[str],
                 closed_before: int) -> list[dict[str, Any]]:
        """``add`` for a contribution already taken apart: its window, its dimension values
        (``DIMENSIONS`` order) and its subject tokens."""
        self.watermark = max(self.watermark, window)
        if window in self.closed:
            found = self.closed[window].setdefault(values, set())
            found.update(tokens)
            return self._emit(window, {values: found})
        if window < closed_before:  # its state is gone: counting it now could undercount
            self.late_dropped += 1
            return []
        self.open.setdefault(window, {}).setdefault(values, set()).update(tokens)
        return []

    def close(self, before: int, keep_closed: int = 3) -> list[dict[str, Any]]:
        """Close every open window starting before ``before``; emit its cells >= k."""
        out: list[dict[str, Any]] = []
        for window in sorted(w for w in self.open if w < before):
            cells = self.open.pop(window)
            self.closed[window] = cells
            out += self._emit(window, cells)
        for window in sorted(self.closed)[:-keep_closed]:
            del self.closed[window]
        if self.closed:
            self.forget_emitted_before(min(self.closed))
        return out

    def _emit(self, window: int, cells: Mapping[tuple[str, ...], set[str]]
              ) -> list[dict[str, Any]]:
        out = []
        for values, tokens in cells.items():
            count = len(tokens)
            if count < self.k or self.emitted.get((window, values), 0) >= count:
                continue
            self.emitted[(window, values)] = count
            out.append({"metric": METRIC, "window_start": window, "window_ms": WINDOW_MS,
                        "dimensions": dict(zip(DIMENSIONS, values, strict=True)),
                        "count": count, "processing_region": self.region})
        return out

    def forget_emitted_before(self, window: int) -> None:
        for cell in [c for c in self.emitted if c[0] < window]:
            del self.emitted[cell]
