"""A batch's inputs as the batch engine reads them: Arrow columns and subject states.

``prepare`` finds, once per (policy, input schema), the input fields the compiled plans
read and their Arrow types; ``to_arrow`` turns decoded records into those columns and
names the rows that do not fit (for the row engine). ``BatchStates`` resolves each
subject state with the row engine's own ``_resolve`` once, into a row of numbers that
later batches find by the state's memoized slot (``_StateRows``); ``server_switches``
asks the row engine's ``_server_switch`` once per (state, server).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Generic, TypeVar, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streams import engine
from streams.arrow_avro import table_schema
from streams.avro_columns import arrow_value_type
from streams.consent import ADULT, AGE_16_17, UNDER_13, UNDER_16, SubjectState
from streams.errors import PolicyError
from streams.field_plan import SchemaPlan
from streams.policy import SERVER_FLAGS, SUBJECT_FLAGS, Policy

__all__ = ["CONVERSION_ERRORS", "BatchRows", "BatchStates", "Factored", "PreparedSchema",
           "TableRecords", "as_records", "prepare", "server_switches", "to_arrow"]

CONVERSION_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError)


@dataclass(frozen=True, slots=True)
class PreparedSchema:
    plan: SchemaPlan
    struct: pa.StructType  # the input fields the plan reads
    required: tuple[str, ...]  # those of them with no null branch
    outputs: Mapping[str, pa.Schema]  # destination -> Arrow schema of its output schema
    fields: tuple[tuple[str, pa.DataType], ...] = ()  # ``struct``'s, as (name, type)


_prepared: dict[tuple[int, str], tuple[Policy, PreparedSchema]] = {}


def prepare(policy: Policy, source_schema: str) -> PreparedSchema:
    """What the batch engine reads of ``source_schema`` under ``policy`` (made once)."""
    cached = _prepared.get((id(policy), source_schema))
    if cached is not None and cached[0] is policy:
        return cached[1]
    plan = policy.plans.get(source_schema)
    if plan is None:
        raise PolicyError(f"{policy.source}: {source_schema!r} is not an input schema")
    schema = policy.catalog.by_name(source_schema)
    read = {s.field for d in plan.dests for lay in d.layouts for s in lay.steps}
    read |= {g.field for g in plan.gates if g.field is not None}
    read |= {plan.personal_field, "event_time", "managed_profile", "event_type", "server_id"}
    raw = {f["name"]: f["type"] for f in schema.raw["fields"]}
    fields = [f for f in schema.fields if f.name in read]
    struct = pa.struct([(f.name, arrow_value_type(raw[f.name])) for f in fields])
    outputs = {}
    for d in plan.dests:
        outputs[d.name] = table_schema(policy.catalog.by_name(d.layouts[0].output_schema).raw)
    required = tuple(f.name for f in fields if not f.nullable)
    prepared = PreparedSchema(plan, struct, required, outputs,
                              tuple((f.name, f.type) for f in struct))
    _prepared[(id(policy), source_schema)] = (policy, prepared)
    return prepared


def to_arrow(records: Sequence[Mapping[str, Any]], prep: PreparedSchema
             ) -> tuple[dict[str, pa.Array], np.ndarray]:
    """Input columns, and the rows that do not fit them (for the row engine)."""
    n = len(records)
    bad = np.zeros(n, bool)
    try:
        array = pa.array(records, type=prep.struct)
    except CONVERSION_ERRORS:
        for i, record in enumerate(records):
            try:
                pa.array([record], type=prep.struct)
            except CONVERSION_ERRORS:
                bad[i] = True
        array = pa.array([{} if b else r for r, b in zip(records, bad, strict=True)],
                         type=prep.struct)
    columns = {prep.struct.field(i).name: array.field(i) for i in range(prep.struct.num_fields)}
    for name in prep.required:
        if columns[name].null_count:
            bad |= ~np.asarray(columns[name].is_valid())
    return columns, bad


class BatchRows:
    """Per-row values the checks read: a column of the schema, else the records' own."""

    def __init__(self, records: Sequence[Mapping[str, Any]], columns: Mapping[str, pa.Array]):
        self.records, self.columns, self.n = records, columns, len(records)
        # The table is all there is: a field it lacks is None in every row (never in a
        # value set, never truthy).
        self.from_table = isinstance(records, TableRecords)
        if self.from_table:
            self.records = [{}] * self.n

    def isin(self, name: str, values: frozenset[str]) -> np.ndarray:
        column = self.columns.get(name)
        if column is None or not pa.types.is_string(column.type):
            if self.from_table:
                return np.zeros(self.n, bool)
            return np.fromiter((r.get(name) in values for r in self.records), bool, self.n)
        found = pc.is_in(column, options=_lookup(values))
        return np.asarray(_filled(found, False))

    def truthy(self, name: str) -> np.ndarray:
        column = self.columns.get(name)
        if column is None or not pa.types.is_boolean(column.type):
            if self.from_table:
                return np.zeros(self.n, bool)
            return np.fromiter((bool(r.get(name)) for r in self.records), bool, self.n)
        return np.asarray(_filled(column, False))


