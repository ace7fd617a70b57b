"""Output records of one (destination, variant) as an Arrow table, from its field plan.

The columnar counterpart of a compiled builder (``streams.field_plan``): it reads the
same ``RecordLayout`` and makes each output column once for all rows of a batch. What
a table needs from its layouts (steps, entry orders, names, constants) is worked out
once per (layouts, variants present, schema) by ``streams.output_plan``.
Pseudonyms are hashed for a whole column in one native call (``hmac_kernel``, the same
values as ``pseudonym.pseudonymize``; no cache, so nothing derived outlives a batch),
generalizers run once per distinct value with the functions of ``streams.generalize``,
except ``timestamp_hour``, whose arithmetic is exact in numpy, and ``ip_prefix`` and
``postal_region``, parsed natively (``generalize_kernel``) wherever that is exact. Map
entries keep the builder's insertion order (always-present entries first), which Avro
writes as is; ``map_kernel`` writes each map in one pass.

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
from streams.generalize_kernel import METHODS as NATIVE_METHODS
from streams.generalize_kernel import generalized
from streams.hmac_kernel import pseudonyms
from streams.map_kernel import map_array
from streams.output_plan import Constant, MapColumn, TablePlan, table_plan

__all__ = ["OutputContext", "SharedColumns", "UnbuildableRows", "build_table", "cast_to"]

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
    key_index: np.ndarray  # per input row: index into ``pads`` (its subject key)
    pads: np.ndarray  # per distinct subject key of the batch: its HMAC pad states
    region: str
    version: str


def string_buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The bytes and int64 offsets (one more than rows) of a string or binary array."""
    _, offsets, data = values.buffers()
    ends = np.frombuffer(offsets, np.int32, len(values) + 1, values.offset * 4)
    return (np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8),
            ends.astype(np.int64))


def _generalized(values: pa.Array, method: str, rows: np.ndarray) -> pa.Array:
    if method == "timestamp_hour":  # numpy's % on int64 has Python's sign rule, as the function
        if not values.null_count:
            v = values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
            return pa.array(v - v % HOUR_MS, pa.int64())
        v = values.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        return pa.array(v - v % HOUR_MS, pa.int64(), mask=~np.asarray(values.is_valid()))
    if method in NATIVE_METHODS:
        return _vectorized(values, *generalized(values, method), method, rows)
    return _per_value(values, METHODS[method][0], rows)


def _vectorized(values: pa.Array, results: pa.Array, exact: np.ndarray, method: str,
                rows: np.ndarray) -> pa.Array:
    """``results`` where ``exact`` holds (a kernel's answer there is the function's), the
    function once per distinct value elsewhere."""
    if exact.all():
        return results
    other = np.flatnonzero(~exact)
    found = _per_value(values.take(other), METHODS[method][0], rows[other])
    where = np.arange(len(values))
    where[other] = len(values) + np.arange(len(other))
    return pa.concat_arrays([results, found]).take(pa.array(where))


def _per_value(values: pa.Array, func: Any, rows: np.ndarray) -> pa.Array:
    """``func`` once per distinct value of ``values`` (input ``rows``); nulls stay null."""
    encoded = values.dictionary_encode()
    results = []
    for i, v in enumerate(encoded.dictionary.to_pylist()):
        try:
            results.append(func(v))
        except Exception as exc:  # the row engine decides these rows (and reports them)
            bad = np.asarray(pc.equal(encoded.indices, i).fill_null(False))
            raise UnbuildableRows(rows[bad]) from exc
    return pa.array(results, pa.string()).take(encoded.indices)


def cast_to(values: pa.Array, type_: pa.DataType, safe: bool = True) -> pa.Array:
    """``values`` cast to ``type_``, without a kernel call when they already are."""
    return values if values.type == type_ else values.cast(type_, safe=safe)


def _convert(step: FieldStep, values: pa.Array) -> pa.Array:
    if step.target == "a" and step.kind == "boolean":
        return pc.if_else(values, _TRUE, _FALSE)
    if step.target == "m":
        return cast_to(values, pa.float64(), safe=False)
    return values


