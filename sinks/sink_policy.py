"""What the sinks need from the privacy policy: regions (C12), retention (C14), k (C20).

Read from the policy file (``streams.policy``).

``row_retention`` is pure: the retention of one analytics row is the shortest retention
among the data categories of the fields it actually carries (from the schema annotations),
so a row with a geolocation attribute expires with geolocation data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

from streams.infra import load_policy_for
from streams.schema_catalog import CATEGORIES, SchemaCatalog, default_catalog
from streams.settings import Settings


@dataclass(frozen=True)
class SinkPolicy:
    allowed_regions: frozenset[str]
    retention: Mapping[str, timedelta]  # per data category
    aggregates_retention: timedelta
    k_threshold: int
    region: str  # where this process runs: the settings' region, else the policy's

    def region_allowed(self, region: str) -> bool:
        return region in self.allowed_regions


def load_sink_policy(settings: Settings) -> SinkPolicy:
    """The sink's view of the policy file named by the settings (else the packaged one)."""
    policy = load_policy_for(settings)
    # policy.retention also holds raw_events, dead_letters, aggregates, audit periods.
    return SinkPolicy(allowed_regions=frozenset(policy.allowed_regions),
                      retention={c: t for c, t in policy.retention.items() if c in CATEGORIES},
                      aggregates_retention=policy.retention["aggregates"],
                      k_threshold=policy.k_threshold, region=policy.processing_region)


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
        # Ties resolve by name so the recorded category is deterministic.
        self._default = max(policy.retention, key=lambda c: (policy.retention[c], c))

    def __call__(self, source: str, fields: Iterable[str]) -> tuple[str, int]:
        key = (source, frozenset(fields))
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._compute(source, key[1])
        return hit

    def _compute(self, source: str, fields: frozenset[str]) -> tuple[str, int]:
        cats = {self._categories.get((source, f)) for f in (*self.BASE_FIELDS, *fields)}
        known = [c for c in cats if c is not None and c in self._policy.retention]
        category = min(known, key=lambda c: (self._policy.retention[c], c)) if known \
            else self._default
        hours = int(self._policy.retention[category].total_seconds() // 3600)
        return category, hours