_lookups: dict[frozenset[str], pc.SetLookupOptions] = {}


def _lookup(values: frozenset[str]) -> pc.SetLookupOptions:
    """``is_in``'s options for one of the policy's value sets (made once each)."""
    found = _lookups.get(values)
    if found is None:
        found = _lookups[values] = pc.SetLookupOptions(pa.array(sorted(values), pa.string()))
    return found


def _filled(column: pa.Array, fill: Any) -> pa.Array:
    """``column`` with nulls as ``fill``; itself when it has none (a fill kernel call costs
    tens of microseconds even then)."""
    return column.fill_null(fill) if column.null_count else column


# Columns of a state's row (``_state_row``).
_NONE, _VERSION, _MANAGED, _BY_YEAR, _K13, _C16, _C18, _BAND, _FLAGS, _SERVERS = range(10)
_SERVER_DEFAULTS = 10  # the jurisdiction's server switches, as bits
_FLAG_BIT = {f: 1 << i for i, f in enumerate(SUBJECT_FLAGS)}
_SERVER_BIT = {f: 1 << i for i, f in enumerate(SERVER_FLAGS)}
_FAR = np.iinfo(np.int64).min


def _state_row(state: SubjectState | None, policy: Policy) -> tuple[int, ...]:
    """A subject state resolved against ``policy`` (``engine._resolve``) as numbers."""
    defaults, version, flags = engine._resolve(state, policy)
    bits = sum(bit for f, bit in _FLAG_BIT.items() if flags[f])
    server_bits = sum(bit for f, bit in _SERVER_BIT.items() if getattr(defaults, f))
    if state is None:
        return (1, version, 0, 0, _FAR, _FAR, _FAR, -1, bits, 0, server_bits)
    by_year = state._known_13_from is not None
    k13, c16, c18 = ((state._known_13_from, state._certain_16_from, state._certain_18_from)
                     if by_year else (_FAR, _FAR, _FAR))
    return (0, version, int(state.managed_profile), int(by_year), k13, c16, c18,
            state.age_class(0), bits, int(bool(state.servers)), server_bits)  # type: ignore


