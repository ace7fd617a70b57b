"""The worker's event path in columns: raw messages -> outputs, drops and dead letters.

Stage 2 of the columnar hot path (docs/decisions.md, D10). A batch of raw messages
(from any of the worker's partitions, each with its partition's ``SubjectStore``) is
decoded with ``avro_columns.decode_columns`` into one Arrow table per schema, checked
(schema allowed on its topic, key equal to ``subject_id``), split into erased subjects
(C15) and the rest, decided with ``batch_engine.decide_table`` against each row's consent
state at its own event time, and every destination's table is encoded with
``arrow_avro``; a schema's group under ``COLUMNAR_FROM`` rows is decided by
``engine.decide`` and encoded by ``codec.encode`` instead (the kernels' fixed cost). The
outcome of each message is the one ``BatchProcessor.process_rows`` (the row reference)
gives it, with the same error classes (and, but for the decoder's, messages), and per
topic the records come out in the same order: batch order, a message's outputs in plan
order. Outputs and drop records are returned as per-topic ``OutputBatch``es; dead letters
(original key, bytes and headers) and key-vault entries as ``Record``s.

One difference, on purpose: an output record that does not encode (``arrow_avro`` gives
a null body) makes its event a dead letter (``MalformedRecordError``, none of its outputs
written) where the row path's ``codec.encode`` would raise out of the batch and stop the
worker on the same message after every restart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streams import avro_columns, engine
from streams.aggregates import DIMENSIONS, TOKEN_HEX, WINDOW_MS, Contributions
from streams.arrow_avro import encode_framed
from streams.batch_accounting import (
    Accounting,
    BatchResult,
    InvalidEvent,
    Message,
    OutputBatch,
    SubjectStore,
)
from streams.batch_engine import (
    DELETE_SUBJECT,
    DROPPED,
    FAILED,
    ROUTED,
    BatchOutcome,
    decide_table,
)
from streams.batch_inputs import Factored, as_records
from streams.batch_outputs import string_buffers
from streams.codec import Codec, FramingError, MalformedRecordError, default_codec
from streams.consent import SubjectState
from streams.decisions import DeleteSubject, Routed
from streams.errors import SerializationError
from streams.hmac_kernel import pad_states, pseudonyms
from streams.ledger import Ledger
from streams.policy import Policy
from streams.topics import Catalog

__all__ = ["COLUMNAR_FROM", "ColumnarEvents", "map_values", "play_cells"]

# A schema's group of a batch smaller than this is decided by the row engine: below it the
# batch engine's and encoder's fixed cost per group (3-7 ms) is more than the row engine's
# 40-80 us per row; at about 100 rows the two cost the same (D13).
COLUMNAR_FROM = 100
T = TypeVar("T")
_UNDER_13 = ("under_13", "C8")
_ERASED = ("subject_erased", "C15")


class _Placed:
    """A batch's records by the batch position of the message each accounts for. Per
    topic they come out in batch order (the order a partition can show), a message's
    outputs in plan order (the sort is stable)."""

    def __init__(self) -> None:
        self.chunks: dict[str, list[tuple[np.ndarray, list[bytes | None], list[bytes]]]] = {}
        # Dead letters too: (position, message, why), encoded in one table.
        self.letters: list[tuple[int, Message, Exception]] = []
        # Drop records wait here, to be encoded in one table.
        self.drop_positions: list[int] = []
        self.drop_messages: list[Message] = []
        self.drop_ids: list[str | None] = []
        self.drop_reasons: list[str] = []
        self.drop_clauses: list[str] = []

    def add(self, topic: str, positions: np.ndarray, keys: list[bytes | None],
            values: list[bytes]) -> None:
        self.chunks.setdefault(topic, []).append((positions, keys, values))

    def letter(self, position: int, msg: Message, exc: Exception) -> None:
        self.letters.append((position, msg, exc))

    def drop(self, position: int, msg: Message, event_id: str | None, reason: str,
             clause: str) -> None:
        self.drop_positions.append(position)
        self.drop_messages.append(msg)
        self.drop_ids.append(event_id)
        self.drop_reasons.append(reason)
        self.drop_clauses.append(clause)

    def finish(self, accounting: Accounting, now: int, result: BatchResult) -> None:
        if self.drop_positions:
            topic, values = accounting.drop_records(self.drop_messages, self.drop_ids,
                                                    self.drop_reasons, self.drop_clauses, now)
            self.add(topic, np.array(self.drop_positions, np.int64), [None] * len(values),
                     values)
            for (reason, clause), n in Counter(zip(self.drop_reasons, self.drop_clauses,
                                                   strict=True)).items():
                accounting.count_drops(reason, clause, n, result)
        if self.letters:
            _, messages, errors = zip(*sorted(self.letters, key=lambda x: x[0]), strict=True)
            result.records += accounting.dead_letters(messages, errors, result)
        for topic, chunks in self.chunks.items():
            if len(chunks) == 1 and bool(np.all(np.diff(chunks[0][0]) > 0)):
                result.batches.append(OutputBatch(topic, chunks[0][1], chunks[0][2]))
                continue
            order = np.argsort(np.concatenate([c[0] for c in chunks]), kind="stable")
            result.batches.append(OutputBatch(topic, _reordered([c[1] for c in chunks], order),
                                              _reordered([c[2] for c in chunks], order)))


class _Group(NamedTuple):
    """The rows of one schema's part of a batch that are decided."""

    schema: str
    table: pa.Table
    positions: np.ndarray  # each row's position in the batch
    subjects: list[str]


