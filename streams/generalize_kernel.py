"""``ip_prefix`` and ``postal_region`` over a whole string column in one native call (numba).

The batch engine generalizes a batch's column at once. Arrow's regex kernels did it for
the values whose answer a regex gives exactly, at about 100 us a call (the pattern is
compiled per call) and a regex match per value. These functions parse each value's
bytes, write the generalized strings into Arrow buffers, and say per value whether their
answer is ``streams.generalize``'s; the caller asks the function itself for the others:

- ``ip_prefix``: exact for every value without ``:``. Such a value is an IPv4 address for
  the function only if it is four dot-separated runs of 1-3 ASCII digits, each at most
  255; its /24 is written with the octets' leading zeros dropped, as ``int()`` does.
  Anything else is None. A value with ``:`` (IPv6) is exact when it holds only hex digits
  and colons (no embedded IPv4, no ``%`` zone): it is parsed as glibc's ``inet_pton``
  does, and its /48 written as ``inet_ntop`` writes an address whose last five groups
  are zero (the zero run at the end is the longest, so it is the one shortened to
  ``::``); a v4-mapped address gives its /24. The rest goes to the function.
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
_IP6_SUFFIX = np.frombuffer(b"::/48", np.uint8)
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_LONGEST = (len("ffff:ffff:ffff::/48"), 3)  # bytes of a result, per method


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
def _hex_digit(b: int) -> int:
    if 48 <= b <= 57:
        return b - 48
    if 97 <= b <= 102:
        return b - 87
    if 65 <= b <= 70:
        return b - 55
    return -1


@njit(cache=True, nogil=True, inline="always")
def _decimal(value: int, out: np.ndarray, p: int) -> int:
    """``str(value)`` (0-255) at ``out[p]``; the position after it."""
    if value >= 100:
        out[p] = 48 + value // 100
        p += 1
    if value >= 10:
        out[p] = 48 + value // 10 % 10
        p += 1
    out[p] = 48 + value % 10
    return p + 1


@njit(cache=True, nogil=True, inline="always")
def _ip6_prefix(data: np.ndarray, start: int, end: int, out: np.ndarray, at: int,
                packed: np.ndarray) -> tuple[int, bool]:
    """Write the /48 (or a v4-mapped address's /24) of ``data[start:end]``, which holds a
    ``:``, at ``out[at]``: its size (-1 for None); False unless every byte is a hex digit
    or ``:``. The parse is glibc's ``inet_pton6`` on such bytes, into ``packed`` (16)."""
    for i in range(start, end):
        if data[i] != 58 and _hex_digit(data[i]) < 0:
            return -1, False
    packed[:] = 0
    i, tp, gap, digits, value = start, 0, -1, 0, 0
    if data[i] == 58:  # a leading ':' must be '::'
        i += 1
        if i == end or data[i] != 58:
            return -1, True
    while i < end:
        b = data[i]
        i += 1
        if b != 58:
            if digits == 4:
                return -1, True
            value = value * 16 + _hex_digit(b)
            digits += 1
            continue
        if digits == 0:  # '::'
            if gap >= 0:
                return -1, True
            gap = tp
            continue
        if i == end or tp + 2 > 16:  # a trailing single ':', or a ninth group
            return -1, True
        packed[tp], packed[tp + 1] = value >> 8, value & 0xFF
        tp, digits, value = tp + 2, 0, 0
    if digits:
        if tp + 2 > 16:
            return -1, True
        packed[tp], packed[tp + 1] = value >> 8, value & 0xFF
        tp += 2
    if gap >= 0:
        if tp == 16:  # '::' would stand for no group
            return -1, True
        moved = tp - gap
        for q in range(moved):
            packed[15 - q] = packed[tp - 1 - q]
        for q in range(gap, 16 - moved):
            packed[q] = 0
        tp = 16
    if tp != 16:
        return -1, True
    p = at
    mapped = packed[10] == 0xFF and packed[11] == 0xFF
    for q in range(10):
        mapped = mapped and packed[q] == 0
    if mapped:
        for q in range(12, 15):
            p = _decimal(packed[q], out, p)
            out[p] = 46
            p += 1
        out[p], out[p + 1], out[p + 2], out[p + 3] = 48, 47, 50, 52  # "0/24"
        return p + 4 - at, True
    groups = 3  # groups before the zero run inet_ntop shortens to '::'
    while groups > 0 and packed[2 * groups - 2] == 0 and packed[2 * groups - 1] == 0:
        groups -= 1
    for g in range(groups):
        if g:
            out[p] = 58
            p += 1
        word = (np.int64(packed[2 * g]) << 8) | np.int64(packed[2 * g + 1])
        shift = 12
        while shift > 0 and (word >> shift) == 0:  # "%x": no leading zeros
            shift -= 4
        while shift >= 0:
            out[p] = _HEX[(word >> shift) & 0xF]
            p += 1
            shift -= 4
    for q in range(5):
        out[p + q] = _IP6_SUFFIX[q]
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
    packed = np.empty(16, np.uint8)  # an IPv6 address, parsed
    at = 0
    for r in range(n):
        out_offsets[r] = at
        if method == IP_PREFIX and _has_colon(data, offsets[r], offsets[r + 1]):
            size, exact[r] = _ip6_prefix(data, offsets[r], offsets[r + 1], out, at, packed)
        elif method == IP_PREFIX:
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
