"""The native pseudonym kernel against its definition, ``pseudonym.pseudonymize``."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.hmac_kernel import pad_states, pseudonyms
from streams.pseudonym import pseudonymize


def _packed(items: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    data = np.frombuffer(b"".join(items), np.uint8)
    return data, np.cumsum([0] + [len(x) for x in items]).astype(np.int64)


def _native(keys: list[bytes], key_of: list[int], domain: str, values: list[str]) -> list[str]:
    pads = pad_states(*_packed(keys))
    data, offsets = _packed([v.encode() for v in values])
    return pseudonyms(pads, np.array(key_of, np.int64), domain.encode() + b"\x00", data,
                      offsets[:-1], offsets[1:]).to_pylist()


def test_every_block_boundary_and_key_length() -> None:
    """Messages of 0-200 bytes cross the one-block limit (55 bytes with padding) and the
    two-block one, in rising then falling length (a short value after a long one in the
    reused block); keys of 16-130 bytes include keys longer than a block (hashed first)."""
    keys = [bytes(range(n)) for n in (16, 32, 63, 64, 65, 130)]
    domain = "analytics:subject_pseudonym"
    rising = ["v" * n for n in range(0, 201)] + ["é" * 40, "ü✓" * 70, "\x00inner nul"]
    values = rising + rising[::-1]
    for k in range(len(keys)):
        expected = [pseudonymize(keys[k], domain, v) for v in values]
        assert _native(keys, [k] * len(values), domain, values) == expected


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(min_size=16, max_size=100), min_size=1, max_size=4),
       st.text(min_size=1, max_size=80).filter(lambda d: "\x00" not in d),
       st.lists(st.tuples(st.integers(0, 3), st.text(max_size=120)), max_size=30))
def test_equal_to_pseudonymize(keys: list[bytes], domain: str,
                               rows: list[tuple[int, str]]) -> None:
    key_of = [k % len(keys) for k, _ in rows]
    values = [v for _, v in rows]
    expected = [pseudonymize(keys[k], domain, v) for k, v in zip(key_of, values, strict=True)]
    assert _native(keys, key_of, domain, values) == expected


_POOL = ["", "a", "abcdefg", "abcdefgh", "abcdefgh\x00", "abcdefghi", "abcdefgi", "é" * 9,
         "user615085", "user615086", "x" * 50, "x" * 51, "y" * 130]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=16, max_size=70), min_size=1, max_size=3, unique=True),
       st.lists(st.tuples(st.integers(0, 2), st.sampled_from(_POOL)), min_size=1,
                max_size=300))
def test_repeated_pairs_equal_to_pseudonymize(keys: list[bytes],
                                              rows: list[tuple[int, str]]) -> None:
    """Rows that repeat keys take the repeat lookup (a repeated (key, value) copies its
    first row's pseudonym): values that differ only past a word, by a trailing NUL or in
    length, and the same value under another key, all stay distinct."""
    key_of = [k % len(keys) for k, _ in rows]
    values = [v for _, v in rows]
    expected = [pseudonymize(keys[k], "d", v) for k, v in zip(key_of, values, strict=True)]
    assert _native(keys, key_of, "d", values) == expected


def test_rows_pick_spans_and_valid_makes_nulls() -> None:
    """``rows`` reads some spans of a column (repeated, out of order) as the batch engine
    does for a destination's rows; ``valid`` False gives a null there."""
    keys = [bytes(range(32)), bytes(range(1, 33))]
    values = ["alpha", "", "beta" * 20, "alpha", "gamma"]
    data, offsets = _packed([v.encode() for v in values])
    rows = np.array([4, 0, 3, 2, 0, 1])
    key_of = np.array([0, 1, 1, 0, 1, 0])
    valid = np.array([True, True, False, True, True, True])
    got = pseudonyms(pad_states(*_packed(keys)), key_of, b"d\x00", data, offsets[:-1],
                     offsets[1:], rows=rows, valid=valid).to_pylist()
    assert got == [None if not ok else pseudonymize(keys[k], "d", values[r])
                   for r, k, ok in zip(rows.tolist(), key_of.tolist(), valid.tolist(),
                                       strict=True)]
