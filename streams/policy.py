"""The policy file: model (frozen dataclasses), loader and validation.

``load_policy(path)`` reads YAML (default: the ``schemas/policy.yaml`` package data),
checks it against the schema catalog, and compiles the per (schema, destination) field
plans the engine runs (``streams.field_plan``). Anything wrong raises ``PolicyError``
with one line: ``<file>: <key path>: <problem>``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from streams.errors import PolicyError
from streams.schema_catalog import CATEGORIES, SCHEMA_DIR, SchemaCatalog, default_catalog

__all__ = [
    "CLAUSE_OF_FLAG",
    "SERVER_FLAGS",
    "SUBJECT_FLAGS",
    "ConsentRef",
    "Defaults",
    "Destination",
    "Gate",
    "Policy",
    "default_policy",
    "load_policy",
]

DEFAULT_POLICY_PATH = SCHEMA_DIR / "policy.yaml"

SUBJECT_FLAGS = (
    "targeted_ads",
    "activity_sharing",
    "nonessential_cookies",
    "optional_playback_data",
    "limit_sensitive",
)
SERVER_FLAGS = ("crash_reports", "push_notifications", "optional_telemetry", "metadata_matching")
# Switch -> (drop reason when a destination needs it and it is off, clause).
CLAUSE_OF_FLAG = {
    "targeted_ads": ("targeted_ads_opted_out", "C1"),
    "activity_sharing": ("activity_sharing_off", "C2"),
    "nonessential_cookies": ("nonessential_cookies_off", "C3"),
    "crash_reports": ("crash_reports_disabled", "C4"),
    "push_notifications": ("push_notifications_disabled", "C5"),
    "optional_telemetry": ("optional_server_data_off", "C6"),
    "optional_playback_data": ("optional_playback_data_off", "C6"),
    "limit_sensitive": ("sensitive_data_limited", "C16"),
    "metadata_matching": ("metadata_matching_disabled", "C17"),
}
AUDIENCES = frozenset({"internal", "ad_tech", "friends", "restricted", "billing", "anonymous"})
# C13/C16/C17 are promises, not settings: no third party ever gets these, whatever the file says.
NEVER_THIRD_PARTY = frozenset({"payment_billing", "inferences", "sensitive", "personal_content"})
CLAUSES = frozenset(f"C{i}" for i in range(1, 22))


@dataclass(frozen=True, slots=True)
class Defaults:
    """A jurisdiction's value for every consent switch."""

    targeted_ads: bool
    activity_sharing: bool
    nonessential_cookies: bool
    optional_playback_data: bool
    limit_sensitive: bool
    crash_reports: bool
    push_notifications: bool
    optional_telemetry: bool
    metadata_matching: bool


@dataclass(frozen=True, slots=True)
class ConsentRef:
    """A consent switch: ``scope`` is "subject" or "server"."""

    scope: str
    flag: str


@dataclass(frozen=True, slots=True)
class Gate:
    """Drop a whole event of ``schemas`` (when ``field`` is in ``values``) if ``consent`` is off."""

    name: str
    clause: str
    consent: ConsentRef
    schemas: frozenset[str]
    field: str | None = None
    values: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Destination:
    name: str
    output_schema: str
    audience: str
    third_party: bool
    linkable: bool
    pseudonym_domain: str | None
    requires: tuple[ConsentRef, ...]
    exclude_personal_content: bool
    since_version: str | None
    categories: frozenset[str]
    sources: frozenset[str]
    event_types: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class Policy:
    """A loaded, validated policy file."""

    source: Path
    version: str
    versions: tuple[str, ...]
    processing_region: str
    allowed_regions: frozenset[str]
    jurisdictions: Mapping[str, Defaults]
    fallback_jurisdiction: str
    sharing_matrix: Mapping[str, frozenset[str]]
    limit_sensitive_categories: frozenset[str]
    gates: tuple[Gate, ...]
    destinations: Mapping[str, Destination]
    retention: Mapping[str, timedelta]
    k_threshold: int
    catalog: SchemaCatalog = field(compare=False, repr=False)
    plans: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def defaults_for(self, jurisdiction: str) -> Defaults:
        """Exact code, else its country part ("US-NY" -> "US"), else the fallback."""
        found = self.jurisdictions.get(jurisdiction)
        if found is None:
            found = self.jurisdictions.get(jurisdiction.split("-", 1)[0])
        return found or self.jurisdictions[self.fallback_jurisdiction]

    @property
    def fallback_defaults(self) -> Defaults:
        return self.jurisdictions[self.fallback_jurisdiction]

    def version_index(self, version: str | None) -> int:
        """Position of ``version`` in ``versions``; -1 for None or an unknown version (C21)."""
        try:
            return self.versions.index(version) if version is not None else -1
        except ValueError:
            return -1

    def region_allowed(self, region: str) -> bool:
        """C12: may a sink in ``region`` receive personal data?"""
        return region in self.allowed_regions

    def with_region(self, region: str) -> Policy:
        """The same policy processing in ``region`` (must be an allowed region, C12)."""
        if region not in self.allowed_regions:
            raise PolicyError(
                f"{self.source}: processing.allowed_regions: region {region!r} is not allowed "
                f"(allowed: {sorted(self.allowed_regions)})"
            )
        return dataclasses.replace(self, processing_region=region)

    def retention_for(self, category: str) -> timedelta:
        """C14: how long data of ``category`` (or raw_events, dead_letters, ...) is kept."""
        return self.retention[category]

    def destination_retention(self, destination: str) -> timedelta:
        """C14: a destination's topic retention / sink TTL: its shortest-lived category."""
        cats = self.destinations[destination].categories - {"sensitive"}
        return min(self.retention[c] for c in cats)


