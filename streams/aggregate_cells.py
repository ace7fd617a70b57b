"""Small-cell suppression for aggregates (C20), pure.

A cell counts distinct subjects (or events) for one combination of dimension values in
one window. Cells below the policy's k-threshold could single a person out and are
never emitted; the streams work counts how many were suppressed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

__all__ = ["suppress"]

Cell = TypeVar("Cell", bound=Mapping[str, Any])


def suppress(cells: Iterable[Cell], k: int, count_key: str = "count") -> list[Cell]:
    """The cells whose ``count_key`` is at least ``k`` (order kept)."""
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    return [c for c in cells if c[count_key] >= k]
