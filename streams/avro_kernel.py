"""The native part of the batch decoder: schemaless Avro bodies -> typed arrays (numba).

One compiled function reads every record of one schema in a batch, field by field, as a
small *program* says (one row per field: kind, null branch, output slot, symbol count), so
the machine code is the same for every schema and compiled once (cached on disk). Values
land in flat arrays: numbers in ``ints``/``floats``, strings and bytes as (start, length)
spans into the batch buffer, maps and arrays as per-row entry counts plus entry arrays.
An array of flat records (the consent record's servers) gives each item field its own
entry slot, filled as the item program ``items[slot]`` of the array says.
``avro_columns`` turns those into Arrow arrays without touching a value in Python.

Every record is checked as strictly as the Avro spec reads: each read stays inside the
record's own bytes, and the record must end exactly at its last byte, so a byte moved from
one message to the next fails both. Strings must be valid UTF-8 (what Python's strict
decoder accepts). A record that fails leaves no trace in the outputs (its row and entries
are reused by the next record) and gets an error code in ``status``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from streams.native_memory import load_f32, load_f64, load_u64, memcpy

# Field kinds of a program row.
LONG, INT, BOOLEAN, DOUBLE, FLOAT, STRING, BYTES, ENUM = 0, 1, 2, 3, 4, 5, 6, 7
MAP_STRING, MAP_DOUBLE, MAP_LONG, ARRAY_STRING, ARRAY_RECORD = 8, 9, 10, 11, 12
# Program columns. An ARRAY_RECORD row's SYMBOLS is its item record's field count.
KIND, NULL_BRANCH, SLOT, SYMBOLS = 0, 1, 2, 3
NOT_A_UNION = -1

# Per-record status codes (0 = decoded).
OK, TRUNCATED, BAD_VARINT, NEGATIVE_LENGTH, BAD_BRANCH, BAD_ENUM = 0, 1, 2, 3, 4, 5
BAD_UTF8, TRAILING, INT_RANGE, BAD_BOOLEAN = 6, 7, 8, 9
REASONS = {
    TRUNCATED: "truncated body",
    BAD_VARINT: "varint longer than 64 bits",
    NEGATIVE_LENGTH: "negative length or block count",
    BAD_BRANCH: "union branch index out of range",
    BAD_ENUM: "enum index out of range",
    BAD_UTF8: "invalid UTF-8 in a string",
    TRAILING: "trailing bytes after the record",
    INT_RANGE: "int out of the 32-bit range",
    BAD_BOOLEAN: "boolean byte other than 0 or 1",
}
# ``decode`` returns this instead of a row count when the entry arrays are too small.
NEEDS_ROOM = -1
HEADER = 5  # Confluent framing: magic byte + 4-byte schema id
_HIGH_BITS = np.uint64(0x8080808080808080)  # a word of ASCII bytes has none of these set


@njit(cache=True, nogil=True, inline="always")
def _long(buf: np.ndarray, pos: int, end: int) -> tuple[int, int]:
    """A zig-zag varint at ``pos``: (value, next position), or (error code, -1)."""
    if pos < end and buf[pos] < 0x80:  # one byte: lengths, branches, counts, small values
        v = int(buf[pos])
        return (v >> 1) ^ -(v & 1), pos + 1
    acc = np.uint64(0)
    shift = np.uint64(0)
    while True:
        if pos >= end:
            return TRUNCATED, -1
        b = np.uint64(buf[pos])
        pos += 1
        if shift == 63 and b > 1:  # the tenth byte holds the 64th bit only
            return BAD_VARINT, -1
        acc |= (b & np.uint64(0x7F)) << shift
        if b < 0x80:
            break
        shift += np.uint64(7)
    return int(np.int64(acc >> np.uint64(1)) ^ -np.int64(acc & np.uint64(1))), pos


@njit(cache=True, nogil=True, inline="always")
def _utf8_ok(buf: np.ndarray, pos: int, end: int) -> bool:
    """Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF), as Python decodes.
    ASCII goes a word at a time: most strings are ASCII, and a byte at a time costs about
    ten instructions."""
    at = buf.ctypes.data
    while pos < end:
        left = end - pos
        if left >= 8:
            if load_u64(at + pos) & _HIGH_BITS == 0:
                pos += 8
                continue
        elif pos + 8 <= buf.size:  # the tail, in a word read from inside the buffer
            tail = np.uint64((1 << (8 * left)) - 1)  # its bytes (little-endian)
            if load_u64(at + pos) & tail & _HIGH_BITS == 0:
                return True
        b = buf[pos]
        if b < 0x80:
            pos += 1
            continue
        if 0xC2 <= b <= 0xDF:
            need, lo, hi = 1, 0x80, 0xBF
        elif b == 0xE0:
            need, lo, hi = 2, 0xA0, 0xBF
        elif b == 0xED:
            need, lo, hi = 2, 0x80, 0x9F
        elif 0xE1 <= b <= 0xEF:
            need, lo, hi = 2, 0x80, 0xBF
        elif b == 0xF0:
            need, lo, hi = 3, 0x90, 0xBF
        elif 0xF1 <= b <= 0xF3:
            need, lo, hi = 3, 0x80, 0xBF
        elif b == 0xF4:
            need, lo, hi = 3, 0x80, 0x8F
        else:
            return False
        if pos + need >= end:
            return False
        c = buf[pos + 1]
        if c < lo or c > hi:
            return False
        for k in range(2, need + 1):
            c = buf[pos + k]
            if c < 0x80 or c > 0xBF:
                return False
        pos += need + 1
    return True


@njit(cache=True, nogil=True, inline="always")
def _span(buf: np.ndarray, pos: int, end: int, text: bool) -> tuple[int, int]:
    """A length-prefixed string/bytes at ``pos``: (length, next position) or (code, -1)."""
    n, pos = _long(buf, pos, end)
    if pos < 0:
        return n, -1
    if n < 0:
        return NEGATIVE_LENGTH, -1
    if n > end - pos:
        return TRUNCATED, -1
    if text and not _utf8_ok(buf, pos, pos + n):
        return BAD_UTF8, -1
    return n, pos + n


@njit(cache=True, nogil=True)
def _string_entry(buf: np.ndarray, pos: int, end: int, out: np.ndarray, slot: int, e: int
                  ) -> tuple[int, int]:
    """A string at ``pos`` kept as the span ``out[slot, e]``: (OK, next) or (code, -1).
    Not inlined (maps and arrays are rare in the inputs): inlining ``_span`` three times
    instead of once made the first compile of ``decode`` 1.6x longer, for no fewer
    instructions."""
    n, nxt = _span(buf, pos, end, True)
    if nxt < 0:
        return n, -1
    out[slot, e, 0] = nxt - n
    out[slot, e, 1] = n
    return OK, nxt


@njit(cache=True, nogil=True)
def _record_item(buf: np.ndarray, pos: int, end: int, program: np.ndarray, e: int,
                 spans: np.ndarray, numbers: np.ndarray, reals: np.ndarray,
                 present: np.ndarray) -> tuple[int, int]:
    """One item of an array of records at ``pos``, field by field as ``program`` (the
    item program: one row per field, SLOT its entry slot) says, into entry ``e``: (OK,
    next position) or (code, -1). Not inlined, as ``_string_entry``; its scalar reads
    repeat ``decode``'s rather than share a helper with its hot loop (D17's tuning)."""
    buf_at = buf.ctypes.data
    for j in range(program.shape[0]):
        kind = program[j, KIND]
        s = program[j, SLOT]
        null_branch = program[j, NULL_BRANCH]
        if null_branch != NOT_A_UNION:
            branch, pos = _long(buf, pos, end)
            if pos < 0:
                return branch, -1
            if branch != 0 and branch != 1:
                return BAD_BRANCH, -1
            if branch == null_branch:  # zeros, as ``decode`` writes for a null
                present[s, e] = 0
                spans[s, e, 0] = 0
                spans[s, e, 1] = 0
                numbers[s, e] = 0
                reals[s, e] = 0.0
                continue
        present[s, e] = 1
        if kind in (STRING, BYTES):
            n, nxt = _span(buf, pos, end, kind == STRING)
            if nxt < 0:
                return n, -1
            spans[s, e, 0] = nxt - n
            spans[s, e, 1] = n
            pos = nxt
        elif kind in (LONG, INT, ENUM):
            v, pos = _long(buf, pos, end)
            if pos < 0:
                return v, -1
            if kind == INT and (v < -2147483648 or v > 2147483647):
                return INT_RANGE, -1
            if kind == ENUM and (v < 0 or v >= program[j, SYMBOLS]):
                return BAD_ENUM, -1
            numbers[s, e] = v
        elif kind == BOOLEAN:
            if pos >= end:
                return TRUNCATED, -1
            if buf[pos] > 1:
                return BAD_BOOLEAN, -1
            numbers[s, e] = buf[pos]
            pos += 1
        elif kind == DOUBLE:
            if end - pos < 8:
                return TRUNCATED, -1
            reals[s, e] = load_f64(buf_at + pos)
            pos += 8
        else:  # FLOAT
            if end - pos < 4:
                return TRUNCATED, -1
            reals[s, e] = load_f32(buf_at + pos)
            pos += 4
    return OK, pos


@njit(cache=True, nogil=True)
def decode(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, program: np.ndarray,
           items: np.ndarray, ints: np.ndarray, floats: np.ndarray, spans: np.ndarray,
           valid: np.ndarray, counts: np.ndarray, keys: np.ndarray, values: np.ndarray,
           numbers: np.ndarray, reals: np.ndarray, present: np.ndarray, rows: np.ndarray,
           status: np.ndarray) -> int:
    """Decode the records ``buf[starts[i] + HEADER : ends[i]]`` with ``program``; an
    ARRAY_RECORD field in collection slot c reads its items with ``items[c]``, whose
    fields write entry slots of ``values`` (strings), ``numbers``, ``reals`` and
    ``present`` (0 for a null).

    Row r of every output holds the r-th record that decoded; ``rows[r]`` is its i. Every
    value of the first (returned) rows is written, nulls as zeros, so the outputs need not
    start zeroed. Returns the number of rows, or ``NEEDS_ROOM`` if a collection outgrew
    ``keys``.
    """
    n_fields = program.shape[0]
    room = keys.shape[1]
    used = np.zeros(counts.shape[0], np.int64)  # entries taken per collection slot
    taken = np.zeros(counts.shape[0], np.int64)
    buf_at = buf.ctypes.data
    r = 0
    for i in range(starts.shape[0]):
        pos = starts[i] + HEADER
        end = ends[i]
        for c in range(counts.shape[0]):
            taken[c] = used[c]
        code = OK
        for f in range(n_fields):
            kind = program[f, KIND]
            slot = program[f, SLOT]
            null_branch = program[f, NULL_BRANCH]
            if null_branch != NOT_A_UNION:
                branch, pos = _long(buf, pos, end)
                if pos < 0:
                    code = branch
                    break
                if branch != 0 and branch != 1:
                    code = BAD_BRANCH
                    break
                if branch == null_branch:  # zero the row's slot (the outputs start empty)
                    valid[f, r] = 0
                    if kind >= MAP_STRING:
                        counts[slot, r] = 0
                    elif kind in (STRING, BYTES):
                        spans[slot, r, 0] = 0
                        spans[slot, r, 1] = 0
                    elif kind in (DOUBLE, FLOAT):
                        floats[slot, r] = 0.0
                    else:
                        ints[slot, r] = 0
                    continue
            valid[f, r] = 1
            if kind in (STRING, BYTES):  # the most common kind first
                n, nxt = _span(buf, pos, end, kind == STRING)
                if nxt < 0:
                    code = n
                    break
                spans[slot, r, 0] = nxt - n
                spans[slot, r, 1] = n
                pos = nxt
            elif kind in (LONG, INT, ENUM):
                v, pos = _long(buf, pos, end)
                if pos < 0:
                    code = v
                    break
                if kind == INT and (v < -2147483648 or v > 2147483647):
                    code = INT_RANGE
                    break
                if kind == ENUM and (v < 0 or v >= program[f, SYMBOLS]):
                    code = BAD_ENUM
                    break
                ints[slot, r] = v
            elif kind == BOOLEAN:
                if pos >= end:
                    code = TRUNCATED
                    break
                if buf[pos] > 1:
                    code = BAD_BOOLEAN
                    break
                ints[slot, r] = buf[pos]
                pos += 1
            elif kind == DOUBLE:
                if end - pos < 8:
                    code = TRUNCATED
                    break
                floats[slot, r] = load_f64(buf_at + pos)
                pos += 8
            elif kind == FLOAT:
                if end - pos < 4:
                    code = TRUNCATED
                    break
                floats[slot, r] = load_f32(buf_at + pos)
                pos += 4
            else:  # a map or an array: blocks of entries, ended by a zero count
                total = 0
                while True:
                    block, pos = _long(buf, pos, end)
                    if pos < 0:
                        code = block
                        break
                    if block == 0:
                        break
                    if block < 0:  # a negative count is followed by the block's size
                        block = -block
                        size, pos = _long(buf, pos, end)
                        if pos < 0:
                            code = size
                            break
                        if size < 0:
                            code = NEGATIVE_LENGTH
                            break
                    if block > end - pos:  # every entry takes at least one byte
                        code = TRUNCATED
                        break
                    if taken[slot] + block > room:
                        return NEEDS_ROOM
                    for _ in range(block):
                        e = taken[slot]
                        if kind == ARRAY_RECORD:
                            code, pos = _record_item(buf, pos, end,
                                                     items[slot, :program[f, SYMBOLS]], e,
                                                     values, numbers, reals, present)
                            if pos < 0:
                                break
                            taken[slot] += 1
                            continue
                        if kind != ARRAY_STRING:
                            code, pos = _string_entry(buf, pos, end, keys, slot, e)
                            if pos < 0:
                                break
                        if kind in (MAP_STRING, ARRAY_STRING):
                            code, pos = _string_entry(buf, pos, end, values, slot, e)
                            if pos < 0:
                                break
                        elif kind == MAP_LONG:
                            v, pos = _long(buf, pos, end)
                            if pos < 0:
                                code = v
                                break
                            numbers[slot, e] = v
                        else:
                            if end - pos < 8:
                                code = TRUNCATED
                                break
                            reals[slot, e] = load_f64(buf_at + pos)
                            pos += 8
                        taken[slot] += 1
                    if code != OK:
                        break
                    total += block
                if code != OK:
                    break
                counts[slot, r] = total
        if code == OK and pos != end:
            code = TRAILING
        status[i] = code
        if code == OK:
            rows[r] = i
            r += 1
            for c in range(counts.shape[0]):
                used[c] = taken[c]
    return r


@njit(cache=True, nogil=True)
def gather(buf: np.ndarray, spans: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` spans copied out of ``buf``: Arrow offsets (int32) and data."""
    offsets = np.empty(n + 1, np.int32)
    total = 0
    for r in range(n):
        offsets[r] = total
        total += spans[r, 1]
    offsets[n] = total
    data = np.empty(total, np.uint8)
    buf_at, data_at = buf.ctypes.data, data.ctypes.data
    for r in range(n):
        memcpy(data_at + offsets[r], buf_at + spans[r, 0], spans[r, 1])
    return offsets, data


