"""The access export (C15 "know/access", "portable copy"): everything held about a subject,
as one JSON document grouped by the C13 categories. Pure: no I/O.

A value's category comes from the schema annotations (``privacy.category`` of the input
field it was derived from, ``streams.schema_catalog``); consent-record fields, which are
control data without annotations, are mapped below; a sink row's own ``data_category``
is the fallback.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from streams.schema_catalog import SchemaCatalog

FORMAT = "privacy-pipeline/access-export/v1"
# ConsentRecord fields -> C13 category (control data carries no field annotations).
CONSENT_CATEGORIES = {
    "subject_id": "identifiers", "email": "identifiers", "authorized_agents": "identifiers",
    "jurisdiction": "geolocation", "birth_year": "other_linked", "age_band": "other_linked",
    "managed_profile": "other_linked", "servers": "other_linked",
}


def field_categories(catalog: SchemaCatalog) -> dict[str, str]:
    """Input field name (and its output name) -> category, first annotation wins."""
    out: dict[str, str] = {}
    for schema in catalog.with_role("input"):
        for f in schema.fields:
            if f.privacy is not None:
                out.setdefault(f.name, f.privacy.category)
                out.setdefault(f.privacy.linked.out_name, f.privacy.category)
    return out


def export(subject_id: str, consent_history: Iterable[Mapping[str, Any]],
           sink_rows: Iterable[Mapping[str, Any]], requests: Iterable[Mapping[str, Any]],
           catalog: SchemaCatalog, note: str = "") -> dict[str, Any]:
    """The export document; ``categories`` maps each C13 category to what is held in it."""
    categories: dict[str, dict[str, list[Any]]] = {}

    def put(category: str, source: str, item: Any) -> None:
        categories.setdefault(category, {}).setdefault(source, []).append(item)

    history = [dict(r) for r in consent_history]
    for record in history:
        by_cat: dict[str, dict[str, Any]] = {}
        for name, value in record.items():
            cat = CONSENT_CATEGORIES.get(name, "preferences")
            by_cat.setdefault(cat, {})[name] = value
        for cat, values in by_cat.items():
            put(cat, "consent_records", {"effective_at": record.get("effective_at"), **values})
    known = field_categories(catalog)
    rows = [dict(r) for r in sink_rows]
    for row in rows:
        attrs = row.get("attributes") or {}
        base = {"event_id": row.get("event_id"), "source": row.get("source"),
                "event_type": row.get("event_type"), "event_time_ms": row.get("event_time_ms")}
        by_cat = {}
        for name, value in {**attrs, **(row.get("measures") or {})}.items():
            cat = known.get(name, row.get("data_category") or "internet_activity")
            by_cat.setdefault(cat, {})[name] = value
        by_cat.setdefault(row.get("data_category") or "internet_activity", {})
        for cat, values in by_cat.items():
            put(cat, "analytics_events", {**base, **values})
    return {"format": FORMAT, "subject_id": subject_id,
            "consent_state": history[-1] if history else None,
            "consent_history": history,
            "categories": categories,
            "sink_records": len(rows),
            "request_history": list(requests),
            **({"note": note} if note else {})}
