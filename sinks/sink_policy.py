"""What the sinks need from the privacy policy: regions (C12), retention (C14), k (C20).

Read from ``streams.policy`` (the policy file) when that module is present. Until the
policy branch is merged a built-in copy of the policy file's values is used.
TODO(policy): drop ``_BUILTIN`` once ``streams.policy.load_policy`` is on main.

``row_retention`` is pure: the retention of one analytics row is the shortest retention
among the data categories of the fields it actually carries (from the schema annotations),
so a row with a geolocation attribute expires with geolocation data.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

from streams.schema_catalog import SchemaCatalog, default_catalog
from streams.settings import Settings

_DAY = timedelta(days=1)


@dataclass(frozen=True)
class SinkPolicy:
    allowed_regions: frozenset[str]
    retention: Mapping[str, timedelta]  # per data category
    aggregates_retention: timedelta
    k_threshold: int

    def region_allowed(self, region: str) -> bool:
        return region in self.allowed_regions


_BUILTIN = SinkPolicy(
    allowed_regions=frozenset({"us", "us-east", "us-west"}),
    retention={"identifiers": 395 * _DAY, "commercial": 730 * _DAY,
               "internet_activity": 395 * _DAY, "geolocation": 90 * _DAY,
               "other_linked": 395 * _DAY, "technical": 180 * _DAY,
               "inferences": 180 * _DAY, "payment_billing": 2555 * _DAY,
               "personal_content": 30 * _DAY, "sensitive": timedelta(0)},
    aggregates_retention=730 * _DAY,
    k_threshold=10,
)


def load_sink_policy(settings: Settings) -> SinkPolicy:
    """The sink's view of the policy file named by the settings (else the packaged one)."""
    try:
        policy_mod = importlib.import_module("streams.policy")
    except ModuleNotFoundError:
        return _BUILTIN
    policy: Any = policy_mod.load_policy(settings.policy_file)
    return SinkPolicy(allowed_regions=frozenset(policy.allowed_regions),
                      retention=dict(policy.retention),
                      aggregates_retention=policy.retention.get(
                          "aggregates", _BUILTIN.aggregates_retention),
                      k_threshold=int(policy.k_threshold))


@lru_cache(maxsize=1)
def _field_categories(catalog: SchemaCatalog) -> dict[tuple[str, str], str]:
    """(source schema, output field name) -> data category, for every input schema."""
    out: dict[tuple[str, str], str] = {}
    for schema in catalog.with_role("input"):
        for f in schema.fields:
            if f.privacy is not None:
                out[(schema.name, f.name)] = f.privacy.category
                out[(schema.name, f.privacy.linked.out_name)] = f.privacy.category
    return out


class RowRetention:
    """Retention (hours) and binding category of analytics rows, cached per field set."""

    # Every analytics row carries its event type and time.
    BASE_FIELDS = ("event_type", "event_time")

    def __init__(self, policy: SinkPolicy, catalog: SchemaCatalog | None = None) -> None:
        self._policy = policy
        self._categories = _field_categories(catalog or default_catalog())
        self._cache: dict[tuple[str, frozenset[str]], tuple[str, int]] = {}
        longest = max(policy.retention.values())
        self._default = next(c for c, t in policy.retention.items() if t == longest)

    def __call__(self, source: str, fields: Iterable[str]) -> tuple[str, int]:
        key = (source, frozenset(fields))
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._compute(source, key[1])
        return hit

    def _compute(self, source: str, fields: frozenset[str]) -> tuple[str, int]:
        cats = {self._categories.get((source, f)) for f in (*self.BASE_FIELDS, *fields)}
        known = [c for c in cats if c is not None and c in self._policy.retention]
        category = min(known, key=lambda c: self._policy.retention[c]) if known \
            else self._default
        hours = int(self._policy.retention[category].total_seconds() // 3600)
        return category, hours
