"""The columnar decision engine: a batch of one input schema -> Arrow tables per destination.

Stage 1 of the columnar hot path (docs/decisions.md, D7). It is the engine the worker
will use; the worker does not call it yet (stage 2). For each row it decides exactly
what ``engine.decide`` decides, from the same compiled plan (``policy.plans``): C8
deletion, gates (C3-C6), per destination the event types, C21 consent version, C9/C10
third-party rules, C17 personal content and required switches, then the output records of
every (destination, variant) from the builders' own ``RecordLayout`` (C7, C11-C13, C16-C19).

``decide_batch`` takes the records as dicts (what the worker decodes with fastavro today);
``decide_table`` takes them as Arrow columns (what a native batch decoder will give).
Decisions are made per distinct subject state (the row engine's ``_resolve`` and
``_server_switch``) and spread over the rows with numpy; only the age class at event time
is per row, vectorized from the state's precomputed thresholds (``SubjectState.age_class``).

Rows the columnar path cannot take exactly are decided by ``engine.decide`` itself:
records that do not convert to the schema's Arrow types, a None where the schema has no
null, subject keys too short for a pseudonym, values a generalizer raises for. A
``SerializationError`` of the row engine becomes that row's FAILED outcome with the same
error; the rest of the batch is unaffected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streams import engine
from streams.arrow_avro import arrow_type
from streams.batch_outputs import OutputContext, SharedColumns, UnbuildableRows, build_table
from streams.consent import ADULT, AGE_16_17, UNDER_13, UNDER_16, SubjectState
from streams.decisions import DeleteSubject, Dropped, Routed
from streams.errors import PolicyError, SerializationError
from streams.field_plan import SchemaPlan
from streams.policy import Policy
from streams.pseudonym import MIN_KEY_BYTES

__all__ = ["DELETE_SUBJECT", "DROPPED", "FAILED", "ROUTED", "BatchOutcome",
           "DestinationTable", "decide_batch", "decide_table"]

ROUTED, DROPPED, DELETE_SUBJECT, FAILED = 0, 1, 2, 3
_SKIPPED = -1  # a destination the row's event type does not go to (no reason)
_CONVERSION_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError)


@dataclass(frozen=True, slots=True)
class DestinationTable:
    """The output records of one destination, in input row order."""

    destination: str
    output_schema: str
    rows: np.ndarray  # the input row of each output record, ascending
    table: pa.Table


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """Per input row its outcome kind; the reason of DROPPED rows, the error of FAILED ones."""

    kinds: np.ndarray  # int8: ROUTED, DROPPED, DELETE_SUBJECT or FAILED
    reasons: np.ndarray  # index into ``drops`` (meaningful for DROPPED rows)
    drops: tuple[Dropped, ...]
    errors: Mapping[int, SerializationError]
    tables: tuple[DestinationTable, ...]  # every destination of the schema, plan order

    def outcome(self, row: int) -> Dropped | DeleteSubject | SerializationError | tuple[str, ...]:
        """One row's outcome; a routed row's is the names of its destinations."""
        kind = self.kinds[row]
        if kind == DELETE_SUBJECT:
            return DeleteSubject()
        if kind == DROPPED:
            return self.drops[self.reasons[row]]
        if kind == FAILED:
            return self.errors[row]
        return tuple(t.destination for t in self.tables
                     if np.searchsorted(t.rows, row) < len(t.rows)
                     and t.rows[np.searchsorted(t.rows, row)] == row)


@dataclass(frozen=True, slots=True)
class _Prepared:
    plan: SchemaPlan
    struct: pa.StructType  # the input fields the plan reads
    required: tuple[str, ...]  # those of them with no null branch
    outputs: Mapping[str, pa.Schema]  # destination -> Arrow schema of its output schema


def _as_strings(t: Any) -> Any:
    """Enums are strings in memory (fastavro), so in Arrow too."""
    if isinstance(t, list):
        return [_as_strings(b) for b in t]
    if isinstance(t, dict) and t.get("type") == "enum":
        return "string"
    if isinstance(t, dict) and t.get("type") == "array":
        return {**t, "items": _as_strings(t["items"])}
    return t


_prepared: dict[tuple[int, str], tuple[Policy, _Prepared]] = {}


def _prepare(policy: Policy, source_schema: str) -> _Prepared:
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
    struct = pa.struct([(f.name, arrow_type(_as_strings(raw[f.name]))) for f in fields])
    outputs = {}
    for d in plan.dests:
        out = policy.catalog.by_name(d.layouts[0].output_schema).raw["fields"]
        outputs[d.name] = pa.schema([(f["name"], arrow_type(f["type"])) for f in out])
    prepared = _Prepared(plan, struct, tuple(f.name for f in fields if not f.nullable), outputs)
    _prepared[(id(policy), source_schema)] = (policy, prepared)
    return prepared


def _to_arrow(records: Sequence[Mapping[str, Any]], prep: _Prepared
              ) -> tuple[dict[str, pa.Array], np.ndarray]:
    """Input columns, and the rows that do not fit them (for the row engine)."""
    n = len(records)
    bad = np.zeros(n, bool)
    try:
        array = pa.array(records, type=prep.struct)
    except _CONVERSION_ERRORS:
        for i, record in enumerate(records):
            try:
                pa.array([record], type=prep.struct)
            except _CONVERSION_ERRORS:
                bad[i] = True
        array = pa.array([{} if b else r for r, b in zip(records, bad, strict=True)],
                         type=prep.struct)
    columns = {prep.struct.field(i).name: array.field(i) for i in range(prep.struct.num_fields)}
    for name in prep.required:
        if columns[name].null_count:
            bad |= ~np.asarray(columns[name].is_valid())
    return columns, bad


class _Rows:
    """Per-row values the checks read: a column of the schema, else the records' own."""

    def __init__(self, records: Sequence[Mapping[str, Any]], columns: Mapping[str, pa.Array]):
        self.records, self.columns, self.n = records, columns, len(records)
        if isinstance(records, _TableRecords):  # the table is all there is: others are None
            self.records = [{}] * self.n

    def isin(self, name: str, values: frozenset[str]) -> np.ndarray:
        column = self.columns.get(name)
        if column is None or not pa.types.is_string(column.type):
            return np.fromiter((r.get(name) in values for r in self.records), bool, self.n)
        found = pc.is_in(column, value_set=pa.array(sorted(values), pa.string()))
        return np.asarray(found.fill_null(False))

    def truthy(self, name: str) -> np.ndarray:
        column = self.columns.get(name)
        if column is None or not pa.types.is_boolean(column.type):
            return np.fromiter((bool(r.get(name)) for r in self.records), bool, self.n)
        return np.asarray(column.fill_null(False))

    def strings(self, name: str) -> list[Any]:
        column = self.columns.get(name)
        if column is None:
            return [r.get(name) for r in self.records]
        return column.to_pylist()


