"""Output records of one (destination, variant) as an Arrow table, from its field plan.

The columnar counterpart of a compiled builder (``streams.field_plan``): it reads the
same ``RecordLayout`` and makes each output column once for all rows of a batch.
Pseudonyms are computed once per distinct (subject key, domain, value) with
``pseudonym.pseudonymize`` (so ``forget_cache()`` still clears every derived value),
generalizers run once per distinct value with the functions of ``streams.generalize``,
except ``timestamp_hour``, whose arithmetic is exact in numpy. Map entries keep the
builder's insertion order (always-present entries first), which Avro writes as is.

A generalizer that raises for a value raises ``UnbuildableRows`` naming the rows that
hold it: the batch engine hands those rows to the row engine, whose answer is the rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streams.field_plan import FieldStep, RecordLayout
from streams.generalize import HOUR_MS, METHODS
from streams.pseudonym import pseudonymize

__all__ = ["OutputContext", "UnbuildableRows", "build_table"]

_TRUE, _FALSE = pa.scalar("true"), pa.scalar("false")


class UnbuildableRows(Exception):  # internal: never leaves decide_batch, so no PipelineError
    """A generalizer raised for the values of these input rows."""

    def __init__(self, rows: np.ndarray) -> None:
        super().__init__(f"{len(rows)} rows need the row engine")
        self.rows = rows


@dataclass(frozen=True, slots=True)
class OutputContext:
    """What every layout of one batch shares: input columns and subject keys."""

    columns: Mapping[str, pa.Array]  # input field -> column over the whole batch
    key_index: np.ndarray  # per input row: index into ``keys``
    keys: Sequence[bytes]  # distinct subject keys of the batch
    region: str
    version: str


def _per_distinct(values: pa.Array, func: Any) -> pa.Array:
    """``func`` applied once per distinct non-null value; nulls stay null."""
    encoded = values.dictionary_encode()
    results = [func(v) for v in encoded.dictionary.to_pylist()]
    return pa.array(results, pa.string()).take(encoded.indices)


def _pseudonyms(values: pa.Array, key_index: np.ndarray, ctx: OutputContext, domain: str
                ) -> pa.Array:
    encoded = values.dictionary_encode()
    codes = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    pairs = key_index.astype(np.int64) * max(len(encoded.dictionary), 1) + codes
    pairs[~np.asarray(values.is_valid())] = -1
    _, first, inverse = np.unique(pairs, return_index=True, return_inverse=True)
    strings, keys = encoded.dictionary.to_pylist(), ctx.keys
    results = [
        None if pairs[row] < 0 else pseudonymize(keys[key_index[row]], domain, strings[codes[row]])
        for row in first.tolist()
    ]
    return pa.array(results, pa.string()).take(pa.array(inverse.reshape(-1)))


def _generalized(values: pa.Array, method: str, rows: np.ndarray) -> pa.Array:
    if method == "timestamp_hour":  # numpy's % on int64 has Python's sign rule, as the function
        v = values.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        return pa.array(v - v % HOUR_MS, pa.int64(), mask=~np.asarray(values.is_valid()))
    func = METHODS[method][0]
    encoded = values.dictionary_encode()
    results = []
    for i, v in enumerate(encoded.dictionary.to_pylist()):
        try:
            results.append(func(v))
        except Exception as exc:  # the row engine decides these rows (and reports them)
            bad = np.asarray(pc.equal(encoded.indices, i).fill_null(False))
            raise UnbuildableRows(rows[bad]) from exc
    return pa.array(results, pa.string()).take(encoded.indices)


def _step_values(step: FieldStep, rows: np.ndarray, ctx: OutputContext) -> pa.Array:
    values = ctx.columns[step.field].take(pa.array(rows))
    if step.handling == "pseudonymize":
        assert step.arg is not None
        values = _pseudonyms(values, ctx.key_index[rows], ctx, step.arg)
    elif step.handling == "generalize":
        assert step.arg is not None
        values = _generalized(values, step.arg, rows)
    if step.target == "a" and step.kind == "boolean":
        values = pc.if_else(values, _TRUE, _FALSE)
    elif step.target == "m":
        values = values.cast(pa.float64(), safe=False)
    return values


def _map(entries: list[tuple[str, pa.Array]], rows: int, value_type: pa.DataType) -> pa.Array:
    """A map per row holding the non-null entries, in ``entries`` order."""
    offsets = np.zeros(rows + 1, np.int32)
    if not entries:
        return pa.MapArray.from_arrays(offsets, pa.array([], pa.string()),
                                       pa.array([], value_type))
    valid = np.stack([np.asarray(v.is_valid()) for _, v in entries], axis=1)
    flat = np.flatnonzero(valid)  # row-major: a row's entries together, in entry order
    width = len(entries)
    np.cumsum(valid.sum(axis=1), out=offsets[1:])
    names = pa.array([name for name, _ in entries], pa.string())
    keys = names.take(pa.array(flat % width))
    values = pa.concat_arrays([v.cast(value_type) for _, v in entries])
    items = values.take(pa.array((flat % width) * rows + flat // width))
    return pa.MapArray.from_arrays(offsets, keys, items)


def build_table(layout: RecordLayout, rows: np.ndarray, ctx: OutputContext,
                schema: pa.Schema) -> pa.Table:
    """The output records of input ``rows`` (all routed with this layout's variant)."""
    n = len(rows)
    values = {id(s): _step_values(s, rows, ctx) for s in layout.steps}
    maps: dict[str, list[tuple[str, pa.Array]]] = {"a": [], "m": []}
    for first in (True, False):  # the builder's dict literal first, then guarded entries
        for s in layout.steps:
            if s.target in maps and s.always is first:
                maps[s.target].append((s.out_name, values[id(s)]))
    top = {s.out_name: values[id(s)] for s in layout.steps if s.target == "o"}
    columns = []
    for name, source, default in layout.top:
        field_type = schema.field(name).type
        if source == "attributes":
            column = _map(maps["a"], n, pa.string())
        elif source == "measures":
            column = _map(maps["m"], n, pa.float64())
        elif source in ("region", "version", "source"):
            constant = {"region": ctx.region, "version": ctx.version}.get(source, default)
            column = pa.repeat(pa.scalar(constant, field_type), n)
        elif name in top:
            column = top[name].cast(field_type)
            if source == "default" and default is not None:
                column = pc.coalesce(column, pa.scalar(default, field_type))
        else:
            column = pa.repeat(pa.scalar(default, field_type), n)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)