class _Reader:
    """Typed access into the YAML tree with ``file: key.path: problem`` errors."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> PolicyError:
        return PolicyError(f"{self.path}: {key}: {problem}")

    def mapping(self, node: Any, key: str) -> Mapping[str, Any]:
        if not isinstance(node, Mapping):
            raise self.fail(key, f"expected a mapping, got {type(node).__name__}")
        return node

    def get(
        self,
        node: Mapping[str, Any],
        name: str,
        key: str,
        typ: type | tuple[type, ...],
        default: Any = ...,
    ) -> Any:
        where = f"{key}.{name}" if key else name
        if name not in node:
            if default is ...:
                raise self.fail(where, "missing")
            return default
        value = node[name]
        if (
            typ is not bool
            and isinstance(value, bool)
            and not (isinstance(typ, tuple) and bool in typ)
        ):
            raise self.fail(where, f"expected {_tname(typ)}, got a boolean")
        if not isinstance(value, typ):
            raise self.fail(where, f"expected {_tname(typ)}, got {type(value).__name__} {value!r}")
        return value

    def strings(
        self, node: Mapping[str, Any], name: str, key: str, allowed: Any = None, default: Any = ...
    ) -> tuple[str, ...]:
        where = f"{key}.{name}" if key else name
        items = self.get(node, name, key, list, default)
        if items is None:
            return ()
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise self.fail(f"{where}[{i}]", f"expected a string, got {item!r}")
            if allowed is not None and item not in allowed:
                raise self.fail(
                    f"{where}[{i}]", f"unknown value {item!r} (expected one of {sorted(allowed)})"
                )
        return tuple(items)

    def only(self, node: Mapping[str, Any], key: str, allowed: set[str]) -> None:
        for name in node:
            if name not in allowed:
                where = f"{key}.{name}" if key else str(name)
                raise self.fail(where, f"unknown key (expected one of {sorted(allowed)})")


def _tname(typ: type | tuple[type, ...]) -> str:
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return {
        "str": "a string",
        "int": "an integer",
        "bool": "a boolean",
        "list": "a list",
        "dict": "a mapping",
    }.get(typ.__name__, typ.__name__)


def _consent_ref(rd: _Reader, text: Any, key: str) -> ConsentRef:
    if isinstance(text, str):
        scope, _, flag = text.rpartition(".")
        if scope == "" and flag in SUBJECT_FLAGS:
            return ConsentRef("subject", flag)
        if scope == "server" and flag in SERVER_FLAGS:
            return ConsentRef("server", flag)
    raise rd.fail(
        key,
        f"unknown consent switch {text!r} (expected one of {list(SUBJECT_FLAGS)} or "
        f"server.<{'|'.join(SERVER_FLAGS)}>)",
    )


def _duration(rd: _Reader, node: Any, key: str) -> timedelta:
    node = rd.mapping(node, key)
    if len(node) != 1 or next(iter(node)) not in ("days", "hours"):
        raise rd.fail(key, "expected exactly one of {days: N} or {hours: N}")
    unit, n = next(iter(node.items()))
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise rd.fail(f"{key}.{unit}", f"expected a non-negative integer, got {n!r}")
    return timedelta(days=n) if unit == "days" else timedelta(hours=n)


def _parse(rd: _Reader, doc: Any, catalog: SchemaCatalog) -> Policy:
    root = rd.mapping(doc, "(top level)")
    rd.only(
        root,
        "",
        {
            "version",
            "versions",
            "processing",
            "jurisdictions",
            "fallback_jurisdiction",
            "sharing_matrix",
            "limit_sensitive",
            "gates",
            "destinations",
            "retention",
            "aggregates",
        },
    )
    version = rd.get(root, "version", "", str)
    versions = rd.strings(root, "versions", "")
    if version not in versions:
        raise rd.fail("version", f"{version!r} is not listed in versions {list(versions)}")
    if len(set(versions)) != len(versions):
        raise rd.fail("versions", "duplicate version")

    proc = rd.mapping(rd.get(root, "processing", "", dict), "processing")
    rd.only(proc, "processing", {"region", "allowed_regions"})
    region = rd.get(proc, "region", "processing", str)
    allowed = frozenset(rd.strings(proc, "allowed_regions", "processing"))
    if region not in allowed:
        raise rd.fail(
            "processing.region", f"{region!r} is not in allowed_regions {sorted(allowed)}"
        )

    flags = (*SUBJECT_FLAGS, *SERVER_FLAGS)
    jurisdictions: dict[str, Defaults] = {}
    jnode = rd.mapping(rd.get(root, "jurisdictions", "", dict), "jurisdictions")
    for code, spec in jnode.items():
        key = f"jurisdictions.{code}"
        spec = rd.mapping(spec, key)
        rd.only(spec, key, {"defaults"})
        dnode = rd.mapping(rd.get(spec, "defaults", key, dict), f"{key}.defaults")
        rd.only(dnode, f"{key}.defaults", set(flags))
        values = {f: rd.get(dnode, f, f"{key}.defaults", bool) for f in flags}
        jurisdictions[str(code)] = Defaults(**values)
    fallback = rd.get(root, "fallback_jurisdiction", "", str)
    if fallback not in jurisdictions:
        raise rd.fail("fallback_jurisdiction", f"{fallback!r} is not a jurisdiction")
    fb = jurisdictions[fallback]
    if fb.targeted_ads or fb.activity_sharing:
        raise rd.fail(
            f"jurisdictions.{fallback}.defaults",
            "the fallback must fail closed: targeted_ads and activity_sharing false",
        )
    for code, d in jurisdictions.items():
        if d.activity_sharing:
            raise rd.fail(
                f"jurisdictions.{code}.defaults.activity_sharing",
                "activity sharing must default to off (C2)",
            )

    mnode = rd.mapping(rd.get(root, "sharing_matrix", "", dict), "sharing_matrix")
    matrix: dict[str, frozenset[str]] = {}
    for cat in sorted(CATEGORIES):
        if cat not in mnode:
            raise rd.fail(f"sharing_matrix.{cat}", "missing")
        matrix[cat] = frozenset(rd.strings(mnode, cat, "sharing_matrix", AUDIENCES))
    rd.only(mnode, "sharing_matrix", set(CATEGORIES))

    lnode = rd.mapping(rd.get(root, "limit_sensitive", "", dict), "limit_sensitive")
    rd.only(lnode, "limit_sensitive", {"drop_categories"})
    limited = frozenset(rd.strings(lnode, "drop_categories", "limit_sensitive", CATEGORIES))

    inputs = {s.name: s for s in catalog.with_role("input")}
    outputs = {s.name for s in catalog.with_role("output")}

    gates = []
    for i, g in enumerate(rd.get(root, "gates", "", list)):
        key = f"gates[{i}]"
        g = rd.mapping(g, key)
        rd.only(g, key, {"name", "clause", "consent", "schemas", "when"})
        clause = rd.get(g, "clause", key, str)
        if clause not in CLAUSES:
            raise rd.fail(f"{key}.clause", f"{clause!r} is not a clause id C1..C21")
        consent = _consent_ref(rd, g.get("consent"), f"{key}.consent")
        schemas = frozenset(rd.strings(g, "schemas", key, inputs))
        fld: str | None = None
        gate_values: frozenset[str] = frozenset()
        if "when" in g:
            w = rd.mapping(g["when"], f"{key}.when")
            rd.only(w, f"{key}.when", {"field", "in"})
            fld = rd.get(w, "field", f"{key}.when", str)
            for s in schemas:
                if fld not in {f.name for f in inputs[s].fields}:
                    raise rd.fail(f"{key}.when.field", f"{s} has no field {fld!r}")
            gate_values = frozenset(rd.strings(w, "in", f"{key}.when"))
        gates.append(Gate(rd.get(g, "name", key, str), clause, consent, schemas, fld, gate_values))

    destinations: dict[str, Destination] = {}
    dnode = rd.mapping(rd.get(root, "destinations", "", dict), "destinations")
    for name, spec in dnode.items():
        key = f"destinations.{name}"
        spec = rd.mapping(spec, key)
        rd.only(
            spec,
            key,
            {
                "output_schema",
                "audience",
                "third_party",
                "linkable",
                "pseudonym_domain",
                "requires",
                "exclude_personal_content",
                "since_version",
                "categories",
                "sources",
                "event_types",
            },
        )
        out = rd.get(spec, "output_schema", key, str)
        if out not in outputs:
            raise rd.fail(f"{key}.output_schema", f"{out!r} is not an output schema")
        audience = rd.get(spec, "audience", key, str)
        if audience not in AUDIENCES:
            raise rd.fail(f"{key}.audience", f"{audience!r} is not one of {sorted(AUDIENCES)}")
        third = rd.get(spec, "third_party", key, bool, False)
        linkable = rd.get(spec, "linkable", key, bool)
        domain = rd.get(spec, "pseudonym_domain", key, str, None)
        if linkable and not domain:
            raise rd.fail(f"{key}.pseudonym_domain", "a linkable destination needs a domain")
        if not linkable and domain:
            raise rd.fail(
                f"{key}.pseudonym_domain", "an unlinkable destination takes no pseudonym (C7)"
            )
        categories = frozenset(rd.strings(spec, "categories", key, CATEGORIES))
        for cat in sorted(categories):
            if audience not in matrix[cat]:
                raise rd.fail(
                    f"{key}.categories",
                    f"{cat!r} may not go to audience {audience!r} (sharing_matrix, C13)",
                )
            if third and cat in NEVER_THIRD_PARTY:
                raise rd.fail(
                    f"{key}.categories",
                    f"{cat!r} is never shared with third parties (C13, C16, C17)",
                )
        since = rd.get(spec, "since_version", key, str, None)
        if since is not None and since not in versions:
            raise rd.fail(f"{key}.since_version", f"{since!r} is not listed in versions")
        requires = tuple(
            _consent_ref(rd, r, f"{key}.requires[{i}]")
            for i, r in enumerate(rd.get(spec, "requires", key, list, []))
        )
        sources = frozenset(rd.strings(spec, "sources", key, inputs))
        ev = rd.strings(spec, "event_types", key, default=None)
        destinations[str(name)] = Destination(
            name=str(name),
            output_schema=out,
            audience=audience,
            third_party=third,
            linkable=linkable,
            pseudonym_domain=domain,
            requires=requires,
            exclude_personal_content=rd.get(spec, "exclude_personal_content", key, bool, False),
            since_version=since,
            categories=categories,
            sources=sources,
            event_types=frozenset(ev) if ev else None,
        )
    billing_like = [d.name for d in destinations.values() if "payment_billing" in d.categories]
    if any(destinations[n].audience != "billing" for n in billing_like):
        raise rd.fail("destinations", "payment_billing may only go to a billing destination (C13)")

    rnode = rd.mapping(rd.get(root, "retention", "", dict), "retention")
    rd.only(rnode, "retention", {"categories", "raw_events", "dead_letters", "aggregates", "audit"})
    retention: dict[str, timedelta] = {}
    cnode = rd.mapping(rd.get(rnode, "categories", "retention", dict), "retention.categories")
    for cat in sorted(CATEGORIES):
        if cat not in cnode:
            raise rd.fail(
                f"retention.categories.{cat}", "missing (every category needs a period, C14)"
            )
        retention[cat] = _duration(rd, cnode[cat], f"retention.categories.{cat}")
    rd.only(cnode, "retention.categories", set(CATEGORIES))
    for other in ("raw_events", "dead_letters", "aggregates", "audit"):
        retention[other] = _duration(
            rd, rd.get(rnode, other, "retention", dict), f"retention.{other}"
        )

    anode = rd.mapping(rd.get(root, "aggregates", "", dict), "aggregates")
    rd.only(anode, "aggregates", {"k_threshold"})
    k = rd.get(anode, "k_threshold", "aggregates", int)
    if k < 2:
        raise rd.fail("aggregates.k_threshold", f"must be at least 2, got {k}")

    return Policy(
        source=rd.path,
        version=version,
        versions=versions,
        processing_region=region,
        allowed_regions=allowed,
        jurisdictions=jurisdictions,
        fallback_jurisdiction=fallback,
        sharing_matrix=matrix,
        limit_sensitive_categories=limited,
        gates=tuple(gates),
        destinations=destinations,
        retention=retention,
        k_threshold=k,
        catalog=catalog,
    )


def load_policy(path: Path | str | None = None, catalog: SchemaCatalog | None = None) -> Policy:
    """Load, validate and compile a policy file (default: the shipped ``policy.yaml``)."""
    from streams.field_plan import compile_plans  # field_plan builds on this module's types

    path = Path(path) if path is not None else DEFAULT_POLICY_PATH
    catalog = catalog or default_catalog()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: (file): cannot read policy file: {exc.strerror}") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        raise PolicyError(
            f"{path}: {where}: not valid YAML: {getattr(exc, 'problem', exc)}"
        ) from exc
    rd = _Reader(path)
    policy = _parse(rd, doc, catalog)
    return dataclasses.replace(policy, plans=compile_plans(policy))


_default: Policy | None = None


def default_policy() -> Policy:
    """The shipped policy (loaded once)."""
    global _default
    if _default is None:
        _default = load_policy()
    return _default