class _States:
    """The distinct subject states of a batch, resolved once each against the policy."""

    def __init__(self, states: Sequence[SubjectState | None], policy: Policy):
        ids = np.fromiter(map(id, states), np.uint64, len(states))
        _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
        self.row = inverse.reshape(-1)  # per row: index of its distinct state
        self.distinct = [states[i] for i in first.tolist()]
        self.resolved = [engine._resolve(s, policy) for s in self.distinct]
        self._flags: dict[str, np.ndarray] = {}
        self.none = np.array([s is None for s in self.distinct])
        self.version_index = np.array([r[1] for r in self.resolved], np.int64)
        self.managed = np.array([s is not None and s.managed_profile for s in self.distinct])
        far = np.iinfo(np.int64).min
        self.by_birth_year = np.array([s is not None and s._known_13_from is not None
                                       for s in self.distinct])
        self.thresholds = np.array(
            [(s._known_13_from, s._certain_16_from, s._certain_18_from)
             if s is not None and s._known_13_from is not None else (far, far, far)
             for s in self.distinct], np.int64).reshape(-1, 3)
        # Without a birth year the class does not depend on the event time.
        self.band = np.array([s.age_class(0) if s is not None else -1 for s in self.distinct])

    def flag(self, name: str) -> np.ndarray:
        """A resolved subject switch per row."""
        found = self._flags.get(name)
        if found is None:
            per_state = np.fromiter((r[2][name] for r in self.resolved), bool, len(self.resolved))
            found = self._flags[name] = per_state[self.row]
        return found

    def age_class(self, event_time: np.ndarray) -> np.ndarray:
        """``SubjectState.age_class(event_time)`` per row (-1 where there is no state)."""
        k13, c16, c18 = (self.thresholds[self.row, i] for i in range(3))
        by_year = np.where(event_time < k13, UNDER_13, np.where(
            event_time < c16, UNDER_16, np.where(event_time < c18, AGE_16_17, ADULT)))
        return np.where(self.by_birth_year[self.row], by_year, self.band[self.row])


def _server_switches(flag: str, rows: _Rows, states: _States, policy: Policy) -> np.ndarray:
    """``engine._server_switch`` per row, computed once per distinct (state, server)."""
    servers = rows.strings("server_id")
    index: dict[Any, int] = {}
    codes = np.fromiter((index.setdefault(s, len(index)) for s in servers), np.int64, rows.n)
    pairs = states.row.astype(np.int64) * max(len(index), 1) + codes
    _, first, inverse = np.unique(pairs, return_index=True, return_inverse=True)
    values = []
    for r in first.tolist():
        s = states.row[r]
        defaults = states.resolved[s][0]
        record = {"server_id": servers[r]}
        values.append(engine._server_switch(flag, states.distinct[s], defaults, record))
    return np.array(values, bool)[inverse.reshape(-1)]