class _StateRows:
    """Every state's row (``_state_row``) under one policy, in one array: a state keeps its
    slot as an int memo (generation << 32 | slot), so a batch finds the rows of the states
    it has seen before without a Python call each. Bounded: when the array is full a new
    generation starts and every memo is stale (recomputed on next sight)."""

    CAPACITY = 1 << 18

    def __init__(self) -> None:
        self.policy: Policy | None = None
        self.generation = 0
        self.used = 0
        self.rows = np.empty((0, 11), np.int64)
        self.none_slot = -1
        # slot << 32 | server id -> server switch bits; ids are given out as servers are met
        self._servers: dict[int, int] = {}
        self._server_ids: dict[str | None, int] = {}

    def _restart(self, policy: Policy, room: int = 0) -> None:
        self.policy, self.generation, self.used, self.none_slot = policy, self.generation + 1, 0, -1
        self._servers.clear()
        self._server_ids.clear()
        if len(self.rows) < max(self.CAPACITY, room):
            self.rows = np.empty((max(self.CAPACITY, room), 11), np.int64)

    def slots(self, distinct: list[SubjectState | None], policy: Policy) -> np.ndarray:
        """The slot of each state's row (resolving the states not seen before)."""
        if policy is not self.policy:
            self._restart(policy)
        codes = np.fromiter((-1 if s is None or s._batch_memo is None else s._batch_memo
                             for s in distinct), np.int64, len(distinct))
        stale = np.flatnonzero((codes >> 32) != self.generation)
        if len(stale) and self.used + len(stale) + 1 > len(self.rows):
            self._restart(policy, len(distinct) + 1)
            stale = np.arange(len(distinct))
        for i in stale.tolist():
            state = distinct[i]
            if state is None and self.none_slot >= 0:
                codes[i] = self.none_slot
                continue
            slot = self.used
            self.rows[slot] = _state_row(state, policy)
            self.used += 1
            codes[i] = (self.generation << 32) | slot
            if state is None:
                self.none_slot = codes[i]
            else:
                object.__setattr__(state, "_batch_memo", int(codes[i]))
        return codes & 0xFFFFFFFF

    def server_bits(self, distinct: list[SubjectState], slots: np.ndarray, state_of: np.ndarray,
                    servers: pa.Array, policy: Policy) -> np.ndarray:
        """Per row its server switches (bits): the state ``distinct[state_of[i]]`` (slot
        ``slots[state_of[i]]``) at server ``servers[i]``, memoized per (slot, server). The
        memo is keyed by one int per row and read with ``map`` in C; only unseen pairs
        take a Python step (``_server_bits``)."""
        encoded = servers.dictionary_encode()
        names = [*encoded.dictionary.to_pylist(), None]  # a null's index (-1) is the last
        found = list(map(self._server_ids.get, names))
        if None in found:  # servers not met before get the next ids (dense: they fit 32 bits)
            for i, name in enumerate(names):
                if found[i] is None:
                    found[i] = self._server_ids.setdefault(name, len(self._server_ids))
        ids = np.array(found, np.int64)
        index = _filled(encoded.indices, -1).to_numpy(zero_copy_only=False)
        keys = ((slots[state_of].astype(np.int64) << 32) | ids[index]).tolist()
        bits = np.fromiter(map(self._servers.get, keys, repeat(-1)), np.int64, len(keys))
        unseen = np.flatnonzero(bits < 0)
        for i, state, server in zip(unseen.tolist(), state_of[unseen].tolist(),
                                    index[unseen].tolist(), strict=True):
            known = self._servers.get(keys[i])  # an earlier row of this batch may have made it
            if known is None:
                known = self._servers[keys[i]] = _server_bits(distinct[state], names[server],
                                                              policy)
            bits[i] = known
        return bits


_state_rows = _StateRows()


T = TypeVar("T")


class Factored(Sequence[T], Generic[T]):
    """A per-row sequence given as its values and, per row, the index of its value: what a
    caller that looked each subject up once passes, so the engine need not find the
    distinct values again (values may repeat)."""

    def __init__(self, values: list[T], codes: np.ndarray) -> None:
        self.values, self.codes = values, codes  # codes: per row, the index of its value

    def __len__(self) -> int:
        return len(self.codes)

    @overload
    def __getitem__(self, i: int) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> list[T]: ...
    def __getitem__(self, i: int | slice) -> T | list[T]:
        if isinstance(i, slice):
            return [self.values[j] for j in self.codes[i].tolist()]
        return self.values[self.codes[i]]


