"""Map columns of an output table (``attributes``, ``measures``) in one native pass (numba).

A destination's map per row holds the entries present for that row, in one entry order.
Built with Arrow kernels, every entry's column was concatenated over the whole batch and
the items taken from there, one string take per item (and one more for the keys): the
largest cost of the batch engine. Here one compiled function reads each entry's values
where they are (an input column over the batch, read at the destination's input rows, or
a column already one value per output row) and writes the map's offsets, keys and items
once. Items are strings (int32 offsets) or fixed-width values (a float64 column's bytes).

Like ``avro_write_kernel``, columns are described by the addresses and sizes of their
buffers; the caller keeps them alive for the call, and the kernel trusts their offsets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from numba import njit

from streams.avro_write_kernel import _view

__all__ = ["map_array"]

# Source table columns: the array's offset, address and size of its int32 offsets (size 0:
# fixed width) and of its data, bytes per value when fixed width, and whether it is read at
# the output row (1) or at the output row's input row (0).
OFFSET, OFFSETS, OFFSETS_BYTES, DATA, DATA_BYTES, WIDTH, LOCAL = range(7)
SOURCE_COLUMNS = 7
TOO_LARGE = "map items exceed 2 GiB (int32 offsets)"


@njit(cache=True, nogil=True)
def _slots(present: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items in row-major order: the map offsets, each (row, entry)'s item or -1, and
    each item's entry."""
    n, k = present.shape
    map_offsets = np.empty(n + 1, np.int32)
    slot = np.empty((n, k), np.int32)
    entry = np.empty(n * k, np.int32)
    m = 0
    for r in range(n):
        map_offsets[r] = m
        for j in range(k):
            if present[r, j]:
                slot[r, j] = m
                entry[m] = j
                m += 1
            else:
                slot[r, j] = -1
    map_offsets[n] = m
    return map_offsets, slot, entry[:m]


@njit(cache=True, nogil=True)
def build(sources: np.ndarray, rows: np.ndarray, present: np.ndarray, names: np.ndarray,
          name_offsets: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row r's map holds entry j (name ``names[name_offsets[j]:name_offsets[j+1]]``, value
    of source j at row r or ``rows[r]``) where ``present[r, j]``: (map offsets, key
    offsets, key bytes, item offsets, item bytes)."""
    n, k = present.shape
    map_offsets, slot, entry = _slots(present)
    m = len(entry)
    sizes = np.zeros(m + 1, np.int64)  # item i's size at i + 1, then the running total
    for j in range(k):  # entry by entry: one view of each source
        src = sources[j]
        offsets = _view(src[OFFSETS], src[OFFSETS_BYTES]).view(np.int32)
        width, base, local = src[WIDTH], src[OFFSET], src[LOCAL]
        for r in range(n):
            i = slot[r, j]
            if i >= 0:
                row = base + (r if local else rows[r])
                sizes[i + 1] = width if width else offsets[row + 1] - offsets[row]
    key_offsets = np.zeros(m + 1, np.int32)
    for i in range(m):
        sizes[i + 1] += sizes[i]
        key_offsets[i + 1] = key_offsets[i] + name_offsets[entry[i] + 1] - name_offsets[entry[i]]
    if sizes[m] > 2147483647:
        raise ValueError(TOO_LARGE)
    data = np.empty(sizes[m], np.uint8)
    for j in range(k):
        src = sources[j]
        offsets = _view(src[OFFSETS], src[OFFSETS_BYTES]).view(np.int32)
        values = _view(src[DATA], src[DATA_BYTES])
        width, base, local = src[WIDTH], src[OFFSET], src[LOCAL]
        for r in range(n):
            i = slot[r, j]
            if i >= 0:
                row = base + (r if local else rows[r])
                start = row * width if width else offsets[row]
                at = sizes[i]
                for q in range(sizes[i + 1] - at):  # a loop, not a slice: no refcounting
                    data[at + q] = values[start + q]
    keys = np.empty(key_offsets[m], np.uint8)
    for i in range(m):
        start, at = name_offsets[entry[i]], key_offsets[i]
        for q in range(key_offsets[i + 1] - at):
            keys[at + q] = names[start + q]
    return map_offsets, key_offsets, keys, sizes.astype(np.int32), data


def _source(values: pa.Array, local: bool) -> list[int]:
    buffers = values.buffers()
    data = buffers[-1]
    if pa.types.is_string(values.type):
        offsets, width = buffers[1], 0
    elif values.type == pa.float64():
        offsets, width = None, 8
    else:
        raise TypeError(f"map items of type {values.type} are not supported")
    return [values.offset,
            offsets.address if offsets is not None else 0,
            offsets.size if offsets is not None else 0,
            data.address if data is not None else 0, data.size if data is not None else 0,
            width, int(local)]


def map_array(names: Sequence[str], values: Sequence[pa.Array], local: Sequence[bool],
              rows: np.ndarray, present: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """A map per output row r: entry j (``names[j]``) where ``present[r, j]``, its value
    ``values[j][r]`` if ``local[j]`` else ``values[j][rows[r]]``, in entry order.
    ``values`` are strings or float64, all of ``value_type``."""
    n = len(present)
    sources = np.array([_source(v, loc) for v, loc in zip(values, local, strict=True)],
                       np.int64).reshape(-1, SOURCE_COLUMNS)
    encoded = [name.encode() for name in names]
    name_offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(e) for e in encoded], out=name_offsets[1:])
    map_offsets, key_offsets, keys, item_offsets, data = build(
        sources, np.ascontiguousarray(rows, np.int64), np.ascontiguousarray(present, bool),
        np.frombuffer(b"".join(encoded), np.uint8), name_offsets)
    m = len(key_offsets) - 1
    key_array = pa.Array.from_buffers(pa.string(), m, [None, pa.py_buffer(key_offsets),
                                                       pa.py_buffer(keys)])
    item_buffers = ([None, pa.py_buffer(item_offsets), pa.py_buffer(data)]
                    if pa.types.is_string(value_type) else [None, pa.py_buffer(data)])
    items = pa.Array.from_buffers(value_type, m, item_buffers)
    return pa.MapArray.from_arrays(pa.Array.from_buffers(pa.int32(), n + 1, [
        None, pa.py_buffer(map_offsets)]), key_array, items)