class _Reasons:
    def __init__(self) -> None:
        self.index: dict[Dropped, int] = {}

    def __call__(self, dropped: Dropped) -> int:
        return self.index.setdefault(dropped, len(self.index))


def decide_batch(
    source_schema: str,
    records: Sequence[Mapping[str, Any]],
    states: Sequence[SubjectState | None],
    keys: Sequence[bytes],
    policy: Policy,
) -> BatchOutcome:
    """Decide a batch of decoded ``source_schema`` events, row i with ``states[i]`` and
    ``keys[i]``, as ``engine.decide`` would each of them; see the module docstring."""
    prep = _prepare(policy, source_schema)
    columns, irregular = _to_arrow(records, prep)
    return _decide_columns(prep, columns, irregular, records, states, keys, policy)


def decide_table(
    source_schema: str,
    table: pa.Table,
    states: Sequence[SubjectState | None],
    keys: Sequence[bytes],
    policy: Policy,
) -> BatchOutcome:
    """``decide_batch`` for events already in columns (a decoder's Arrow output: enums as
    strings, timestamps as int64 millis); a field the table lacks reads as None."""
    prep = _prepare(policy, source_schema)
    n = table.num_rows
    columns = {
        f.name: (table.column(f.name).combine_chunks().cast(f.type)
                 if f.name in table.column_names else pa.nulls(n, f.type))
        for f in prep.struct
    }
    irregular = np.zeros(n, bool)
    for name in prep.required:
        if columns[name].null_count:
            irregular |= ~np.asarray(columns[name].is_valid())
    return _decide_columns(prep, columns, irregular, _TableRecords(table), states, keys, policy)


