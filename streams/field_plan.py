"""Field plans: per (input schema, destination, variant) record builders, made at load.

For every input schema and every destination it may reach, the plan decides once, from
the schema annotations and the policy, what happens to each field: left out (category not
allowed, handling drop, limited sensitive), kept, pseudonymized (HMAC under the subject
key, destination domain) or generalized, and where it lands in the output schema (a
top-level field, the string ``attributes``/``features`` map, or the numeric ``measures``).
The plan is compiled into a small Python function so the engine does no per-event schema
walking. Four variants per pair: personal content (C17) x limit-sensitive (C16).

The generated source only interpolates identifiers validated by Avro's name rules and
``repr()`` literals; it is built from the shipped schemas, never from event data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streams.decisions import Dropped
from streams.errors import PolicyError
from streams.generalize import METHODS
from streams.pseudonym import pseudonymize
from streams.schema_catalog import FieldInfo, Handling, SchemaInfo

if TYPE_CHECKING:
    from streams.policy import Destination, Policy

__all__ = ["DestPlan", "FieldStep", "GatePlan", "RecordLayout", "SchemaPlan", "compile_plans"]

Builder = Callable[[dict[str, Any], bytes, str, str], dict[str, Any]]

PERSONAL = 1
LIMITED = 2
_STRINGY = {"string", "enum"}
_NUMERIC = {"int", "long", "float", "double"}
_MAPS = ("attributes", "features")
_X = "@"  # placeholder for the input value in conversion templates (never in identifiers)


@dataclass(frozen=True, slots=True)
class GatePlan:
    field: str | None
    values: frozenset[str]
    scope: str
    flag: str
    dropped: Dropped


@dataclass(frozen=True, slots=True)
class DestPlan:
    name: str
    third_party: bool
    since_index: int
    exclude_personal: bool
    event_types: frozenset[str] | None
    requires_subject: tuple[tuple[str, Dropped], ...]  # (subject switch, drop if off)
    requires_server: tuple[tuple[str, Dropped], ...]  # (server switch, drop if off)
    builders: tuple[Builder, ...]  # indexed by PERSONAL | LIMITED bits
    layouts: tuple[RecordLayout, ...]  # what each builder was made from, same index


@dataclass(frozen=True, slots=True)
class SchemaPlan:
    name: str
    gates: tuple[GatePlan, ...]
    dests: tuple[DestPlan, ...]
    personal_field: str | None
    personal_value: str | None


def _resolve(
    f: FieldInfo, dest: Destination, variant: int, limited: frozenset[str]
) -> tuple[str, Handling] | None:
    p = f.privacy
    assert p is not None  # the catalog guarantees annotations on input fields
    if variant & PERSONAL and p.personal is not None:
        category, handling = p.personal
    else:
        category, handling = p.category, (p.linked if dest.linkable else p.unlinked)
    if category == "sensitive" or category not in dest.categories:
        return None
    if variant & LIMITED and category in limited:
        return None
    if handling.handling == "drop":
        return None
    return category, handling


def _compatible(kind: str, base: str) -> bool:
    if kind in _STRINGY:
        return base in _STRINGY
    if kind in ("int", "long"):
        return base in ("int", "long", "double", "float")
    return kind == base


@dataclass(frozen=True, slots=True)
class FieldStep:
    """One input field's way into an output record, for one (destination, variant)."""

    field: str  # input field name
    handling: str  # keep | pseudonymize | generalize
    arg: str | None  # pseudonym domain, or generalizer method
    kind: str  # kind of the converted value: the input base type, "string" or "long"
    target: str  # "o" top-level field, "a" string map, "m" numeric ``measures`` map
    out_name: str
    always: bool  # required input, not generalized: always present, first in its dict


