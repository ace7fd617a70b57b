"""Output records of one (destination, variant) as an Arrow table, from its field plan.

The columnar counterpart of a compiled builder (``streams.field_plan``): it reads the
same ``RecordLayout`` and makes each output column once for all rows of a batch.
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


def _pseudonyms(column: pa.Array, rows: np.ndarray, key_index: np.ndarray,
                ctx: OutputContext, domain: str) -> pa.Array:
    """The pseudonym of ``column[rows[i]]`` under key ``key_index[i]`` per i, hashed where
    the values are, in one native call; nulls stay null."""
    data, offsets = string_buffers(column)
    result = pseudonyms(ctx.pads, key_index, domain.encode() + b"\x00", data, offsets[rows],
                        offsets[rows + 1])
    if not column.null_count:
        return result
    return pc.if_else(pa.array(np.asarray(column.is_valid())[rows]), result, None)


def _generalized(values: pa.Array, method: str, rows: np.ndarray) -> pa.Array:
    if method == "timestamp_hour":  # numpy's % on int64 has Python's sign rule, as the function
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


def _ordered_steps(layouts: Sequence[RecordLayout], variants: Sequence[int], target: str
                   ) -> list[FieldStep] | None:
    """One entry order of a map for all ``variants`` that keeps each variant's own order
    (the builder's: always-present entries first), or None if there is none."""
    orders = [[s for first in (True, False) for s in layouts[v].steps
               if s.target == target and s.always is first] for v in variants]
    union: list[FieldStep] = []
    for order in orders:
        at = 0
        for s in order:
            if s in union:
                at = union.index(s) + 1
            else:
                union.insert(at, s)
                at += 1
    for order in orders:
        positions = [union.index(s) for s in order]
        if positions != sorted(positions):
            return None
    return union


Entry = tuple[str, pa.Array, bool, np.ndarray]  # name, values, one per output row, present


def _map(entries: list[Entry], rows: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """A map per row holding its present entries, in ``entries`` order."""
    present = (np.stack([e[3] for e in entries], axis=1) if entries
               else np.zeros((len(rows), 0), bool))
    return map_array([e[0] for e in entries], [cast_to(e[1], value_type) for e in entries],
                     [e[2] for e in entries], rows, present, value_type)


@dataclass(frozen=True, slots=True)
class _DestinationSteps:
    """The steps of some variants of one destination, each with the variants that have it."""

    steps: tuple[tuple[FieldStep, np.ndarray], ...]  # (step, in-variant flag per variant 0-3)
    orders: Mapping[str, list[FieldStep] | None]  # map target -> common entry order


_steps_cache: dict[tuple[int, tuple[int, ...]], tuple[Sequence[RecordLayout], _DestinationSteps]]
_steps_cache = {}


def _destination_steps(layouts: Sequence[RecordLayout], variants: tuple[int, ...]
                       ) -> _DestinationSteps:
    cached = _steps_cache.get((id(layouts), variants))
    if cached is not None and cached[0] is layouts:
        return cached[1]
    steps: dict[FieldStep, np.ndarray] = {}
    for v in variants:
        for step in layouts[v].steps:
            steps.setdefault(step, np.zeros(4, bool))[v] = True
    orders = {t: _ordered_steps(layouts, variants, t) for t in ("a", "m")}
    found = _DestinationSteps(tuple(steps.items()), orders)
    _steps_cache[(id(layouts), variants)] = (layouts, found)
    return found


def build_table(layouts: Sequence[RecordLayout], rows: np.ndarray, variants: np.ndarray,
                shared: SharedColumns, schema: pa.Schema) -> pa.Table:
    """The output records of input ``rows`` routed to one destination, row i built with
    ``layouts[variants[i]]``; the same records its builders make."""
    present_variants = tuple(np.flatnonzero(np.bincount(variants, minlength=4)).tolist())
    plan = _destination_steps(layouts, present_variants)
    if len(present_variants) > 1 and None in plan.orders.values():  # no common order: split
        parts = [build_table(layouts, rows[variants == v], variants[variants == v], shared,
                             schema) for v in present_variants]
        order = np.argsort(np.concatenate([rows[variants == v] for v in present_variants]),
                           kind="stable")
        return pa.concat_tables(parts).take(pa.array(order))
    n, ctx = len(rows), shared.ctx
    # step -> its values, whether they are one per output row (else per input row), present
    entries: dict[FieldStep, tuple[pa.Array, bool, np.ndarray]] = {}
    # Most steps are in the same variants: one mask per set of variants, not per step.
    masks: dict[bytes, np.ndarray] = {}
    key_index = ctx.key_index[rows]
    for step, in_variants in plan.steps:
        present = masks.get(in_variants.tobytes())
        if present is None:
            present = masks[in_variants.tobytes()] = in_variants[variants]
        local = step.handling == "pseudonymize"  # per destination domain: only these rows
        if local:
            assert step.arg is not None
            values = _convert(step, _pseudonyms(ctx.columns[step.field], rows, key_index, ctx,
                                                step.arg))
        else:
            values = shared.values(step)
        if values.null_count:
            valid = np.asarray(values.is_valid())
            present = present & (valid if local else valid[rows])
        entries[step] = (values, local, present)
    columns = []
    for name, source, default in layouts[present_variants[0]].top:
        field_type = schema.field(name).type
        if source in ("attributes", "measures"):
            target = "a" if source == "attributes" else "m"
            column = _map([(s.out_name, *entries[s]) for s in plan.orders[target] or ()], rows,
                          field_type.item_type)
        elif source in ("region", "version", "source"):
            constant = {"region": ctx.region, "version": ctx.version}.get(source, default)
            column = pa.repeat(pa.scalar(constant, field_type), n)
        else:
            candidates = []
            for s, (values, local, present) in entries.items():
                if s.target == "o" and s.out_name == name:
                    taken = values if local else values.take(rows)
                    if not present.all():
                        taken = pc.if_else(present, taken, None)
                    candidates.append(cast_to(taken, field_type))
            if default is not None or not candidates:
                candidates.append(pa.repeat(pa.scalar(default, field_type), n))
            column = pc.coalesce(*candidates) if len(candidates) > 1 else candidates[0]
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)
