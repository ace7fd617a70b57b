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

IP_PREFIX, POSTAL_REGION = 0, 1
_IP_SUFFIX = np.frombuffer(b".0/24", np.uint8)
_LONGEST = (len("255.255.255.0/24"), 3)  # bytes of a result, per method


@njit(cache=True, nogil=True, inline="always")
def _digit(b: int) -> bool:
    return 48 <= b <= 57


@njit(cache=True, nogil=True, inline="always")
def _has_colon(data: np.ndarray, start: int, end: int) -> bool:
    for i in range(start, end):  # noqa: SIM110  (a loop: no generator in compiled code)
        if data[i] == 58:
            return True
    return False


@njit(cache=True, nogil=True, inline="always")
def _ip_prefix(data: np.ndarray, start: int, end: int, out: np.ndarray, at: int
               ) -> tuple[int, bool]:
    """Write the /24 of ``data[start:end]`` at ``out[at]``: its size (-1 for None), and
    False if the value holds ``:`` (IPv6, not answered here). Each octet's digits are
    copied as parsed; a leading zero is dropped by rewinding (``int()`` drops them)."""
    part, digits, value, p = 0, 0, 0, at
    for i in range(start, end + 1):
        b = data[i] if i < end else 46  # the end closes the last octet as a dot would
        if _digit(b):
            digits += 1
            value = value * 10 + b - 48
            if digits > 3:
                return -1, not _has_colon(data, start, end)
            if part < 3:
                if p > at and out[p - 1] == 48 and (p - 1 == at or out[p - 2] == 46):
                    p -= 1  # the octet so far is a lone zero: this digit replaces it
                out[p] = b
                p += 1
            continue
        if b != 46 or digits == 0 or value > 255 or part == 4:
            return -1, not _has_colon(data, start, end)
        if part < 2:
            out[p] = 46
            p += 1
        part, digits, value = part + 1, 0, 0
    if part != 4:
        return -1, True  # no ':' can be here: every byte was a digit or a dot
    for q in range(5):
        out[p + q] = _IP_SUFFIX[q]
    return p + 5 - at, True


@njit(cache=True, nogil=True, inline="always")
def _postal_region(data: np.ndarray, start: int, end: int, out: np.ndarray, at: int
                   ) -> tuple[int, bool]:
    """Write the region of ``data[start:end]`` at ``out[at]``: 3, -1 for None; False if a
    non-ASCII byte comes first."""
    found = 0
    for i in range(start, end):
        b = data[i]
        if b >= 128:
            return -1, False
        if _digit(b) or 65 <= b <= 90:
            out[at + found] = b
        elif 97 <= b <= 122:
            out[at + found] = b - 32
        else:
            continue
        found += 1
        if found == 3:
            return 3, True
    return -1, True


@njit(cache=True, nogil=True)
def _run(method: int, data: np.ndarray, offsets: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(int32 result offsets, result bytes, valid, exact) per value of a string array
    (``offsets`` from its first value, one more than values). One pass: the bytes are
    written where the result goes, into room for the longest result per value."""
    n = len(offsets) - 1
    exact = np.empty(n, np.bool_)
    valid = np.empty(n, np.bool_)
    out_offsets = np.empty(n + 1, np.int32)
    out = np.empty(n * _LONGEST[method], np.uint8)
    at = 0
    for r in range(n):
        out_offsets[r] = at
        if method == IP_PREFIX:
            size, exact[r] = _ip_prefix(data, offsets[r], offsets[r + 1], out, at)
        else:
            size, exact[r] = _postal_region(data, offsets[r], offsets[r + 1], out, at)
        valid[r] = size > 0
        at += max(size, 0)
    out_offsets[n] = at
    return out_offsets, out, valid, exact


METHODS = {"ip_prefix": IP_PREFIX, "postal_region": POSTAL_REGION}


def generalized(values: pa.Array, method: str) -> tuple[pa.Array, np.ndarray]:
    """``method`` (a key of ``METHODS``) of every value of a string array, and per value
    whether that answer is the function's (nulls: null, and exact)."""
    _, offsets, data = values.buffers()
    n = len(values)
    starts = np.frombuffer(offsets, np.int32, n + 1, values.offset * 4).astype(np.int64)
    raw = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    out_offsets, out, valid, exact = _run(METHODS[method], raw, starts)
    present = np.asarray(values.is_valid()) if values.null_count else None
    if present is not None:
        valid &= present
        exact |= ~present
    result = pa.Array.from_buffers(pa.string(), n, [
        pa.py_buffer(np.packbits(valid, bitorder="little")), pa.py_buffer(out_offsets),
        pa.py_buffer(out)])
    return result, exact
