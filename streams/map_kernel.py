"""Map columns of output records in one native pass (numba): keys and string values.

``batch_outputs`` makes a destination's ``attributes`` map from a few entries, each a column
of values over the batch with a position and a present flag per output row. Arrow's way
(concatenate the entry columns, ``take`` the items, ``take`` the names) touches every item
several times; here each item's key and value bytes are copied once, straight into the
map's child buffers, in row-major order (a row's entries together, in entry order).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from numba import njit

__all__ = ["string_map"]


@njit(cache=True, nogil=True)
def _sizes(present: np.ndarray, where: np.ndarray, name_offsets: np.ndarray,
           starts: np.ndarray, ends: np.ndarray, map_offsets: np.ndarray
           ) -> tuple[int, int, int]:
    n, k = present.shape
    items = key_bytes = value_bytes = 0
    for r in range(n):
        map_offsets[r] = items
        for e in range(k):
            if present[r, e]:
                items += 1
                key_bytes += name_offsets[e + 1] - name_offsets[e]
                i = where[r, e]
                value_bytes += ends[i] - starts[i]
    map_offsets[n] = items
    return items, key_bytes, value_bytes


@njit(cache=True, nogil=True)
def _copy(present: np.ndarray, where: np.ndarray, names: np.ndarray, name_offsets: np.ndarray,
          data: np.ndarray, starts: np.ndarray, ends: np.ndarray, key_offsets: np.ndarray,
          keys: np.ndarray,
          value_offsets: np.ndarray, values: np.ndarray) -> None:
    n, k = present.shape
    j = kb = vb = 0
    for r in range(n):
        for e in range(k):
            if present[r, e]:
                key_offsets[j] = kb
                for b in range(name_offsets[e], name_offsets[e + 1]):
                    keys[kb] = names[b]
                    kb += 1
                value_offsets[j] = vb
                i = where[r, e]
                for b in range(starts[i], ends[i]):
                    values[vb] = data[b]
                    vb += 1
                j += 1
    key_offsets[j] = kb
    value_offsets[j] = vb


def _buffers(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The data bytes and int64 offsets (absolute in that buffer) of a string array."""
    _, offsets, data = array.buffers()
    ends = np.frombuffer(offsets, np.int32, len(array) + 1, array.offset * 4)
    return (np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8),
            ends.astype(np.int64))


def string_map(names: list[str], columns: list[pa.Array], positions: np.ndarray,
               present: np.ndarray) -> pa.MapArray:
    """One map per row: for each entry e present in row r (``present[r, e]``), the key
    ``names[e]`` and the value ``columns[e][positions[r, e]]`` (string columns; a present
    entry's value is not null)."""
    n = len(present)
    buffers = [_buffers(c) for c in columns]
    bases = np.cumsum([0] + [len(c) for c in columns])
    data_bases = np.cumsum([0] + [len(d) for d, _ in buffers])
    data = np.concatenate([d for d, _ in buffers]) if buffers else np.zeros(0, np.uint8)
    # Value i of the concatenated columns is data[starts[i]:ends[i]].
    starts = np.concatenate([o[:-1] + b for (_, o), b in zip(buffers, data_bases, strict=False)])
    ends = np.concatenate([o[1:] + b for (_, o), b in zip(buffers, data_bases, strict=False)])
    where = np.ascontiguousarray(positions + bases[:-1], np.int64)
    name_bytes = [x.encode() for x in names]
    name_data = np.frombuffer(b"".join(name_bytes), np.uint8)
    name_offsets = np.cumsum([0] + [len(x) for x in name_bytes]).astype(np.int64)
    present = np.ascontiguousarray(present)
    map_offsets = np.empty(n + 1, np.int32)
    items, key_bytes, value_bytes = _sizes(present, where, name_offsets, starts, ends,
                                           map_offsets)
    key_offsets, value_offsets = np.empty(items + 1, np.int32), np.empty(items + 1, np.int32)
    keys, values = np.empty(key_bytes, np.uint8), np.empty(value_bytes, np.uint8)
    _copy(present, where, name_data, name_offsets, data, starts, ends, key_offsets, keys,
          value_offsets, values)
    key_array = pa.Array.from_buffers(pa.string(), items, [None, pa.py_buffer(key_offsets),
                                                            pa.py_buffer(keys)])
    value_array = pa.Array.from_buffers(pa.string(), items, [None, pa.py_buffer(value_offsets),
                                                              pa.py_buffer(values)])
    return pa.MapArray.from_arrays(pa.array(map_offsets), key_array, value_array)
