"""Map columns of an output table (``attributes``, ``measures``) in one native pass (numba).

A destination's map per row holds the entries present for that row, in one entry order.
Built with Arrow kernels, every entry's column was concatenated over the whole batch and
the items taken from there, one string take per item (and one more for the keys): the
largest cost of the batch engine. Here one compiled function reads each entry's values
where they are (an input column over the batch, read at the destination's input rows, or
a column already one value per output row) and writes the map's offsets, keys and items
once. Items are strings (int32 offsets) or fixed-width values (a float64 column's bytes).

Like ``avro_write_kernel``, columns are described by the addresses of their buffers; the
caller keeps them alive for the call, and the kernel trusts their offsets. Items are
copied by libc's ``memcpy`` in row order: a first attempt copied entry by entry, with
byte loops, at about 300 instructions an item against about 100 now.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from numba import njit

from streams.native_memory import load_i32, load_u8, memcpy

__all__ = ["EncodedNames", "encode_names", "map_array"]

# Source table columns: the array's offset, address of its int32 offsets (unused when fixed
# width) and of its data, bytes per value when fixed width (0: strings), whether it is
# read at the output row (1) or at the output row's input row (0), and the address of its
# validity bitmap (0: no nulls). A null value is never an entry.
OFFSET, OFFSETS, DATA, WIDTH, LOCAL, VALID = range(6)
SOURCE_COLUMNS = 6
TOO_LARGE = "map items exceed 2 GiB (int32 offsets)"
@njit(cache=True, nogil=True)
def build(sources: np.ndarray, rows: np.ndarray, kinds: np.ndarray, entry_kinds: np.ndarray,
          names: np.ndarray, name_offsets: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row r's map holds entry j (name ``names[name_offsets[j]:name_offsets[j+1]]``, value
    of source j at row r or ``rows[r]``) where ``entry_kinds[j, kinds[r]]`` and the value is
    not null: (map offsets, key offsets, key bytes, item offsets, item bytes)."""
    n, k = len(rows), len(sources)
    fields = sources.T.copy()  # each field's values contiguous: fewer instructions an item
    base, offsets, data = fields[OFFSET], fields[OFFSETS], fields[DATA]
    width, local, valid = fields[WIDTH], fields[LOCAL], fields[VALID]
    # Items in row-major order: where each one's bytes are, their running total, its entry.
    map_offsets = np.empty(n + 1, np.int32)
    starts = np.empty(n * k, np.int64)
    ends = np.empty(n * k + 1, np.int64)
    entry = np.empty(n * k, np.int32)
    m, total = 0, 0
    ends[0] = 0
    for r in range(n):
        map_offsets[r] = m
        at_input, kind = rows[r], kinds[r]
        for j in range(k):
            if entry_kinds[j, kind]:
                row = base[j] + (r if local[j] else at_input)
                if valid[j]:  # a null value is no entry
                    bit = load_u8(valid[j] + (row >> 3)) >> (row & 7)
                    if not bit & 1:
                        continue
                if width[j]:
                    start, size = row * width[j], width[j]
                else:
                    start = load_i32(offsets[j] + 4 * row)
                    size = load_i32(offsets[j] + 4 * row + 4) - start
                starts[m] = data[j] + start
                total += size
                ends[m + 1] = total
                entry[m] = j
                m += 1
    map_offsets[n] = m
    key_offsets = np.empty(m + 1, np.int32)
    key_offsets[0] = key_total = 0
    for i in range(m):
        key_total += name_offsets[entry[i] + 1] - name_offsets[entry[i]]
        key_offsets[i + 1] = key_total
    if total > 2147483647 or key_total > 2147483647:
        raise ValueError(TOO_LARGE)
    items, keys = np.empty(total, np.uint8), np.empty(key_total, np.uint8)
    items_at, keys_at, names_at = items.ctypes.data, keys.ctypes.data, names.ctypes.data
    for i in range(m):
        memcpy(items_at + ends[i], starts[i], ends[i + 1] - ends[i])
        memcpy(keys_at + key_offsets[i], names_at + name_offsets[entry[i]],
                key_offsets[i + 1] - key_offsets[i])
    return map_offsets, key_offsets, keys, ends[:m + 1].astype(np.int32), items


EncodedNames = tuple[np.ndarray, np.ndarray]  # UTF-8 bytes of names, their int64 offsets


def encode_names(names: Sequence[str]) -> EncodedNames:
    """Entry names as ``map_array`` takes them (encoded once per destination plan)."""
    encoded = [name.encode() for name in names]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), np.uint8), offsets


def _source(values: pa.Array, local: bool) -> tuple[int, int, int, int, int, int]:
    buffers = values.buffers()
    data = buffers[-1]
    if pa.types.is_string(values.type):
        offsets, width = buffers[1], 0
    elif values.type == pa.float64():
        offsets, width = None, 8
    else:
        raise TypeError(f"map items of type {values.type} are not supported")
    validity = buffers[0] if values.null_count else None
    return (values.offset, offsets.address if offsets is not None else 0,
            data.address if data is not None else 0, width, int(local),
            validity.address if validity is not None else 0)


def map_array(names: EncodedNames, values: Sequence[pa.Array], local: Sequence[bool],
              rows: np.ndarray, kinds: np.ndarray, entry_kinds: np.ndarray,
              value_type: pa.DataType) -> pa.Array:
    """A map per output row r: entry j (``names``, from ``encode_names``) where
    ``entry_kinds[j, kinds[r]]`` and its value is not null, its value ``values[j][r]`` if
    ``local[j]`` else ``values[j][rows[r]]``, in entry order. ``values`` are strings or
    float64, all of ``value_type``. (Presence by kind: the engine's kinds are the variants,
    so no per-row mask per entry is made.)"""
    n = len(rows)
    sources = np.array([_source(v, loc) for v, loc in zip(values, local, strict=True)],
                       np.int64).reshape(-1, SOURCE_COLUMNS)
    map_offsets, key_offsets, keys, item_offsets, data = build(
        sources, np.ascontiguousarray(rows, np.int64), np.ascontiguousarray(kinds, np.int64),
        np.ascontiguousarray(entry_kinds, bool), *names)
    m = len(key_offsets) - 1
    key_array = pa.Array.from_buffers(pa.string(), m, [None, pa.py_buffer(key_offsets),
                                                       pa.py_buffer(keys)])
    item_buffers = ([None, pa.py_buffer(item_offsets), pa.py_buffer(data)]
                    if pa.types.is_string(value_type) else [None, pa.py_buffer(data)])
    items = pa.Array.from_buffers(value_type, m, item_buffers)
    return pa.MapArray.from_arrays(pa.Array.from_buffers(pa.int32(), n + 1, [
        None, pa.py_buffer(map_offsets)]), key_array, items)
