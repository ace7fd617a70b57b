"""Pseudonyms of a whole column in one native call: HMAC-SHA256 (RFC 2104) in numba.

The batch engine needs one pseudonym per output row (``pseudonym.pseudonymize``: the first
128 bits, in hex, of ``HMAC-SHA256(key, domain || 0x00 || value)``). Called per value from
Python, the HMAC's wrapper costs more than its hashing. Here a batch's distinct subject
keys are turned into their pad states once (``pad_states``), and every row's pseudonym is
hashed from those states in one loop (``pseudonyms``), straight into the bytes of an Arrow
string column. The SHA-256 block function is OpenSSL's (the libcrypto ``hashlib`` uses,
with the CPU's SHA extensions where it has them: about 50 ns a block here, 5x numba's).
Nothing is cached between calls, so a shredded key leaves no derived value behind here.

``pseudonym.pseudonymize`` stays the definition: ``tests/unit/test_hmac_kernel.py``
compares the two on keys, domains and values of every length class (one and two message
blocks, keys longer than a block, multi-byte UTF-8).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import llvmlite.binding
import numpy as np
import pyarrow as pa
from numba import njit, types

from streams.errors import ConfigError
from streams.native_memory import load_u8, load_u64, memcpy

BLOCK = 64
DIGEST_HEX = 32  # a pseudonym: 16 bytes of the MAC in hex


def _libcrypto() -> str:
    """The OpenSSL libcrypto this Python's ``hashlib`` uses (or the system's)."""
    import _hashlib  # noqa: F401  (maps the library into the process, if it is shared)

    maps = Path("/proc/self/maps")
    mapped = ([line.split()[-1] for line in maps.read_text().splitlines()
               if "libcrypto" in line.rsplit("/", 1)[-1]] if maps.exists() else [])
    for path in [*mapped, ctypes.util.find_library("crypto")]:
        try:
            if path and ctypes.CDLL(path).SHA256_Transform:
                return path
        except (OSError, AttributeError):
            continue
    raise ConfigError("pseudonyms need OpenSSL's libcrypto (SHA256_Transform), which this "
                      "Python's hashlib normally links; none was found")


llvmlite.binding.load_library_permanently(_libcrypto())
# One SHA-256 compression of a 64-byte block into 8 native-endian state words; it only
# touches the state at the start of the context (SHA-NI or AVX2 code where the CPU has it).
_transform = types.ExternalFunction(
    "SHA256_Transform", types.void(types.voidptr, types.voidptr))
_H0 = np.array([0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C,
                0x1F83D9AB, 0x5BE0CD19], dtype=np.uint32)
# Per byte its two hex digits as one native-endian uint16 (the first digit first in memory).
_HEX_PAIRS = np.frombuffer(b"".join(f"{b:02x}".encode() for b in range(256)), np.uint16)
_MIX = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, nogil=True, inline="always")
def _tail(at: int, size: int) -> np.uint64:
    """The last ``size`` (< 8) bytes at ``at`` as one word, read byte by byte (a word
    load could cross the end of the buffer)."""
    word = np.uint64(0)
    for i in range(size):
        word |= np.uint64(load_u8(at + i)) << np.uint64(8 * i)
    return word


@njit(cache=True, nogil=True, inline="always")
def _message_hash(key: int, at: int, size: int) -> np.uint64:
    """A hash of (key index, bytes at ``at``) for finding repeated messages in one call;
    not cryptographic, only a table index."""
    h = (np.uint64(key) + np.uint64(size) * np.uint64(0x100000001B3)) * _MIX
    end = at + size
    while at + 8 <= end:
        h = (h ^ load_u64(at)) * _MIX
        h ^= h >> np.uint64(29)
        at += 8
    if at < end:
        h = (h ^ _tail(at, end - at)) * _MIX
    return h ^ (h >> np.uint64(32))


@njit(cache=True, nogil=True, inline="always")
def _same_bytes(a: int, b: int, size: int) -> bool:
    i = 0
    while i + 8 <= size:
        if load_u64(a + i) != load_u64(b + i):
            return False
        i += 8
    return _tail(a + i, size - i) == _tail(b + i, size - i)


@njit(cache=True, nogil=True, inline="always")
def _compress(state: np.ndarray, block: np.ndarray) -> None:
    _transform(state.ctypes.data, block.ctypes.data)  # type: ignore[call-overload]


@njit(cache=True, nogil=True, inline="always")
def _length(block: np.ndarray, counted: int) -> None:
    """The message length in bits, big-endian, in the last 8 bytes of the final block."""
    bits = counted * 8
    for i in range(8):
        block[BLOCK - 1 - i] = (bits >> (8 * i)) & 0xFF


@njit(cache=True, nogil=True, inline="always")
def _fill(state: np.ndarray, block: np.ndarray, fill: int, src: np.ndarray, start: int,
          end: int) -> int:
    """Append ``src[start:end]`` to the partial ``block`` (``fill`` bytes in it), compressing
    every block that fills up; the new fill. (memcpy: numba's slices cost more here.)"""
    block_at, src_at = block.ctypes.data, src.ctypes.data
    while start < end:
        size = min(BLOCK - fill, end - start)
        memcpy(block_at + fill, src_at + start, size)  # type: ignore[call-overload]
        fill += size
        start += size
        if fill == BLOCK:
            _compress(state, block)
            fill = 0
    return fill


@njit(cache=True, nogil=True, inline="always")
def _absorb(state: np.ndarray, prefix: np.ndarray, data: np.ndarray, start: int, end: int,
            counted: int, block: np.ndarray) -> None:
    """Hash ``prefix`` then ``data[start:end]`` into ``state`` and finish (pad, length);
    ``counted`` bytes were already hashed into the state (a pad block)."""
    fill = _fill(state, block, 0, prefix, 0, len(prefix))
    fill = _fill(state, block, fill, data, start, end)
    block[fill] = 0x80
    fill += 1
    if fill > BLOCK - 8:
        for i in range(fill, BLOCK):
            block[i] = 0
        _compress(state, block)
        fill = 0
    for i in range(fill, BLOCK - 8):
        block[i] = 0
    _length(block, counted + len(prefix) + end - start)
    _compress(state, block)


@njit(cache=True, nogil=True, inline="always")
def _big_endian(word: np.uint32) -> np.uint32:
    """A state word in big-endian byte order on a little-endian machine (one bswap)."""
    return ((word >> np.uint32(24)) | ((word >> np.uint32(8)) & np.uint32(0xFF00))
            | ((word << np.uint32(8)) & np.uint32(0xFF0000)) | (word << np.uint32(24)))


@njit(cache=True, nogil=True, inline="always")
def _digest(state: np.ndarray, out: np.ndarray) -> None:
    """The 32 big-endian bytes of a finished state, as 8 words into ``out`` (uint32)."""
    for i in range(8):
        out[i] = _big_endian(state[i])


@njit(cache=True, nogil=True)
def _pads(keys: np.ndarray, key_offsets: np.ndarray, h0: np.ndarray) -> np.ndarray:
    n = len(key_offsets) - 1
    pads = np.empty((n, 2, 8), np.uint32)
    block, padded = np.empty(BLOCK, np.uint8), np.empty(BLOCK, np.uint8)
    digest, empty = np.empty(8, np.uint32), np.empty(0, np.uint8)
    for j in range(n):
        start, end = key_offsets[j], key_offsets[j + 1]
        padded[:] = 0
        if end - start > BLOCK:  # RFC 2104: a key longer than a block is hashed first
            digest[:] = h0
            _absorb(digest, empty, keys, start, end, 0, block)
            _digest(digest, padded.view(np.uint32))
        else:
            padded[:end - start] = keys[start:end]
        for side in range(2):
            pads[j, side] = h0
            xor = 0x36 if side == 0 else 0x5C
            for i in range(BLOCK):
                block[i] = padded[i] ^ xor
            _compress(pads[j, side], block)
    return pads


@njit(cache=True, nogil=True)
def _repeats_keys(key_of: np.ndarray, keys: int) -> bool:
    """Whether at least a quarter of the rows repeat a key of an earlier row."""
    seen = np.zeros(keys, np.bool_)
    distinct = 0
    for k in key_of:
        if not seen[k]:
            seen[k] = True
            distinct += 1
    return 4 * distinct <= 3 * len(key_of)


@njit(cache=True, nogil=True)
def _pseudonyms(pads: np.ndarray, key_of: np.ndarray, prefix: np.ndarray, data: np.ndarray,
                starts: np.ndarray, ends: np.ndarray, rows: np.ndarray, chars: int,
                hex_pairs: np.ndarray) -> np.ndarray:
    n, p = len(key_of), len(prefix)
    out = np.empty(n * chars, np.uint8)
    pairs_out = out.view(np.uint16)  # chars is even: two hex digits at a time
    state, scratch = np.empty(8, np.uint32), np.empty(BLOCK, np.uint8)
    # Most messages fit one block: the prefix stays in place and each row writes its value,
    # the end mark and the length (clearing what a longer value before it left). The
    # outer message is always one block: the inner digest, then fixed padding.
    inner, outer = np.zeros(BLOCK, np.uint8), np.zeros(BLOCK, np.uint8)
    outer_words = outer.view(np.uint32)
    if p < BLOCK - 8:
        inner[:p] = prefix
    dirty = p
    outer[32] = 0x80
    _length(outer, BLOCK + 32)
    # Addresses taken once, outside the loop: about 12 instructions a pseudonym fewer.
    state_at, inner_at, outer_at = state.ctypes.data, inner.ctypes.data, outer.ctypes.data
    data_at, out_at = data.ctypes.data, out.ctypes.data
    # A subject's events repeat its (key, value) pairs: where rows repeat keys (most in
    # big groups), each row's pair is looked up in an open-addressing table of first rows,
    # and a repeat copies its first row's hex instead of hashing two SHA-256 blocks. The
    # lookup costs about a tenth of a pseudonym, so calls whose keys barely repeat skip it.
    # The table lives for this call only.
    mask = 15
    while mask + 1 < 2 * n:
        mask = mask * 2 + 1
    first = np.full(mask + 1 if _repeats_keys(key_of, len(pads)) else 0, -1, np.int64)
    dedup = len(first) > 0
    for r in range(n):
        k, start, end = key_of[r], starts[rows[r]], ends[rows[r]]
        if dedup:
            slot = _message_hash(k, data_at + start, end - start) & np.uint64(mask)
            seen = first[slot]
            while seen >= 0 and not (key_of[seen] == k
                                     and ends[rows[seen]] - starts[rows[seen]] == end - start
                                     and _same_bytes(data_at + starts[rows[seen]],
                                                     data_at + start, end - start)):
                slot = (slot + np.uint64(1)) & np.uint64(mask)
                seen = first[slot]
            if seen >= 0:
                memcpy(out_at + r * chars, out_at + seen * chars,  # type: ignore[call-overload]
                        chars)
                continue
            first[slot] = r
        for i in range(8):
            state[i] = pads[k, 0, i]
        size = p + end - start
        if size < BLOCK - 8:
            memcpy(inner_at + p, data_at + start, end - start)  # type: ignore[call-overload]
            inner[size] = 0x80
            for i in range(size + 1, dirty):
                inner[i] = 0
            dirty = size + 1
            _length(inner, BLOCK + size)
            _transform(state_at, inner_at)  # type: ignore[call-overload]
        else:
            _absorb(state, prefix, data, start, end, BLOCK, scratch)
        _digest(state, outer_words)
        for i in range(8):
            state[i] = pads[k, 1, i]
        _transform(state_at, outer_at)  # type: ignore[call-overload]
        at = r * (chars // 2)
        for j in range(chars // 2):  # the MAC's first bytes, two hex digits each
            pairs_out[at + j] = hex_pairs[(state[j // 4] >> np.uint32(24 - 8 * (j % 4))) & 0xFF]
    return out


def pad_states(keys: np.ndarray, key_offsets: np.ndarray) -> np.ndarray:
    """Per key ``keys[key_offsets[j]:key_offsets[j+1]]`` its SHA-256 states after the inner
    and the outer pad: an array of shape (keys, 2, 8)."""
    return _pads(keys, key_offsets, _H0)


def pseudonyms(pads: np.ndarray, key_of: np.ndarray, prefix: bytes, data: np.ndarray,
               starts: np.ndarray, ends: np.ndarray, chars: int = DIGEST_HEX,
               valid: np.ndarray | None = None, rows: np.ndarray | None = None) -> pa.Array:
    """Row r's pseudonym under key ``key_of[r]`` (an index into ``pads``) of the message
    ``prefix + data[starts[i]:ends[i]]`` with i = ``rows[r]`` (r itself without ``rows``):
    the MAC's first ``chars`` hex digits (even, at most 64), as an Arrow string array; null
    where ``valid`` (bool per row r) is False. (Spans, not offsets: a string column's rows
    are hashed where they are, without a copy; ``rows`` picks some of them without a
    gather of their spans first.)"""
    if chars % 2 or not 0 < chars <= 64:
        raise ValueError(f"chars must be even and 2-64, not {chars}")
    n = len(key_of)
    hexes = _pseudonyms(pads, np.ascontiguousarray(key_of, np.int64),
                        np.frombuffer(prefix, np.uint8), data,
                        np.ascontiguousarray(starts, np.int64),
                        np.ascontiguousarray(ends, np.int64),
                        np.arange(n) if rows is None else np.ascontiguousarray(rows, np.int64),
                        chars, _HEX_PAIRS)
    offsets = np.arange(0, (n + 1) * chars, chars, dtype=np.int32)
    validity = (None if valid is None or valid.all()
                else pa.py_buffer(np.packbits(valid, bitorder="little")))
    return pa.Array.from_buffers(pa.string(), n, [validity, pa.py_buffer(offsets),
                                                  pa.py_buffer(hexes)])