class SharedColumns:
    """Kept and generalized values over the whole batch, shared by its destinations."""

    def __init__(self, ctx: OutputContext) -> None:
        self.ctx = ctx
        self._values: dict[tuple[str, str, str | None, str, str], pa.Array] = {}
        self._rows = np.arange(len(ctx.key_index))
        self._buffers: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}

    def pseudonyms(self, step: FieldStep, rows: np.ndarray, key_index: np.ndarray
                   ) -> pa.Array:
        """The pseudonym of input row ``rows[i]``'s ``step.field`` under key ``key_index[i]``
        in ``step.arg``'s domain, per i, hashed where the values are in one native call;
        nulls stay null."""
        assert step.arg is not None
        found = self._buffers.get(step.field)
        if found is None:
            column = self.ctx.columns[step.field]
            data, offsets = string_buffers(column)
            valid = np.asarray(column.is_valid()) if column.null_count else None
            found = self._buffers[step.field] = (data, offsets, valid)
        data, offsets, valid = found
        return pseudonyms(self.ctx.pads, key_index, step.arg.encode() + b"\x00", data,
                          offsets[:-1], offsets[1:], rows=rows,
                          valid=valid[rows] if valid is not None else None)

    def values(self, step: FieldStep) -> pa.Array:
        key = (step.field, step.handling, step.arg, step.kind, step.target)
        found = self._values.get(key)
        if found is None:
            found = self.ctx.columns[step.field]
            if step.handling == "generalize":
                assert step.arg is not None
                found = _generalized(found, step.arg, self._rows)
            found = self._values[key] = _convert(step, found)
        return found


def build_table(layouts: Sequence[RecordLayout], rows: np.ndarray, variants: np.ndarray,
                shared: SharedColumns, schema: pa.Schema) -> pa.Table:
    """The output records of input ``rows`` routed to one destination, row i built with
    ``layouts[variants[i]]``; the same records its builders make."""
    present_variants = tuple(np.flatnonzero(np.bincount(variants, minlength=4)).tolist())
    ctx = shared.ctx
    plan = table_plan(layouts, present_variants, schema, ctx.region, ctx.version)
    if plan.columns is None:  # the variants' map entries have no common order: split
        parts = [build_table(layouts, rows[variants == v], variants[variants == v], shared,
                             schema) for v in present_variants]
        order = np.argsort(np.concatenate([rows[variants == v] for v in present_variants]),
                           kind="stable")
        return pa.concat_tables(parts).take(pa.array(order))
    n = len(rows)
    # Per step its values: one per output row (pseudonyms: per destination domain) or
    # one per input row (kept and generalized, shared by the batch's destinations).
    values: list[pa.Array] = []
    local: list[bool] = []
    key_index = None
    for step in plan.steps:
        if step.handling == "pseudonymize":
            if key_index is None:
                key_index = ctx.key_index[rows]
            values.append(_convert(step, shared.pseudonyms(step, rows, key_index)))
        else:
            values.append(shared.values(step))
        local.append(step.handling == "pseudonymize")
    taken = _taken(plan, values, rows)
    kinds = variants.astype(np.int64)  # the map kernel's row kinds: once for both maps
    columns = []
    for column in plan.columns:
        if isinstance(column, MapColumn):
            columns.append(map_array(
                column.names, [cast_to(values[i], column.item_type) for i in column.steps],
                [local[i] for i in column.steps], rows, kinds, column.in_variants,
                column.item_type))
        elif isinstance(column, Constant):
            columns.append(pa.repeat(column.value, n))
        else:
            candidates = []
            for i in column.steps:
                found = values[i] if local[i] else taken[i]
                if not plan.everywhere[i]:  # a null takes care of itself: only variants
                    found = pc.if_else(plan.in_variants[i][variants], found, None)
                candidates.append(cast_to(found, column.type))
            if column.default is not None:
                candidates.append(pa.repeat(column.default, n))
            columns.append(pc.coalesce(*candidates) if len(candidates) > 1 else candidates[0])
    return pa.Table.from_arrays(columns, schema=schema)


def _taken(plan: TablePlan, values: list[pa.Array], rows: np.ndarray) -> dict[int, pa.Array]:
    """The values of ``plan.takes`` at ``rows``, in one take (each Arrow call costs about
    10 us before it starts on the rows)."""
    if not plan.takes:
        return {}
    at = pa.array(rows)
    if len(plan.takes) == 1:
        return {plan.takes[0]: values[plan.takes[0]].take(at)}
    batch = pa.RecordBatch.from_arrays([values[i] for i in plan.takes], names=plan.take_names)
    return dict(zip(plan.takes, batch.take(at).columns, strict=True))