class _TableRecords(Sequence[Mapping[str, Any]]):
    """Rows of a table as dicts, made only for the rows the row engine decides."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def __getitem__(self, i: Any) -> Any:
        return self.table.slice(i, 1).to_pylist()[0]


def _decide_columns(prep: _Prepared, columns: dict[str, pa.Array], irregular: np.ndarray,
                    records: Sequence[Mapping[str, Any]], states: Sequence[SubjectState | None],
                    keys: Sequence[bytes], policy: Policy) -> BatchOutcome:
    encoded_keys = pa.array(keys, pa.binary()).dictionary_encode()
    short = np.asarray(pc.less(pc.binary_length(encoded_keys.dictionary), MIN_KEY_BYTES))
    key_index = encoded_keys.indices.to_numpy(zero_copy_only=False)
    irregular |= short[key_index]
    rows, subject_states = _Rows(records, columns), _States(states, policy)
    while True:
        try:
            return _decide(prep, rows, subject_states, records, states, keys, policy, irregular,
                           OutputContext(columns, key_index, encoded_keys.dictionary.to_pylist(),
                                         policy.processing_region, policy.version))
        except UnbuildableRows as exc:  # rare: a generalizer raised; the row engine decides
            irregular = irregular.copy()
            irregular[exc.rows] = True


def _decide(prep: _Prepared, rows: _Rows, st: _States, records: Sequence[Mapping[str, Any]],
            states: Sequence[SubjectState | None], keys: Sequence[bytes], policy: Policy,
            irregular: np.ndarray, ctx: OutputContext) -> BatchOutcome:
    plan, n = prep.plan, rows.n
    reason = _Reasons()
    kinds = np.full(n, ROUTED, np.int8)
    reasons = np.zeros(n, np.int32)
    event_time = rows.columns["event_time"].fill_null(0).to_numpy(zero_copy_only=False)
    age = st.age_class(event_time)
    no_state = st.none[st.row]
    deleted = ~no_state & (age == UNDER_13) & ~irregular  # C8
    kinds[deleted] = DELETE_SUBJECT
    open_ = ~irregular & ~deleted
    for gate in plan.gates:  # first switched-off gate drops the event
        applies = np.ones(n, bool) if gate.field is None else rows.isin(gate.field, gate.values)
        on = (st.flag(gate.flag) if gate.scope == "subject"
              else _server_switches(gate.flag, rows, st, policy))
        hit = open_ & applies & ~on
        kinds[hit], reasons[hit] = DROPPED, reason(gate.dropped)
        open_ &= ~hit
    personal = (rows.isin(plan.personal_field, frozenset([plan.personal_value or ""]))
                if plan.personal_field is not None else np.zeros(n, bool))
    variant = personal.astype(np.int8) | (st.flag("limit_sensitive").astype(np.int8) << 1)
    adult_enough = ~no_state & (age >= AGE_16_17)
    managed = st.managed[st.row] | rows.truthy("managed_profile")
    version_index = st.version_index[st.row]
    routed_any = np.zeros(n, bool)
    blocked = np.full(n, -1, np.int32)
    routed_rows = []
    for dest in plan.dests:
        active = open_ & (rows.isin("event_type", dest.event_types)
                          if dest.event_types is not None else True)
        conditions = [(dest.since_index > version_index) & (dest.since_index > 0)]  # C21
        choices = [reason(engine._OLD_VERSION)]
        if dest.third_party:  # C9, C10: fail closed
            conditions += [no_state, ~adult_enough, managed]
            choices += [reason(engine._NO_CONSENT), reason(engine._MINOR),
                        reason(engine._MANAGED)]
        if dest.exclude_personal:  # C17
            conditions.append(personal)
            choices.append(reason(engine._PERSONAL))
        for flag, dropped in dest.requires_subject:
            conditions.append(~st.flag(flag))
            choices.append(reason(dropped))
        for flag, dropped in dest.requires_server:
            conditions.append(~_server_switches(flag, rows, st, policy))
            choices.append(reason(dropped))
        code = np.where(active, np.select(conditions, choices, default=_SKIPPED), _SKIPPED)
        routed = active & (code == _SKIPPED)
        routed_any |= routed
        blocked = np.where((blocked < 0) & active & ~routed, code, blocked)
        routed_rows.append(np.flatnonzero(routed))
    dropped_late = open_ & ~routed_any
    kinds[dropped_late] = DROPPED
    reasons[dropped_late] = np.where(blocked[dropped_late] >= 0, blocked[dropped_late],
                                     reason(engine._NO_DESTINATION))
    parts: dict[str, list[tuple[np.ndarray, pa.Table]]] = {d.name: [] for d in plan.dests}
    shared = SharedColumns(ctx)
    for dest, dest_rows in zip(plan.dests, routed_rows, strict=True):
        if len(dest_rows):
            table = build_table(dest.layouts, dest_rows, variant[dest_rows], shared,
                                prep.outputs[dest.name])
            parts[dest.name].append((dest_rows, table))
    errors = _decide_rows(np.flatnonzero(irregular), prep, records, states, keys, policy,
                          kinds, reasons, reason, parts)
    drops = tuple(sorted(reason.index, key=reason.index.__getitem__))
    tables = tuple(_merge(d.name, d.layouts[0].output_schema, parts[d.name],
                          prep.outputs[d.name]) for d in plan.dests)
    return BatchOutcome(kinds, reasons, drops, errors, tables)


def _decide_rows(irregular: np.ndarray, prep: _Prepared, records: Sequence[Mapping[str, Any]],
                 states: Sequence[SubjectState | None], keys: Sequence[bytes], policy: Policy,
                 kinds: np.ndarray, reasons: np.ndarray, reason: _Reasons,
                 parts: dict[str, list[tuple[np.ndarray, pa.Table]]]
                 ) -> dict[int, SerializationError]:
    """The row engine's decisions for the rows the columnar path does not take."""
    errors: dict[int, SerializationError] = {}
    for i in irregular.tolist():
        try:
            decision = engine.decide(prep.plan.name, records[i], states[i], keys[i], policy)
        except SerializationError as exc:
            kinds[i], errors[i] = FAILED, exc
            continue
        if isinstance(decision, Routed):
            kinds[i] = ROUTED
            for out in decision.outputs:
                try:
                    table = pa.Table.from_pylist([out.record], schema=prep.outputs[out.destination])
                except _CONVERSION_ERRORS as exc:
                    kinds[i], errors[i] = FAILED, SerializationError(
                        f"{out.destination} record of row {i} does not fit its Arrow schema: {exc}")
                    break
                parts[out.destination].append((np.array([i]), table))
        elif isinstance(decision, Dropped):
            kinds[i], reasons[i] = DROPPED, reason(decision)
        else:
            kinds[i] = DELETE_SUBJECT
    return errors


def _merge(name: str, output_schema: str, parts: list[tuple[np.ndarray, pa.Table]],
           schema: pa.Schema) -> DestinationTable:
    if not parts:
        return DestinationTable(name, output_schema, np.zeros(0, np.int64), schema.empty_table())
    if len(parts) == 1:
        return DestinationTable(name, output_schema, parts[0][0], parts[0][1])
    rows = np.concatenate([p[0] for p in parts])
    order = np.argsort(rows, kind="stable")
    table = pa.concat_tables([p[1] for p in parts]).take(pa.array(order))
    return DestinationTable(name, output_schema, rows[order], table)
