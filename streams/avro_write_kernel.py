"""The native part of the Arrow encoder: Arrow columns -> framed Avro bodies (numba).

The mirror of ``avro_kernel``. One compiled function writes every row of one table as a
small *program* says (one row per field: shape, leaf kind, null branches, and which of the
described Arrow arrays hold its values), so the machine code is the same for every schema
and compiled once (cached on disk). It reads the Arrow buffers where they are (validity
bitmaps, int32 offsets, string bytes, values; each array's own offset applied) and writes
each output byte once, row after row (each row's bytes written while its values are in
cache), into one buffer the caller allocates from ``size_bound`` and then shrinks.

Arrays are described by the addresses and sizes of their buffers (``ARRAY_COLUMNS``): the
caller keeps the arrays alive for the call. Like pyarrow's own kernels, the kernel trusts an
array's offsets (the worker's tables are built by pyarrow, never read from the wire).
A row whose value is null where its type has no null branch gets ``ok[r] = 0`` and no bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from streams.native_memory import (
    load_f64,
    load_i32,
    load_i64,
    load_u8,
    load_u32,
    load_u64,
    memcpy,
    store_f32,
    store_u8,
    store_u32,
    store_u64,
)

# Field shapes, and the kinds of the values they hold (a scalar's own, a collection's items).
SCALAR, MAP, ARRAY = 0, 1, 2
LONG, DOUBLE, FLOAT, STRING, BOOLEAN = 0, 1, 2, 3, 4
# Program columns. Field f's arrays are rows 3f (the column), 3f+1 (map keys), 3f+2 (the
# collection's items) of the array table.
SHAPE, LEAF, NULL_BRANCH, ITEM_NULL_BRANCH = 0, 1, 2, 3
NOT_A_UNION = -1
# Array table columns: the array's offset, then address and size in bytes of each buffer
# (size 0: absent; a validity bitmap is given only when the array has nulls).
OFFSET, VALID, VALID_BYTES, OFFSETS, OFFSETS_BYTES, DATA, DATA_BYTES = 0, 1, 2, 3, 4, 5, 6
ARRAY_COLUMNS = 7
TOO_LARGE = "encoded bodies exceed 2 GiB (int32 offsets)"
# Most bytes one value of a kind takes besides a string's own bytes: a varint of 64 bits
# takes 10, a string's int32 length 5.
_MOST = np.array([10, 8, 4, 5, 1], np.int64)
# Nothing here allocates: the caller allocates the outputs, and buffers are read and written
# by address, so the kernels run without numba's reference counting (``_nrt``): with it,
# every call passing a dozen arrays paid atomic increments and decrements, several times the
# cost of the bytes written. The value helpers are inlined into the row loop.
_LOOP: dict[str, Any] = {"cache": True, "nogil": True, "_nrt": False}
_INLINE: dict[str, Any] = {**_LOOP, "inline": "always"}


@njit(**_INLINE)
def _bit(bitmap: int, i: int) -> bool:
    """Bit ``i`` of the bitmap at address ``bitmap`` (Arrow's order: least significant
    first)."""
    return (load_u8(bitmap + (i >> 3)) >> (i & 7)) & 1 == 1


@njit(**_INLINE)
def _varint(at: int, v: int) -> int:
    """The zig-zag varint of ``v`` at address ``at``; how many bytes it took."""
    z = np.uint64((v << 1) ^ (v >> 63))
    w = 0
    while z >= np.uint64(0x80):
        store_u8(at + w, (z & np.uint64(0x7F)) | np.uint64(0x80))
        w += 1
        z >>= np.uint64(7)
    store_u8(at + w, z)
    return w + 1


@njit(**_INLINE)
def _copy(to: int, at: int, n: int) -> None:
    """``n`` bytes from ``at`` to ``to``: up to 16 in two overlapping words (or halves),
    reading and writing only those bytes; more by ``memcpy``."""
    if n > 16:
        memcpy(to, at, n)  # type: ignore[call-overload]
    elif n >= 8:
        store_u64(to, load_u64(at))
        store_u64(to + n - 8, load_u64(at + n - 8))
    elif n >= 4:
        store_u32(to, load_u32(at))
        store_u32(to + n - 4, load_u32(at + n - 4))
    else:
        for q in range(n):
            store_u8(to + q, load_u8(at + q))


_NULL_WRITTEN = -2  # ``_branch``: the element is null, and its null branch is all it takes


@njit(**_INLINE)
def _branch(null_branch: int, valid: int, i: int, at: int) -> int:
    """Element ``i``'s union branch index at address ``at``, if its type is a union with
    null (``valid``: its validity bitmap's address, 0 if none): the bytes taken (0 or 1),
    ``_NULL_WRITTEN`` when it is null (one byte, nothing follows), or -1 when it is null
    and its type has no null branch."""
    null = valid != 0 and not _bit(valid, i)
    if null_branch == NOT_A_UNION:
        return -1 if null else 0
    store_u8(at, 2 * null_branch if null else 2 * (1 - null_branch))
    return _NULL_WRITTEN if null else 1


@njit(**_INLINE)
def _value(kind: int, null_branch: int, valid: int, offsets: int, data: int, i: int,
           at: int) -> int:
    """Element ``i`` (physical index) of an array (addresses of its validity bitmap, 0 if
    none, its int32 offsets and its data) at address ``at``: how many bytes it took, or -1
    when it is null and its type has no null branch."""
    w = _branch(null_branch, valid, i, at)
    if w < 0:
        return 1 if w == _NULL_WRITTEN else -1
    if kind == STRING:
        start = load_i32(offsets + 4 * i)
        n = load_i32(offsets + 4 * i + 4) - start
        w += _varint(at + w, n)
        _copy(at + w, data + start, n)
        return w + n
    if kind == LONG:
        return w + _varint(at + w, load_i64(data + 8 * i))
    if kind == DOUBLE:
        store_u64(at + w, load_u64(data + 8 * i))
        return w + 8
    if kind == FLOAT:  # held as float64 in Arrow: rounded as numpy's cast rounds
        store_f32(at + w, load_f64(data + 8 * i))
        return w + 4
    store_u8(at + w, 1 if _bit(data, i) else 0)  # BOOLEAN: Arrow packs them into bits
    return w + 1


@njit(**_INLINE)
def _span(arr: np.ndarray, first: int, last: int) -> int:
    """Bytes between offsets ``first`` and ``last`` of a string array (a table row)."""
    if last <= first or arr[OFFSETS_BYTES] == 0:
        return 0
    return load_i32(arr[OFFSETS] + 4 * last) - load_i32(arr[OFFSETS] + 4 * first)


@njit(**_LOOP)
def size_bound(program: np.ndarray, arrays: np.ndarray, n: int, header: int) -> int:
    """At least the bytes ``encode`` writes for the ``n`` rows (each value at its widest:
    a long as 10 bytes, a length as 5), from the arrays' offsets alone."""
    total = n * header
    for f in range(program.shape[0]):
        shape, kind = program[f, SHAPE], program[f, LEAF]
        col = arrays[3 * f]
        total += n * (program[f, NULL_BRANCH] != NOT_A_UNION)
        if shape == SCALAR:
            total += n * _MOST[kind]
            if kind == STRING:
                total += _span(col, col[OFFSET], col[OFFSET] + n)
            continue
        total += n * 6  # the block's count (an int32) and the 0 that ends it
        if n == 0 or col[OFFSETS_BYTES] == 0:
            continue
        first = load_i32(col[OFFSETS] + 4 * col[OFFSET])
        last = load_i32(col[OFFSETS] + 4 * (col[OFFSET] + n))
        items = arrays[3 * f + 2]
        total += (last - first) * ((program[f, ITEM_NULL_BRANCH] != NOT_A_UNION)
                                   + _MOST[kind])
        if kind == STRING:
            total += _span(items, items[OFFSET] + first, items[OFFSET] + last)
        if shape == MAP:
            keys = arrays[3 * f + 1]
            total += (last - first) * _MOST[STRING]
            total += _span(keys, keys[OFFSET] + first, keys[OFFSET] + last)
    return total


@njit(**_INLINE)
def _collection(shape: int, kind: int, null_branch: int, item_null: int, col: np.ndarray,
                keys: np.ndarray, items: np.ndarray, r: int, at: int) -> int:
    """Row ``r`` of a map or array column at address ``at``: bytes taken, or -1."""
    i = col[OFFSET] + r
    w = _branch(null_branch, col[VALID] if col[VALID_BYTES] else 0, i, at)
    if w < 0:
        return 1 if w == _NULL_WRITTEN else -1
    start = load_i32(col[OFFSETS] + 4 * i)
    end = load_i32(col[OFFSETS] + 4 * i + 4)
    if end > start:  # one block: count, entries, then the 0 that ends every map/array
        w += _varint(at + w, end - start)
        item_valid = items[VALID] if items[VALID_BYTES] else 0
        for e in range(start, end):
            if shape == MAP:  # keys are strings, never null (Arrow)
                w += _value(STRING, NOT_A_UNION, 0, keys[OFFSETS], keys[DATA],
                            keys[OFFSET] + e, at + w)
            v = _value(kind, item_null, item_valid, items[OFFSETS], items[DATA],
                       items[OFFSET] + e, at + w)
            if v < 0:
                return -1
            w += v
    store_u8(at + w, 0)
    return w + 1


@njit(**_LOOP)
def encode(program: np.ndarray, arrays: np.ndarray, n: int, header: np.ndarray,
           out: np.ndarray, offsets: np.ndarray, ok: np.ndarray) -> int:
    """``header`` + the Avro body of each of ``n`` rows into ``out`` (at least
    ``size_bound`` bytes), row after row, with each row's int32 end in ``offsets`` (n + 1)
    and 1 in ``ok`` when it encoded. Returns the bytes written, or -1 past 2 GiB."""
    out_at, header_at, header_size = out.ctypes.data, header.ctypes.data, header.size
    p = 0
    offsets[0] = 0
    for r in range(n):
        start = p
        memcpy(out_at + p, header_at, header_size)  # type: ignore[call-overload]
        p += header_size
        w = 0
        for f in range(program.shape[0]):
            shape = program[f, SHAPE]
            if shape == SCALAR:
                col = arrays[3 * f]
                w = _value(program[f, LEAF], program[f, NULL_BRANCH],
                           col[VALID] if col[VALID_BYTES] else 0, col[OFFSETS], col[DATA],
                           col[OFFSET] + r, out_at + p)
            else:
                w = _collection(shape, program[f, LEAF], program[f, NULL_BRANCH],
                                program[f, ITEM_NULL_BRANCH], arrays[3 * f],
                                arrays[3 * f + 1], arrays[3 * f + 2], r, out_at + p)
            if w < 0:
                break
            p += w
        if w < 0:  # a null where its type has no null branch: no bytes
            ok[r] = 0
            p = start
        else:
            ok[r] = 1
            if p > 2147483647:
                return -1
        offsets[r + 1] = p
    return p
