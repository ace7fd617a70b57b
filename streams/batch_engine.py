"""The columnar decision engine: a batch of one input schema -> Arrow tables per destination.

The worker's decision engine (docs/decisions.md, D8; the worker calls ``decide_table``
through ``streams.event_columns``, D10). For each row it decides exactly
what ``engine.decide`` decides, from the same compiled plan (``policy.plans``): C8
deletion, gates (C3-C6), per destination the event types, C21 consent version, C9/C10
third-party rules, C17 personal content and required switches, then the output records of
every (destination, variant) from the builders' own ``RecordLayout`` (C7, C11-C13, C16-C19).

``decide_batch`` takes the records as dicts (benchmarks and differential tests);
``decide_table`` takes them as Arrow columns (what ``avro_columns.decode_columns`` gives).
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

from streams import engine
from streams.batch_inputs import (
    CONVERSION_ERRORS,
    BatchRows,
    BatchStates,
    Factored,
    PreparedSchema,
    TableRecords,
    prepare,
    server_switches,
    to_arrow,
)
from streams.batch_outputs import (
    OutputContext,
    SharedColumns,
    UnbuildableRows,
    build_table,
    cast_to,
    string_buffers,
)
from streams.consent import AGE_16_17, UNDER_13, SubjectState
from streams.decisions import DeleteSubject, Dropped, Routed
from streams.errors import SerializationError
from streams.hmac_kernel import pad_states
from streams.policy import Policy
from streams.pseudonym import MIN_KEY_BYTES

__all__ = ["DELETE_SUBJECT", "DROPPED", "FAILED", "ROUTED", "BatchOutcome",
           "DestinationTable", "decide_batch", "decide_table"]

ROUTED, DROPPED, DELETE_SUBJECT, FAILED = 0, 1, 2, 3
_NO_REASON = -1  # in a destination's reason codes: nothing blocks the row there


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
    prep = prepare(policy, source_schema)
    columns, irregular = to_arrow(records, prep)
    return _decide_columns(prep, columns, irregular, records, states, keys, policy)


def decide_table(
    source_schema: str,
    table: pa.Table,
    states: Sequence[SubjectState | None],
    keys: Sequence[bytes],
    policy: Policy,
) -> BatchOutcome:
    """``decide_batch`` for events already in columns (a decoder's Arrow output: enums as
    strings, timestamps as int64 millis); a field the table lacks reads as None. States and
    keys given as ``Factored`` are taken as they are factored (the worker's lookups)."""
    prep = prepare(policy, source_schema)
    n = table.num_rows
    # Columns found by name once: a lookup by name per field made a schema each time.
    by_name = dict(zip(table.column_names, table.columns, strict=True))
    columns = {
        name: (cast_to(_one_array(by_name[name]), type_) if name in by_name
               else pa.nulls(n, type_))
        for name, type_ in prep.fields
    }
    irregular = np.zeros(n, bool)
    for name in prep.required:
        if columns[name].null_count:
            irregular |= ~np.asarray(columns[name].is_valid())
    return _decide_columns(prep, columns, irregular, TableRecords(table), states, keys, policy)


def _one_array(column: pa.ChunkedArray) -> pa.Array:
    """The column as one array: its chunk if it has one (``combine_chunks`` copies it)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _decide_columns(prep: PreparedSchema, columns: dict[str, pa.Array], irregular: np.ndarray,
                    records: Sequence[Mapping[str, Any]], states: Sequence[SubjectState | None],
                    keys: Sequence[bytes], policy: Policy) -> BatchOutcome:
    if isinstance(keys, Factored):  # joined in Python: an Arrow array of them costs 10x
        key_bytes, key_offsets = _joined(keys.values)
        key_index = keys.codes
    else:
        encoded_keys = pa.array(keys, pa.binary()).dictionary_encode()
        key_bytes, key_offsets = string_buffers(encoded_keys.dictionary)
        key_index = encoded_keys.indices.to_numpy(zero_copy_only=False)
    short = np.diff(key_offsets) < MIN_KEY_BYTES
    irregular |= short[key_index]
    rows, subject_states = BatchRows(records, columns), BatchStates(states, policy)
    pads = pad_states(key_bytes, key_offsets)
    while True:
        try:
            return _decide(prep, rows, subject_states, records, states, keys, policy, irregular,
                           OutputContext(columns, key_index, pads, policy.processing_region,
                                         policy.version))
        except UnbuildableRows as exc:  # rare: a generalizer raised; the row engine decides
            irregular = irregular.copy()
            irregular[exc.rows] = True


def _joined(values: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The bytes and int64 offsets (one more than values) of ``values`` laid end to end."""
    offsets = np.zeros(len(values) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, values), np.int64, len(values)), out=offsets[1:])
    return np.frombuffer(b"".join(values), np.uint8), offsets


def _decide(prep: PreparedSchema, rows: BatchRows, st: BatchStates,
            records: Sequence[Mapping[str, Any]], states: Sequence[SubjectState | None],
            keys: Sequence[bytes], policy: Policy, irregular: np.ndarray, ctx: OutputContext
            ) -> BatchOutcome:
    plan, n = prep.plan, rows.n
    reason = _Reasons()
    kinds = np.full(n, ROUTED, np.int8)
    reasons = np.zeros(n, np.int32)
    event_time = _filled(rows.columns["event_time"], 0)
    age = st.age_class(event_time)
    no_state = st.none[st.row]
    deleted = ~no_state & (age == UNDER_13) & ~irregular  # C8
    kinds[deleted] = DELETE_SUBJECT
    open_ = ~irregular & ~deleted
    for gate in plan.gates:  # first switched-off gate drops the event
        applies = np.ones(n, bool) if gate.field is None else rows.isin(gate.field, gate.values)
        on = (st.flag(gate.flag) if gate.scope == "subject"
              else server_switches(gate.flag, rows, st, policy))
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
        # C21 (a destination with since_index 0 never drops for it: no array to make)
        conditions: list[np.ndarray | None] = [
            dest.since_index > version_index if dest.since_index > 0 else None]
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
            conditions.append(~server_switches(flag, rows, st, policy))
            choices.append(reason(dropped))
        code = _first_reason(n, conditions, choices)
        code[~active] = _NO_REASON
        routed = active & (code == _NO_REASON)
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


def _filled(column: pa.Array, fill: int) -> np.ndarray:
    """A numeric column as numpy, nulls as ``fill`` (no fill kernel call when it has none)."""
    return (column.fill_null(fill) if column.null_count else column).to_numpy(
        zero_copy_only=False)


def _first_reason(n: int, conditions: list[np.ndarray | None], choices: list[int]
                  ) -> np.ndarray:
    """Per row the choice of its first true condition (None: true nowhere), else
    ``_NO_REASON``: ``np.select``, written last condition first so that earlier ones
    overwrite (np.select costs about 60 us a call here, most of it checking and
    broadcasting its arguments)."""
    code = np.full(n, _NO_REASON, np.int32)
    for condition, choice in zip(reversed(conditions), reversed(choices), strict=True):
        if condition is not None:
            code[condition] = choice
    return code


def _decide_rows(irregular: np.ndarray, prep: PreparedSchema, records: Sequence[Mapping[str, Any]],
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
                except CONVERSION_ERRORS as exc:
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