def _part_of(factored: Factored[T], rows: slice) -> Factored[T]:
    """``rows`` of a batch-wide factored sequence, with only the values those rows use
    (the engine works once per value it is given)."""
    used, codes = np.unique(factored.codes[rows], return_inverse=True)
    return Factored([factored.values[i] for i in used.tolist()], codes.reshape(-1))


class _Topics:
    """The source topic of each message of a batch, as a small code per message."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self._code = {t: c for c, t in enumerate(dict.fromkeys(names))}  # a batch has few
        self._codes = np.fromiter(map(self._code.__getitem__, names), np.int64, len(names))

    def among(self, index: np.ndarray, topics: frozenset[str]) -> np.ndarray:
        """Per message ``index[i]``: whether it came from one of ``topics``."""
        return np.isin(self._codes[index], [c for t, c in self._code.items() if t in topics])


def _reordered(parts: list[list[Any]], order: np.ndarray) -> list[Any]:
    """The concatenated ``parts`` in ``order`` (object arrays: no Python loop per item)."""
    items = np.empty(sum(map(len, parts)), object)
    at = 0
    for part in parts:
        items[at:at + len(part)] = part
        at += len(part)
    return items[order].tolist()


class ColumnarEvents:
    """Decides batches of raw messages of one catalog over Arrow columns."""

    def __init__(self, catalog: Catalog, codec: Codec, policy: Policy, ledger: Ledger,
                 accounting: Accounting, allowed: Mapping[str, frozenset[str]]) -> None:
        self._codec = codec
        self._policy = policy
        self._ledger = ledger
        self._acct = accounting
        self._topics_of = {s: frozenset(t for t, names in allowed.items() if s in names)
                           for names in allowed.values() for s in names}
        # destination -> (topic, Avro schema, frame header, output schema name)
        self._outputs: dict[str, tuple[str, Mapping[str, Any], bytes, str]] = {}
        for name, dest in policy.destinations.items():
            info = codec.catalog.by_name(dest.output_schema)
            self._outputs[name] = (catalog.destination(name).name, info.raw,
                                   codec.header(info.id), info.name)

    def process(self, batches: Sequence[tuple[Sequence[Message], SubjectStore]],
                result: BatchResult, now: int) -> None:
        """Decide every message of ``batches`` (each with its partition's store)."""
        messages = [m for msgs, _ in batches for m in msgs]
        if not messages:
            return
        owner = np.repeat(np.arange(len(batches)), [len(msgs) for msgs, _ in batches])
        stores = [store for _, store in batches]
        topics = [m.topic() or "" for m in messages]
        result.events_in.update(topics)
        placed = _Placed()
        decoded = self._decode([m.value() for m in messages])
        for i, exc in decoded.errors.items():
            placed.letter(i, messages[i], exc)
        keys = pa.array([m.key() or b"" for m in messages], pa.binary())
        batch_topics = _Topics(topics)
        groups = [group for part in decoded.parts
                  if (group := self._live_rows(part, messages, batch_topics, keys, placed,
                                               result)) is not None]
        if groups:
            # A subject's events span several schema groups: looked up once a batch.
            times = [g.table.column("event_time").fill_null(0).to_numpy() for g in groups]
            states, subject_keys = self._subjects(
                pa.chunked_array([c for g in groups for c in g.table.column("subject_id").chunks],
                                 pa.string()),
                [s for g in groups for s in g.subjects], np.concatenate(times),
                owner[np.concatenate([g.positions for g in groups])], stores, result, now)
            at = 0
            for group, group_times in zip(groups, times, strict=True):
                rows = slice(at, at + group.table.num_rows)
                at = rows.stop
                self._decide(group, group_times, _part_of(states, rows),
                             _part_of(subject_keys, rows), messages, placed, result)
        placed.finish(self._acct, now, result)

    def _decode(self, values: list[bytes | None]) -> avro_columns.DecodedBatch:
        """``decode_columns``, with the row codec's error for a value-less message."""
        missing = [i for i, v in enumerate(values) if v is None]
        good = values if not missing else [v for v in values if v is not None]
        if self._codec is default_codec():
            batch = avro_columns.decode_columns(good)  # type: ignore[arg-type]
        else:  # a test's own catalog: the reference decoder takes its codec
            batch = avro_columns.decode_rows(good, self._codec)  # type: ignore[arg-type]
        if not missing:
            return batch
        where = np.flatnonzero(np.array([v is not None for v in values]))
        parts = tuple(avro_columns.SchemaRows(p.schema, p.table, where[p.index])
                      for p in batch.parts)
        errors: dict[int, SerializationError] = {
            int(where[i]): exc for i, exc in batch.errors.items()}
        errors.update({i: FramingError("expected bytes, got NoneType") for i in missing})
        return avro_columns.DecodedBatch(parts, errors)

    def _live_rows(self, part: avro_columns.SchemaRows, messages: list[Message],
                   topics: _Topics, keys: pa.Array, placed: _Placed, result: BatchResult
                   ) -> _Group | None:
        """The rows of one schema's part to decide; the others (wrong topic, another
        subject's key, an erased subject) accounted for here."""
        schema, table, index = part.schema.name, part.table, part.index
        positions = index.tolist()
        allowed = self._topics_of.get(schema, frozenset())
        on_topic = topics.among(index, allowed)
        subject_column = table.column("subject_id") if "subject_id" in table.column_names \
            else pa.nulls(table.num_rows, pa.string())
        keyed = np.asarray(pc.equal(subject_column.cast(pa.binary()), keys.take(index))
                           .fill_null(False))
        valid = on_topic & keyed
        if not valid.all():
            event_ids = _strings(table, "event_id")
            for r in np.flatnonzero(~valid).tolist():
                i = positions[r]
                exc = InvalidEvent(f"{schema} events do not belong on {topics.names[i]}"
                                   if not on_topic[r] else
                                   f"key does not match subject_id of {schema} {event_ids[r]}")
                placed.letter(i, messages[i], exc)
        subjects = subject_column.to_pylist()
        live = valid.copy()
        if self._ledger.refs:
            erased = {s for s in {subjects[r] for r in np.flatnonzero(valid).tolist()}
                      if self._ledger.is_erased(s)}
            if erased:
                event_ids = _strings(table, "event_id")
                for r in np.flatnonzero(valid).tolist():
                    if subjects[r] in erased:
                        live[r] = False
                        placed.drop(positions[r], messages[positions[r]], event_ids[r], *_ERASED)
        rows = np.flatnonzero(live)
        if not len(rows):
            return None
        return _Group(schema, table if len(rows) == len(live) else table.take(rows),
                      index[rows], [subjects[r] for r in rows.tolist()])

    def _decide(self, group: _Group, times: np.ndarray,
                states: Factored[SubjectState | None], subject_keys: Factored[bytes],
                messages: list[Message], placed: _Placed, result: BatchResult) -> None:
        schema, table, index, subjects = group
        if table.num_rows < COLUMNAR_FROM:
            self._decide_rows(schema, table, index, subjects, states, subject_keys, messages,
                              placed, result)
            return
        outcome = decide_table(schema, table, states, subject_keys, self._policy)
        kinds, errors = outcome.kinds.copy(), dict(outcome.errors)
        encoded = []
        for dest in outcome.tables:
            topic, avro_schema, header, _ = self._outputs[dest.destination]
            bodies = encode_framed(dest.table, avro_schema, header)
            if bodies.null_count:  # does not encode: the event is a dead letter (docstring)
                failed = dest.rows[~np.asarray(bodies.is_valid())]
                kinds[failed[kinds[failed] == ROUTED]] = FAILED
                for r in failed.tolist():
                    errors.setdefault(r, MalformedRecordError(
                        f"{dest.output_schema} record of {schema} "
                        f"{table.column('event_id')[r].as_py()} does not encode"))
            encoded.append((dest, topic, bodies))
        routed = kinds == ROUTED
        for dest, topic, values in encoded:
            keep = routed[dest.rows]
            rows = dest.rows[keep] if not keep.all() else dest.rows
            if not len(rows):
                continue
            out = dest.table.filter(pa.array(keep)) if not keep.all() else dest.table
            framed = (values.filter(pa.array(keep)) if not keep.all() else values).to_pylist()
            if "subject_pseudonym" in out.column_names:  # never empty: hex, or null
                record_keys = out.column("subject_pseudonym").cast(pa.binary()).to_pylist()
            else:
                record_keys = [None] * len(rows)
            placed.add(topic, index[rows], record_keys, framed)
            result.out[dest.destination] += len(rows)
            if dest.destination == "analytics":
                assert result.contributions is not None
                _contribute(result.contributions, out, [subjects[r] for r in rows.tolist()])
        result.outcomes["routed"] += int(routed.sum())
        result.event_times += times[routed].tolist()
        self._account_rest(outcome, kinds, errors, index, subjects, table, messages, placed,
                           result)

    def _subjects(self, column: pa.ChunkedArray, subjects: list[str], times: np.ndarray,
                  owners: np.ndarray, stores: list[SubjectStore], result: BatchResult,
                  now: int) -> tuple[Factored[SubjectState | None], Factored[bytes]]:
        """Per row (subject ids ``column``) its consent state at its event time (D3) and
        its subject key (a new subject gets one, in order of first appearance), looked up
        once per subject and handed over factored (per subject, and each row's subject)."""
        codes = column.combine_chunks().dictionary_encode()
        pairs = (codes.indices.to_numpy(zero_copy_only=False).astype(np.int64) * len(stores)
                 + owners)
        _, first, inverse = np.unique(pairs, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        n = len(first)
        state_of: list[SubjectState | None] = [None] * n
        key_of: list[bytes] = [b""] * n
        far = int(np.iinfo(np.int64).min)
        since = [far] * n  # the one state holds from here on
        varying = np.zeros(n, bool)  # more than one state: per row
        histories: list[Any] = [None] * n
        order = np.argsort(first, kind="stable")  # first appearance: new keys in that order
        owner_of = owners.tolist()
        for j, r in zip(order.tolist(), first[order].tolist(), strict=True):  # per subject
            subject, store = subjects[r], stores[owner_of[r]]
            history = histories[j] = store.histories.get(subject)
            key = store.keys.get(subject)
            key_of[j] = key if key is not None else self._acct.subject_key(subject, store,
                                                                          now, result)
            if history is not None:
                if len(history.times) == 1:
                    state_of[j], since[j] = history.states[0], history.times[0]
                else:
                    varying[j] = True
        state_index = inverse.copy()
        late = times < np.array(since, np.int64)[inverse]
        for r in np.flatnonzero(varying[inverse] | late).tolist():
            history = histories[inverse[r]]
            state_index[r] = len(state_of)  # this row's own state
            state_of.append(history.at(int(times[r])) if history is not None else None)
        return Factored(state_of, state_index), Factored(key_of, inverse)

    def _decide_rows(self, schema: str, table: pa.Table, index: np.ndarray,
                     subjects: list[str], states: Sequence[SubjectState | None],
                     subject_keys: Sequence[bytes], messages: list[Message], placed: _Placed,
                     result: BatchResult) -> None:
        """A small group: ``engine.decide`` and ``codec.encode`` per row, the same outcomes
        (an output that does not encode makes a dead letter here too)."""
        assert result.contributions is not None
        contribute, encode, outputs = result.contributions.add, self._codec.encode, self._outputs
        chunks: dict[str, tuple[list[int], list[bytes | None], list[bytes]]] = {}
        for r, (record, i) in enumerate(zip(as_records(table), index.tolist(), strict=True)):
            try:
                decision = engine.decide(schema, record, states[r], subject_keys[r],
                                         self._policy)
                if isinstance(decision, Routed):
                    values = [encode(outputs[o.destination][3], o.record)
                              for o in decision.outputs]
            except SerializationError as exc:
                placed.letter(i, messages[i], exc)
                continue
            if isinstance(decision, Routed):
                for out, value in zip(decision.outputs, values, strict=True):
                    chunk = chunks.setdefault(outputs[out.destination][0], ([], [], []))
                    pseudonym = out.record.get("subject_pseudonym")
                    chunk[0].append(i)
                    chunk[1].append(pseudonym.encode() if pseudonym else None)
                    chunk[2].append(value)
                    result.out[out.destination] += 1
                    if out.destination == "analytics":
                        contribute(out.record, subjects[r])
                result.outcomes["routed"] += 1
                result.event_times.append(record["event_time"])
            else:
                placed.drop(i, messages[i], record.get("event_id"), decision.reason,
                            decision.clause)
                if isinstance(decision, DeleteSubject):
                    result.deletions.add(subjects[r])
        for topic, (positions, keys, values) in chunks.items():
            placed.add(topic, np.array(positions, np.int64), keys, values)

    def _account_rest(self, outcome: BatchOutcome, kinds: np.ndarray,
                      errors: Mapping[int, SerializationError], index: np.ndarray,
                      subjects: list[str], table: pa.Table, messages: list[Message],
                      placed: _Placed, result: BatchResult) -> None:
        """Drop records and dead letters of the rows not routed."""
        rest = np.flatnonzero(kinds != ROUTED)
        if not len(rest):
            return
        event_ids = _strings(table, "event_id")
        for r in rest.tolist():
            i, kind = int(index[r]), kinds[r]
            if kind == DROPPED:
                dropped = outcome.drops[outcome.reasons[r]]
                placed.drop(i, messages[i], event_ids[r], dropped.reason, dropped.clause)
            elif kind == DELETE_SUBJECT:
                placed.drop(i, messages[i], event_ids[r], *_UNDER_13)
                result.deletions.add(subjects[r])
            else:
                placed.letter(i, messages[i], errors[r])


def _strings(table: pa.Table, name: str) -> list[Any]:
    return table.column(name).to_pylist() if name in table.column_names \
        else [None] * table.num_rows


def play_cells(analytics: pa.Table) -> tuple[np.ndarray, np.ndarray, list[pa.Array]]:
    """``aggregates.cell_of`` over a table of analytics records: the rows that count in a
    cell, their windows and their dimension columns."""
    none: tuple[np.ndarray, np.ndarray, list[pa.Array]] = (
        np.zeros(0, np.int64), np.zeros(0, np.int64), [])
    if not analytics.num_rows or "attributes" not in analytics.column_names:
        return none
    plays = pc.and_(pc.equal(analytics.column("event_type"), "play"),
                    pc.equal(analytics.column("source"), "PlaybackEvent")).fill_null(False)
    rows = np.flatnonzero(np.asarray(plays))  # a small part: read only their attributes
    if not len(rows):
        return none
    attributes = analytics.column("attributes").take(pa.array(rows)).combine_chunks()
    content_source, *dims = map_values(attributes, ("content_source", *DIMENSIONS))
    # ``or "unknown"``: an absent or empty value is unknown, and no title means no cell.
    dims = [pc.if_else(pc.equal(d, "").fill_null(True), "unknown", d) for d in dims]
    counts = pc.and_(pc.equal(content_source, "catalog"),
                     pc.not_equal(dims[0], "unknown")).fill_null(False)
    kept = np.flatnonzero(np.asarray(counts))
    rows = rows[kept]
    times = analytics.column("event_time").take(pa.array(rows)).to_numpy()
    return rows, times - times % WINDOW_MS, [pc.take(d, pa.array(kept)) for d in dims]


def map_values(maps: pa.MapArray, names: Sequence[str]) -> list[pa.Array]:
    """Per name, each map's value under that key (null where it has none): Arrow's
    ``map_lookup``, for maps whose keys are unique, from one comparison over the flat
    keys (several times faster)."""
    offsets = maps.offsets.to_numpy()  # absolute positions in the (unsliced) keys
    keys = maps.keys.slice(offsets[0], offsets[-1] - offsets[0])
    found = []
    for name in names:
        hits = np.flatnonzero(np.asarray(pc.equal(keys, name))) + offsets[0]
        where = np.full(len(maps), -1, np.int64)
        where[np.searchsorted(offsets, hits, side="right") - 1] = hits
        found.append(maps.items.take(pa.array(where, mask=where < 0)))
    return found


def _contribute(contributions: Contributions, analytics: pa.Table, subjects: list[str]) -> None:
    rows, windows, dims = play_cells(analytics)
    if len(rows):
        players = pa.array([subjects[r] for r in rows.tolist()], pa.string())
        contributions.add_columns(windows, dims,
                                  subject_tokens(contributions.key, windows, players))


def subject_tokens(key: bytes, windows: np.ndarray, subjects: pa.Array) -> pa.Array:
    """``aggregates.subject_token`` of every (window, subject) row, in one native call."""
    messages = pc.binary_join_element_wise(pa.array(windows, pa.int64()).cast(pa.string()),
                                           subjects, ":")
    data, offsets = string_buffers(messages)
    return pseudonyms(pad_states(np.frombuffer(key, np.uint8), np.array([0, len(key)])),
                      np.zeros(len(messages), np.int64), b"", data, offsets[:-1], offsets[1:],
                      TOKEN_HEX)
