"""The native map builder against maps built item by item in Python (C7's attribute and
measure maps of every output record are made by it)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.map_kernel import encode_names, map_array


def _expected(names: list[str], values: list[pa.Array], local: list[bool], rows: np.ndarray,
              present: np.ndarray, value_type: pa.DataType) -> pa.Array:
    maps: list[list[tuple[str, Any]]] = []
    for r, row in enumerate(rows.tolist()):
        maps.append([(name, v[r if loc else row].as_py())
                     for name, v, loc, here in zip(names, values, local, present[r], strict=True)
                     if here and v[r if loc else row].is_valid])
    return pa.array(maps, pa.map_(pa.string(), value_type))


def _check(names: list[str], values: list[pa.Array], local: list[bool], rows: list[int],
           present: np.ndarray, value_type: pa.DataType) -> None:
    at = np.array(rows, np.int64)
    # Presence per row: each row its own kind, entry j present in kind r where present[r, j].
    built = map_array(encode_names(names), values, local, at, np.arange(len(at)), present.T,
                      value_type)
    built.validate(full=True)
    assert built.equals(_expected(names, values, local, at, present, value_type))


def test_sliced_sources_nulls_and_empty_maps() -> None:
    """Sources with an array offset (slices), null values left out by ``present`` and by
    their validity, empty strings, multi-byte UTF-8, rows read twice and out of order, rows
    with no entry."""
    batch = pa.array(["x", "", "é✓", None, "longer value", "z"]).slice(1)  # offset 1
    local = pa.array(["p0", "p1", "p2", "p3"])
    rows = [4, 0, 0, 2, 1][:4]
    present = np.array([[True, True], [False, False], [True, False], [False, True]])
    _check(["kept", "pseudonym"], [batch, local], [False, True], rows, present, pa.string())
    reals = pa.array([1.5, -0.0, float("inf"), None, 7.0]).slice(2)
    _check(["m"], [reals], [False], [2, 0, 1], np.array([[True], [True], [False]]),
           pa.float64())
    # present where the value is null (``batch[2]``, ``reals[1]``): no entry all the same
    _check(["kept"], [batch], [False], [2, 3, 2], np.ones((3, 1), bool), pa.string())
    _check(["m"], [reals], [False], [1, 0], np.ones((2, 1), bool), pa.float64())


def test_no_entries_and_no_rows() -> None:
    _check([], [], [], [0, 1], np.zeros((2, 0), bool), pa.string())
    _check(["a"], [pa.array(["v"])], [False], [], np.zeros((0, 1), bool), pa.string())


_VALUES = st.lists(st.one_of(st.none(), st.text(max_size=12)), min_size=1, max_size=20)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=8), _VALUES, st.booleans(),
                          st.integers(0, 3)), max_size=6),
       st.integers(1, 12), st.integers(1, 12), st.data())
def test_equal_to_maps_built_in_python(entries: list[tuple[str, list[str | None], bool, int]],
                                       n: int, batch: int, data: st.DataObject) -> None:
    """Generated entries: per-input-row sources (``batch`` values, read at ``rows``) and
    per-output-row ones, sliced by up to 3 values, random presence (nulls left out)."""
    rows = data.draw(st.lists(st.integers(0, batch - 1), min_size=n, max_size=n))
    names, values, local, columns = [], [], [], []
    for name, raw, loc, cut in entries:
        size = n if loc else batch
        padded = (raw * (size // len(raw) + cut + 1))[:size + cut]
        array = pa.array(padded, pa.string()).slice(cut)
        names.append(name)
        values.append(array)
        local.append(loc)
        wanted = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool)
        columns.append(wanted)  # a null value is never an entry, wanted or not
    present = np.stack(columns, axis=1) if columns else np.zeros((n, 0), bool)
    _check(names, values, local, rows, present, pa.string())