@njit(cache=True, nogil=True)
def gather_rows(buf: np.ndarray, spans: np.ndarray, n: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``gather`` of the first ``n`` spans of every slot of ``spans`` (slot, row, 2) in one
    pass over the rows, so each message is read while it is in cache (column by column,
    every column walks the whole batch's bytes again: about 2x slower). Returns per slot
    its Arrow offsets (slot, n + 1), one data buffer, and where each slot's data starts
    (slot + 1)."""
    slots = spans.shape[0]
    base = np.zeros(slots + 1, np.int64)
    for s in range(slots):
        total = 0
        for r in range(n):
            total += spans[s, r, 1]
        base[s + 1] = base[s] + total
    offsets = np.empty((slots, n + 1), np.int32)
    data = np.empty(base[slots], np.uint8)
    at = base[:slots].copy()
    buf_at, data_at = buf.ctypes.data, data.ctypes.data
    for r in range(n):
        for s in range(slots):
            start, length, o = spans[s, r, 0], spans[s, r, 1], at[s]
            offsets[s, r] = o - base[s]
            memcpy(data_at + o, buf_at + start, length)
            at[s] = o + length
    for s in range(slots):
        offsets[s, n] = at[s] - base[s]
    return offsets, data, base


@njit(cache=True, nogil=True)
def headers(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Each message's schema id, or -1 when it is too short or its magic byte is not 0."""
    ids = np.empty(starts.shape[0], np.int64)
    for i in range(starts.shape[0]):
        s = starts[i]
        if ends[i] - s < HEADER or buf[s] != 0:
            ids[i] = -1
        else:
            ids[i] = ((np.int64(buf[s + 1]) << 24) | (np.int64(buf[s + 2]) << 16)
                      | (np.int64(buf[s + 3]) << 8) | np.int64(buf[s + 4]))
    return ids
