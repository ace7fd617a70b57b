"""The native part of the Arrow encoder: Arrow columns -> framed Avro bodies (numba).

The mirror of ``avro_kernel``. One compiled function writes every row of one table as a
small *program* says (one row per field: shape, leaf kind, null branches, and which of the
described Arrow arrays hold its values), so the machine code is the same for every schema
and compiled once (cached on disk). It reads the Arrow buffers where they are (validity
bitmaps, int32 offsets, string bytes, values; each array's own offset applied) and writes
each output byte once: a first pass sizes every row, a second writes the header and the
fields into one data buffer.

Arrays are described by the addresses and sizes of their buffers (``ARRAY_COLUMNS``): the
caller keeps the arrays alive for the call. Like pyarrow's own kernels, the kernel trusts an
array's offsets (the worker's tables are built by pyarrow, never read from the wire).
A row whose value is null where its type has no null branch gets ``ok[r] = 0`` and no bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic

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
# The per-value functions allocate nothing, so they run without numba's reference counting
# (``_nrt``): with it, every call passing a dozen arrays paid atomic increments and
# decrements, several times the cost of the bytes written. The value helpers are inlined
# into the row loop: an outlined call passes each array as seven machine words.
_LOOP: dict[str, Any] = {"cache": True, "nogil": True, "_nrt": False}
_INLINE: dict[str, Any] = {**_LOOP, "inline": "always"}


@intrinsic
def _pointer(typingctx, address):  # type: ignore[no-untyped-def]
    """An int64 address as a uint8 pointer (for ``carray``)."""
    if not isinstance(address, types.Integer):
        return None
    sig = types.CPointer(types.uint8)(address)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


@njit(cache=True, nogil=True)
def _view(address: int, size: int) -> np.ndarray:
    """The ``size`` bytes at ``address`` as a uint8 array (an empty one for size 0)."""
    if size == 0:
        return np.empty(0, np.uint8)
    return carray(_pointer(address), size)  # type: ignore[call-arg]  # typingctx: numba's


@njit(**_INLINE)
def _bit(bitmap: np.ndarray, i: int) -> bool:
    return (bitmap[i >> 3] >> (i & 7)) & 1 == 1


@njit(**_INLINE)
def _long(out: np.ndarray, p: int, v: int, write: bool) -> int:
    """The zig-zag varint of ``v`` at ``out[p]``; the next position."""
    z = np.uint64((v << 1) ^ (v >> 63))
    while z >= np.uint64(0x80):
        if write:
            out[p] = np.uint8((z & np.uint64(0x7F)) | np.uint64(0x80))
        p += 1
        z >>= np.uint64(7)
    if write:
        out[p] = np.uint8(z)
    return p + 1


@njit(**_INLINE)
def _value(kind: int, null_branch: int, valid: np.ndarray, offsets: np.ndarray,
           data: np.ndarray, longs: np.ndarray, reals: np.ndarray, i: int, out: np.ndarray,
           p: int, write: bool, scratch: np.ndarray, scratch_bytes: np.ndarray) -> int:
    """Element ``i`` (physical index) of an array at ``out[p]``: the next position, or -1
    when it is null and its type has no null branch."""
    if valid.size and not _bit(valid, i):
        if null_branch == NOT_A_UNION:
            return -1
        if write:
            out[p] = 2 * null_branch
        return p + 1
    if null_branch != NOT_A_UNION:
        if write:
            out[p] = 2 * (1 - null_branch)
        p += 1
    if kind == STRING:
        start = offsets[i]
        n = offsets[i + 1] - start
        p = _long(out, p, n, write)
        if write:  # a loop, not a slice: slices cost reference counting per value
            for q in range(n):
                out[p + q] = data[start + q]
        return p + n
    if kind == LONG:
        return _long(out, p, longs[i], write)
    if kind == DOUBLE:
        if write:
            for q in range(8):
                out[p + q] = data[8 * i + q]
        return p + 8
    if kind == FLOAT:
        if write:
            scratch[0] = np.float32(reals[i])
            for q in range(4):
                out[p + q] = scratch_bytes[q]
        return p + 4
    if write:  # BOOLEAN: Arrow packs them into bits
        out[p] = 1 if _bit(data, i) else 0
    return p + 1


@njit(cache=True, nogil=True)
def _field(program: np.ndarray, arrays: np.ndarray, f: int, pos: np.ndarray, ok: np.ndarray,
           out: np.ndarray, write: bool, scratch: np.ndarray, scratch_bytes: np.ndarray) -> None:
    """Field ``f`` of every row still ``ok``, at ``out[pos[r]]``; advances ``pos``."""
    shape = program[f, SHAPE]
    col, keys, items = arrays[3 * f], arrays[3 * f + 1], arrays[3 * f + 2]
    values = col if shape == SCALAR else items
    data = _view(values[DATA], values[DATA_BYTES])
    longs = data[:data.size // 8 * 8].view(np.int64)
    _rows(shape, program[f, LEAF], program[f, NULL_BRANCH], program[f, ITEM_NULL_BRANCH],
          col[OFFSET], _view(col[VALID], col[VALID_BYTES]),
          _view(col[OFFSETS], col[OFFSETS_BYTES]).view(np.int32),
          keys[OFFSET], _view(keys[OFFSETS], keys[OFFSETS_BYTES]).view(np.int32),
          _view(keys[DATA], keys[DATA_BYTES]),
          values[OFFSET], _view(values[VALID], values[VALID_BYTES]),
          _view(values[OFFSETS], values[OFFSETS_BYTES]).view(np.int32), data, longs,
          longs.view(np.float64), pos, ok, out, write, scratch, scratch_bytes)


@njit(**_LOOP)
def _rows(shape: int, kind: int, null_branch: int, item_null: int, base: int,
          valid: np.ndarray, entries: np.ndarray, key_base: int, key_offsets: np.ndarray,
          key_data: np.ndarray, item_base: int, item_valid: np.ndarray,
          item_offsets: np.ndarray, data: np.ndarray, longs: np.ndarray, reals: np.ndarray,
          pos: np.ndarray, ok: np.ndarray, out: np.ndarray, write: bool, scratch: np.ndarray,
          scratch_bytes: np.ndarray) -> None:
    """``_field``'s loop over rows, apart from it to run without reference counting
    (``_field`` makes the views, which allocates)."""
    if shape == SCALAR:
        for r in range(pos.size):
            if ok[r]:
                p = _value(kind, null_branch, item_valid, item_offsets, data, longs, reals,
                           base + r, out, pos[r], write, scratch, scratch_bytes)
                if p < 0:
                    ok[r] = 0
                else:
                    pos[r] = p
        return
    no_valid = item_valid[:0]  # map keys are strings, never null (Arrow)
    for r in range(pos.size):
        if not ok[r]:
            continue
        p = pos[r]
        if valid.size and not _bit(valid, base + r):
            if null_branch == NOT_A_UNION:
                ok[r] = 0
                continue
            if write:
                out[p] = 2 * null_branch
            pos[r] = p + 1
            continue
        if null_branch != NOT_A_UNION:
            if write:
                out[p] = 2 * (1 - null_branch)
            p += 1
        start, end = entries[base + r], entries[base + r + 1]
        if end > start:  # one block: count, entries, then the 0 that ends every map/array
            p = _long(out, p, end - start, write)
            for e in range(start, end):
                if shape == MAP:
                    p = _value(STRING, NOT_A_UNION, no_valid, key_offsets, key_data,
                               longs, reals, key_base + e, out, p, write, scratch,
                               scratch_bytes)
                p = _value(kind, item_null, item_valid, item_offsets, data, longs, reals,
                           item_base + e, out, p, write, scratch, scratch_bytes)
                if p < 0:
                    break
            if p < 0:
                ok[r] = 0
                continue
        if write:
            out[p] = 0
        pos[r] = p + 1


@njit(cache=True, nogil=True)
def encode(program: np.ndarray, arrays: np.ndarray, n: int, header: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``header`` + the Avro body of each of ``n`` rows: (int32 offsets, data, ok)."""
    ok = np.ones(n, np.uint8)
    pos = np.full(n, header.size, np.int64)
    scratch = np.zeros(1, np.float32)  # a float32's bytes, through scratch_bytes
    scratch_bytes = scratch.view(np.uint8)
    nothing = np.empty(0, np.uint8)
    for f in range(program.shape[0]):  # sizes: the same walk, writing nothing
        _field(program, arrays, f, pos, ok, nothing, False, scratch, scratch_bytes)
    offsets = np.zeros(n + 1, np.int32)
    total = 0
    for r in range(n):
        if ok[r]:
            total += pos[r]
        if total > 2147483647:
            raise ValueError(TOO_LARGE)
        offsets[r + 1] = total
    out = np.empty(total, np.uint8)
    for r in range(n):
        pos[r] = offsets[r] + header.size
        if ok[r]:
            out[offsets[r]:pos[r]] = header
    for f in range(program.shape[0]):
        _field(program, arrays, f, pos, ok, out, True, scratch, scratch_bytes)
    return offsets, out, ok