@dataclass(frozen=True, slots=True)
class RecordLayout:
    """What builds one output record: its top-level fields and the field steps.

    ``top`` is ``(output field, source, default)`` in output schema order; ``source`` is
    one of region, version, source, attributes, measures, step, default. Builders and the
    columnar engine (``streams.batch_engine``) are both made from this.
    """

    output_schema: str
    top: tuple[tuple[str, str, Any], ...]
    attr_map: str | None
    steps: tuple[FieldStep, ...]


def _layout(
    schema: SchemaInfo,
    dest: Destination,
    out: SchemaInfo,
    variant: int,
    limited: frozenset[str],
    where: str,
) -> RecordLayout:
    top = {f.name: f for f in out.fields}
    attr_map = next((m for m in _MAPS if m in top), None)
    steps: list[FieldStep] = []
    for f in schema.fields:
        resolved = _resolve(f, dest, variant, limited)
        if resolved is None:
            continue
        _, h = resolved
        name, dst = h.out_name, f"{where}: field {schema.name}.{f.name} -> {h.out_name}"
        arg: str | None = None
        if h.handling == "keep":
            kind = f.base_type
        elif h.handling == "pseudonymize":
            if not dest.linkable:
                raise PolicyError(f"{dst}: no pseudonym may reach an unlinkable destination (C7)")
            arg, kind = f"{dest.pseudonym_domain}:{name}", "string"
        else:
            assert h.method is not None
            arg = h.method
            kind = "string" if METHODS[h.method][1] == "str" else "long"
        if name in top and name not in _MAPS and name != "measures":
            if not _compatible(kind, top[name].base_type):
                raise PolicyError(f"{dst}: {kind} value does not fit {out.name}.{name}")
            target = "o"
        elif kind in _NUMERIC:
            if "measures" not in top:
                raise PolicyError(f"{dst}: {out.name} has no measures map")
            target = "m"
        elif kind in _STRINGY or kind == "boolean":
            if attr_map is None:
                raise PolicyError(f"{dst}: {out.name} has no attributes map")
            target = "a"
        else:
            raise PolicyError(f"{dst}: a {kind} value needs a top-level field in {out.name}")
        always = not f.nullable and h.handling != "generalize"
        steps.append(FieldStep(f.name, h.handling, arg, kind, target, name, always))
    always_top = {s.out_name for s in steps if s.target == "o" and s.always}
    produced = {s.out_name for s in steps if s.target == "o"}
    entries: list[tuple[str, str, Any]] = []
    for f in out.fields:
        fdef = next(x for x in out.raw["fields"] if x["name"] == f.name)
        if f.name == "processing_region":
            entries.append((f.name, "region", None))  # C12: every output carries its region
        elif f.name == "policy_version":
            entries.append((f.name, "version", None))
        elif f.name == "source":
            entries.append((f.name, "source", schema.name))
        elif f.name == attr_map:
            entries.append((f.name, "attributes", None))
        elif f.name == "measures":
            entries.append((f.name, "measures", None))
        elif f.name in always_top:
            entries.append((f.name, "step", None))
        elif f.name in produced or "default" in fdef:
            entries.append((f.name, "default", fdef.get("default")))
        else:
            raise PolicyError(f"{where}: nothing fills required field {out.name}.{f.name}")
    return RecordLayout(out.name, tuple(entries), attr_map, tuple(steps))


