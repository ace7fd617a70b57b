"""What ``batch_outputs.build_table`` does for one destination, worked out once.

A destination's output table depends on its layouts, the variants present among its rows
and its Arrow schema; the rows only supply values. Walking the layouts' steps per call
(which steps each variant has, a common map entry order, which steps fill which column,
each map's encoded entry names, each constant as an Arrow scalar) cost about 0.5 ms a
destination table, a third of a small schema group's time. Here it is done once per
(layouts, variants present, schema) and kept as plain tuples, so a call only does the
array work. Nothing here depends on a batch's data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from streams.field_plan import FieldStep, RecordLayout
from streams.map_kernel import EncodedNames, encode_names

__all__ = ["Constant", "FieldColumn", "MapColumn", "TablePlan", "table_plan"]


@dataclass(frozen=True, slots=True)
class Constant:
    """A column holding one value (region, policy version, source, a default)."""

    value: pa.Scalar


@dataclass(frozen=True, slots=True)
class FieldColumn:
    """A top-level column from the first present of its steps' values, else ``default``."""

    steps: tuple[int, ...]  # indices into ``TablePlan.steps``
    type: pa.DataType
    default: pa.Scalar | None  # None: no default (a null where no step is present)


@dataclass(frozen=True, slots=True)
class MapColumn:
    """An ``attributes``/``measures`` map: its entries (steps) in their common order."""

    steps: tuple[int, ...]
    names: EncodedNames
    in_variants: np.ndarray  # bool (entries, 4): entry j is in variant v's layout
    item_type: pa.DataType


@dataclass(frozen=True, slots=True)
class TablePlan:
    """The steps of the variants present, and how the table's columns come from them.

    ``in_variants[i, v]``: step i is in variant v's layout. ``everywhere[i]``: in every
    variant present, so only a null value leaves it out of a row. ``columns`` is None when
    the variants' map entries have no common order: the table is then built per variant.
    """

    steps: tuple[FieldStep, ...]
    in_variants: np.ndarray  # bool (steps, 4)
    everywhere: tuple[bool, ...]
    columns: tuple[Constant | FieldColumn | MapColumn, ...] | None
    # Steps of top-level columns read at the table's input rows (not pseudonyms): taken
    # in one call, as the columns of one record batch named by ``take_names``.
    takes: tuple[int, ...] = ()
    take_names: tuple[str, ...] = ()


_plans: dict[tuple[int, tuple[int, ...], int, str, str],
             tuple[Sequence[RecordLayout], pa.Schema, TablePlan]] = {}


def table_plan(layouts: Sequence[RecordLayout], variants: tuple[int, ...], schema: pa.Schema,
               region: str, version: str) -> TablePlan:
    """The plan of a table of ``variants`` (ascending, at least one) of ``layouts``, with the
    policy's ``region`` and ``version``; made once per (layouts, variants, schema, region,
    version) and kept (policies are few and live as long as the process)."""
    key = (id(layouts), variants, id(schema), region, version)
    found = _plans.get(key)
    if found is not None and found[0] is layouts and found[1] is schema:
        return found[2]
    plan = _compile(layouts, variants, schema, {"region": region, "version": version})
    _plans[key] = (layouts, schema, plan)
    return plan


def _compile(layouts: Sequence[RecordLayout], variants: tuple[int, ...], schema: pa.Schema,
             policy_values: dict[str, str]) -> TablePlan:
    index: dict[FieldStep, int] = {}
    for v in variants:
        for step in layouts[v].steps:
            index.setdefault(step, len(index))
    steps = tuple(index)
    in_variants = np.zeros((len(steps), 4), bool)
    for v in variants:
        for step in layouts[v].steps:
            in_variants[index[step], v] = True
    everywhere = tuple(bool(in_variants[i, list(variants)].all()) for i in range(len(steps)))
    orders = {t: _ordered_steps(layouts, variants, t) for t in ("a", "m")}
    if len(variants) > 1 and None in orders.values():
        return TablePlan(steps, in_variants, everywhere, None)
    columns: list[Constant | FieldColumn | MapColumn] = []
    for name, source, default in layouts[variants[0]].top:
        field_type = schema.field(name).type
        if source in ("attributes", "measures"):
            order = orders["a" if source == "attributes" else "m"] or []
            entries = [index[s] for s in order]
            columns.append(MapColumn(tuple(entries), encode_names([s.out_name for s in order]),
                                     np.ascontiguousarray(in_variants[entries]),
                                     field_type.item_type))
        elif source in ("region", "version", "source"):
            columns.append(Constant(pa.scalar(policy_values.get(source, default), field_type)))
        else:
            found = tuple(i for i, s in enumerate(steps) if s.target == "o" and s.out_name == name)
            columns.append(FieldColumn(found, field_type, pa.scalar(default, field_type)
                                       if default is not None or not found else None))
    takes = tuple(i for c in columns if isinstance(c, FieldColumn) for i in c.steps
                  if steps[i].handling != "pseudonymize")
    return TablePlan(steps, in_variants, everywhere, tuple(columns), takes,
                     tuple(str(i) for i in range(len(takes))))


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
