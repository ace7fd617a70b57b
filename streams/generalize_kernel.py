"""``ip_prefix`` and ``postal_region`` over a whole string column in one native call (numba).

The batch engine generalizes a batch's column at once. Arrow's regex kernels did it for
the values whose answer a regex gives exactly, at about 100 us a call (the pattern is
compiled per call) and a regex match per value. These functions parse each value's
bytes, write the generalized strings into Arrow buffers, and say per value whether their
answer is ``streams.generalize``'s; the caller asks the function itself for the others:

- ``ip_prefix``: exact for every value without ``:``. Such a value is an IPv4 address for
  the function only if it is four dot-separated runs of 1-3 ASCII digits, each at most
  255; its /24 is written with the octets' leading zeros dropped, as ``int()`` does.
  Anything else is None. (With ``:`` it is IPv6, left to the function.)
- ``postal_region``: exact when the value's first three alphanumerics come before any
  non-ASCII byte (ASCII ``isalnum`` is ``[A-Za-z0-9]`` and ``upper`` is ASCII's), or it
  is all ASCII with fewer than three (None).

``tests/unit/test_generalize_kernel.py`` compares both with the functions.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from numba import njit

__all__ = ["generalized"]

_IP_SUFFIX = np.frombuffer(b".0/24", np.uint8)


@njit(cache=True, nogil=True, inline="always")
def _digit(b: int) -> bool:
    return 48 <= b <= 57


@njit(cache=True, nogil=True, inline="always")
def _ip_prefix(data: np.ndarray, start: int, end: int, octets: np.ndarray) -> tuple[int, bool]:
    """The byte count of the /24 of ``data[start:end]`` (its octets in ``octets``), -1 for
    None; False if it holds ``:`` (IPv6, not answered here)."""
    for i in range(start, end):
        if data[i] == 58:  # ':'
            return -1, False
    part, digits, value = 0, 0, 0
    for i in range(start, end + 1):
        if i < end and _digit(data[i]):
            digits += 1
            value = value * 10 + data[i] - 48
            if digits > 3:
                return -1, True
            continue
        if digits == 0 or value > 255 or (i < end and data[i] != 46):  # 46 is '.'
            return -1, True
        if part == 4:
            return -1, True
        octets[part] = value
        part, digits, value = part + 1, 0, 0
    if part != 4:
        return -1, True
    size = 5 + 2  # three octets' digits, two dots, then ".0/24"
    for p in range(3):
        size += 1 if octets[p] < 10 else (2 if octets[p] < 100 else 3)
    return size, True


@njit(cache=True, nogil=True, inline="always")
def _postal_region(data: np.ndarray, start: int, end: int, chars: np.ndarray) -> tuple[int, bool]:
    """3 with the region of ``data[start:end]`` in ``chars``, -1 for None; False if a
    non-ASCII byte comes first."""
    found = 0
    for i in range(start, end):
        b = data[i]
        if b >= 128:
            return -1, False
        if _digit(b) or 65 <= b <= 90:
            chars[found] = b
        elif 97 <= b <= 122:
            chars[found] = b - 32
        else:
            continue
        found += 1
        if found == 3:
            return 3, True
    return -1, True


@njit(cache=True, nogil=True, inline="always")
def _write_octet(out: np.ndarray, at: int, value: int) -> int:
    if value >= 100:
        out[at] = 48 + value // 100
        at += 1
    if value >= 10:
        out[at] = 48 + value // 10 % 10
        at += 1
    out[at] = 48 + value % 10
    return at + 1


@njit(cache=True, nogil=True)
def _run(method: int, data: np.ndarray, offsets: np.ndarray, suffix: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(int32 result offsets, result bytes, valid, exact) per value of a string array
    (``offsets`` from its first value, one more than values)."""
    n = len(offsets) - 1
    sizes = np.empty(n, np.int64)
    exact = np.empty(n, np.bool_)
    parts = np.empty(4, np.int64)
    out_offsets = np.zeros(n + 1, np.int32)
    for r in range(n):
        if method == 0:
            sizes[r], exact[r] = _ip_prefix(data, offsets[r], offsets[r + 1], parts)
        else:
            sizes[r], exact[r] = _postal_region(data, offsets[r], offsets[r + 1], parts)
        out_offsets[r + 1] = out_offsets[r] + max(sizes[r], 0)
    out = np.empty(out_offsets[n], np.uint8)
    for r in range(n):
        if sizes[r] <= 0:
            continue
        at = out_offsets[r]
        if method == 0:
            _ip_prefix(data, offsets[r], offsets[r + 1], parts)
            for p in range(3):
                at = _write_octet(out, at, parts[p])
                if p < 2:
                    out[at] = 46
                    at += 1
            for q in range(len(suffix)):
                out[at + q] = suffix[q]
        else:
            _postal_region(data, offsets[r], offsets[r + 1], parts)
            for q in range(3):
                out[at + q] = parts[q]
    return out_offsets, out, sizes > 0, exact


METHODS = {"ip_prefix": 0, "postal_region": 1}


def generalized(values: pa.Array, method: str) -> tuple[pa.Array, np.ndarray]:
    """``method`` (a key of ``METHODS``) of every value of a string array, and per value
    whether that answer is the function's (nulls: null, and exact)."""
    _, offsets, data = values.buffers()
    n = len(values)
    starts = np.frombuffer(offsets, np.int32, n + 1, values.offset * 4).astype(np.int64)
    raw = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    out_offsets, out, valid, exact = _run(METHODS[method], raw, starts, _IP_SUFFIX)
    present = np.asarray(values.is_valid()) if values.null_count else None
    if present is not None:
        valid &= present
        exact |= ~present
    result = pa.Array.from_buffers(pa.string(), n, [
        pa.py_buffer(np.packbits(valid, bitorder="little")), pa.py_buffer(out_offsets),
        pa.py_buffer(out)])
    return result, exact