def _builder_source(fn: str, layout: RecordLayout) -> str:
    # Literal entries (required fields whose value can never be None) and guarded
    # statements (nullable fields, generalizers that may return None), per target dict.
    literal: dict[str, list[str]] = {"o": [], "a": [], "m": []}
    body: list[str] = []
    for s in layout.steps:
        if s.handling == "keep":
            conv = "list(@)" if s.kind == "array" else "@"
        elif s.handling == "pseudonymize":
            conv = f"_ps(K, {s.arg!r}, @)"
        else:
            conv = f"_g_{s.arg}(@)"
        if s.target == "a" and s.kind == "boolean":
            conv = f"('true' if {conv} else 'false')"
        name = s.out_name
        if s.always:
            literal[s.target].append(f"{name!r}: {conv.replace(_X, f'r[{s.field!r}]')}")
            continue
        body.append(f"    v = r.get({s.field!r})")
        body.append("    if v is not None:")
        if s.handling == "generalize":
            body.append(f"        v = {conv.replace(_X, 'v')}")
            body.append("        if v is not None:")
            body.append(f"            {s.target}[{name!r}] = v")
        else:
            body.append(f"        {s.target}[{name!r}] = {conv.replace(_X, 'v')}")
    values = {"region": "region", "version": "version", "attributes": "a", "measures": "m"}
    entries = []
    for name, source, default in layout.top:
        if source == "step":
            continue
        value = repr(default) if source in ("source", "default") else values[source]
        entries.append(f"{name!r}: {value}")
    head = [
        f"def {fn}(r, K, region, version):",
        "    a = {" + ", ".join(literal["a"]) + "}",
        "    m = {" + ", ".join(literal["m"]) + "}",
        "    o = {" + ", ".join(entries + literal["o"]) + "}",
    ]
    return "\n".join([*head, *body, "    return o", ""])


def _namespace() -> dict[str, Any]:
    ns: dict[str, Any] = {"_ps": pseudonymize}
    for method, (func, _) in METHODS.items():
        ns[f"_g_{method}"] = func
    return ns


def compile_plans(policy: Policy) -> dict[str, SchemaPlan]:
    """Compile every (input schema, destination) pair of ``policy``; PolicyError if unsound."""
    from streams.policy import CLAUSE_OF_FLAG

    catalog = policy.catalog
    plans: dict[str, SchemaPlan] = {}
    for schema in catalog.with_role("input"):
        dests = []
        for dest in policy.destinations.values():
            if schema.name not in dest.sources:
                continue
            where = f"{policy.source}: destinations.{dest.name}"
            out = catalog.by_name(dest.output_schema)
            builders, layouts = [], []
            for variant in range(4):
                fn = f"build_{schema.name}_{dest.name}_{variant}"
                layout = _layout(
                    schema, dest, out, variant, policy.limit_sensitive_categories, where
                )
                layouts.append(layout)
                src = _builder_source(fn, layout)
                ns = _namespace()
                exec(compile(src, f"<field plan {fn}>", "exec"), ns)  # see module docstring
                builders.append(ns[fn])
            req_subject = tuple(
                (r.flag, Dropped(*CLAUSE_OF_FLAG[r.flag]))
                for r in dest.requires
                if r.scope == "subject"
            )
            req_server = tuple(
                (r.flag, Dropped(*CLAUSE_OF_FLAG[r.flag]))
                for r in dest.requires
                if r.scope == "server"
            )
            dests.append(
                DestPlan(
                    name=dest.name,
                    third_party=dest.third_party,
                    since_index=policy.version_index(dest.since_version)
                    if dest.since_version
                    else 0,
                    exclude_personal=dest.exclude_personal_content,
                    event_types=dest.event_types,
                    requires_subject=req_subject,
                    requires_server=req_server,
                    builders=tuple(builders),
                    layouts=tuple(layouts),
                )
            )
        gates = tuple(
            GatePlan(g.field, g.values, g.consent.scope, g.consent.flag, Dropped(g.name, g.clause))
            for g in policy.gates
            if schema.name in g.schemas
        )
        pf, pv = schema.personal_when or (None, None)
        plans[schema.name] = SchemaPlan(schema.name, gates, tuple(dests), pf, pv)
    return plans


def builder_source(policy: Policy, schema: str, destination: str, variant: int = 0) -> str:
    """The generated source of one builder (for debugging and review)."""
    dest = policy.destinations[destination]
    layout = _layout(
        policy.catalog.by_name(schema),
        dest,
        policy.catalog.by_name(dest.output_schema),
        variant,
        policy.limit_sensitive_categories,
        str(policy.source),
    )
    return _builder_source("build", layout)