class BatchStates:
    """The distinct subject states of a batch, each resolved once against the policy, as
    one row of numbers per state (``_state_row``) spread over the batch's rows."""

    def __init__(self, states: Sequence[SubjectState | None], policy: Policy):
        if isinstance(states, Factored):
            self.row, self.distinct = states.codes, states.values
        else:
            ids = np.fromiter(map(id, states), np.uint64, len(states))
            _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
            self.row = inverse.reshape(-1)  # per row: index of its distinct state
            self.distinct = [states[i] for i in first.tolist()]
        self.slots = _state_rows.slots(self.distinct, policy)
        self.table = _state_rows.rows[self.slots]
        self.none = self.table[:, _NONE].astype(bool)
        self.version_index = self.table[:, _VERSION]
        self.managed = self.table[:, _MANAGED].astype(bool)
        self.with_servers = self.table[:, _SERVERS].astype(bool)
        self._flags: dict[str, np.ndarray] = {}
        self._server_bits: np.ndarray | None = None

    def flag(self, name: str) -> np.ndarray:
        """A resolved subject switch per row."""
        found = self._flags.get(name)
        if found is None:
            per_state = (self.table[:, _FLAGS] & _FLAG_BIT[name]) != 0
            found = self._flags[name] = per_state[self.row]
        return found

    def server_bits(self, rows: BatchRows, policy: Policy) -> np.ndarray:
        """Per row its server switches as bits (``_SERVER_BIT``): the jurisdiction's
        defaults where the subject set no server switch, else resolved once per distinct
        (state, server)."""
        if self._server_bits is not None:
            return self._server_bits
        bits = self.table[:, _SERVER_DEFAULTS][self.row]
        own = np.flatnonzero(self.with_servers[self.row])
        if len(own):
            column = rows.columns.get("server_id")
            servers = (column.take(own) if column is not None else pa.array(
                [rows.records[r].get("server_id") for r in own.tolist()], pa.string()))
            bits[own] = _state_rows.server_bits(self.distinct, self.slots, self.row[own],
                                                servers, policy)
        self._server_bits = bits
        return bits

    def age_class(self, event_time: np.ndarray) -> np.ndarray:
        """``SubjectState.age_class(event_time)`` per row (-1 where there is no state)."""
        ages = self.table[:, _BAND][self.row]
        by_year = np.flatnonzero(self.table[self.row, _BY_YEAR])  # the class moves with time
        if len(by_year):
            state, t = self.row[by_year], event_time[by_year]
            ages[by_year] = np.where(t < self.table[state, _K13], UNDER_13, np.where(
                t < self.table[state, _C16], UNDER_16, np.where(
                    t < self.table[state, _C18], AGE_16_17, ADULT)))
        return ages


def server_switches(flag: str, rows: BatchRows, states: BatchStates, policy: Policy) -> np.ndarray:
    """``engine._server_switch`` per row (every server switch of a batch is resolved at the
    first call, then read from ``BatchStates.server_bits``)."""
    return (states.server_bits(rows, policy) & _SERVER_BIT[flag]) != 0


def _server_bits(state: SubjectState, server: str | None, policy: Policy) -> int:
    defaults = engine._resolve(state, policy)[0]
    record = {"server_id": server}
    return sum(bit for f, bit in _SERVER_BIT.items()
               if engine._server_switch(f, state, defaults, record))


def as_records(table: pa.Table) -> list[dict[str, Any]]:
    """The rows of a decoded table as the row codec gives them (Arrow's maps are lists of
    pairs in Python; fastavro's are dicts)."""
    columns = []
    for f, column in zip(table.schema, table.columns, strict=True):
        values = column.to_pylist()  # by column: several times faster than by row
        if pa.types.is_map(f.type):
            values = [None if v is None else dict(v) for v in values]
        columns.append(values)
    names = table.column_names
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


class TableRecords(Sequence[Mapping[str, Any]]):
    """Rows of a table as dicts, made only for the rows the row engine decides."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def __getitem__(self, i: Any) -> Any:
        return as_records(self.table.slice(i, 1))[0]
