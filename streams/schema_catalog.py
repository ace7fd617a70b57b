"""The schema catalog: every Avro schema, its permanent id, role and topic.

``schemas/index.yaml`` lists the schemas; each ``.avsc`` file is parsed once with
``fastavro.parse_schema``. Input schemas must annotate every field with
``"privacy": {"category": ..., "handling": ...}`` (see ``CATEGORIES``/``HANDLINGS``);
a missing or unknown annotation raises ``PolicyError`` naming the file and field.

Run ``python -m streams.schema_catalog snapshot`` after changing a schema: it copies
each changed schema into ``schemas/history/<Name>/v<N>.avsc``, the versions the
compatibility test checks new schemas against.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
import yaml

from streams.errors import PolicyError
from streams.generalize import METHODS

__all__ = [
    "CATEGORIES",
    "HANDLINGS",
    "FieldInfo",
    "FieldPrivacy",
    "SchemaCatalog",
    "SchemaInfo",
    "default_catalog",
    "load_catalog",
]

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

# C13 categories plus the extra ones the issue allows.
CATEGORIES = frozenset(
    {
        "identifiers",
        "payment_billing",
        "commercial",
        "internet_activity",
        "geolocation",
        "inferences",
        "other_linked",
        "sensitive",
        "personal_content",
        "technical",
    }
)
HANDLINGS = frozenset({"keep", "drop", "pseudonymize", "generalize"})
ROLES = frozenset({"input", "control", "output"})
NUMERIC = frozenset({"int", "long", "float", "double"})


@dataclass(frozen=True, slots=True)
class Handling:
    """What to do with a field: ``handling`` plus ``method`` when generalizing."""

    handling: str
    method: str | None
    out_name: str


@dataclass(frozen=True, slots=True)
class FieldPrivacy:
    """A field's privacy annotation.

    ``linked`` applies to destinations that may hold a pseudonymous subject link;
    ``unlinked`` to anonymous ones (ML training, metadata matching). ``personal`` is the
    (category, handling) that replaces the default when the record is personal content.
    """

    category: str
    linked: Handling
    unlinked: Handling
    personal: tuple[str, Handling] | None


@dataclass(frozen=True, slots=True)
class FieldInfo:
    name: str
    base_type: str  # string, long, int, double, boolean, enum, array, map, bytes, record
    nullable: bool
    privacy: FieldPrivacy | None

    @property
    def numeric(self) -> bool:
        return self.base_type in NUMERIC


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    id: int
    name: str
    file: Path
    role: str
    topic: str | None
    raw: Mapping[str, Any]
    parsed: Any  # fastavro parsed schema, logical types stripped: ints on the wire and in memory
    fields: tuple[FieldInfo, ...]
    personal_when: tuple[str, str] | None  # (field, value) marking personal content (C17)

    def field(self, name: str) -> FieldInfo:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


class SchemaCatalog:
    """Every schema by id and by name."""

    def __init__(self, schemas: list[SchemaInfo]) -> None:
        self._by_id = {s.id: s for s in schemas}
        self._by_name = {s.name: s for s in schemas}

    def __iter__(self) -> Iterator[SchemaInfo]:
        return iter(sorted(self._by_id.values(), key=lambda s: s.id))

    def __len__(self) -> int:
        return len(self._by_id)

    def by_id(self, schema_id: int) -> SchemaInfo:
        return self._by_id[schema_id]

    def by_name(self, name: str) -> SchemaInfo:
        return self._by_name[name]

    def get(self, key: int | str) -> SchemaInfo | None:
        if isinstance(key, int):
            return self._by_id.get(key)
        return self._by_name.get(key)

    def with_role(self, role: str) -> list[SchemaInfo]:
        return [s for s in self if s.role == role]

    def for_topic(self, topic: str) -> list[SchemaInfo]:
        return [s for s in self if s.topic == topic]


def _strip_logical(node: Any) -> Any:
    """Drop logicalType so timestamps stay epoch-millis ints and uuids plain strings."""
    if isinstance(node, dict):
        return {k: _strip_logical(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical(v) for v in node]
    return node


def _type_shape(avro_type: Any) -> tuple[str, bool]:
    nullable = False
    if isinstance(avro_type, list):
        branches = [b for b in avro_type if b != "null"]
        nullable = len(branches) < len(avro_type)
        avro_type = branches[0] if len(branches) == 1 else "union"
    if isinstance(avro_type, dict):
        avro_type = avro_type["type"]
    return str(avro_type), nullable


def _handling(spec: Any, where: str, field: str) -> Handling:
    if not isinstance(spec, Mapping):
        raise PolicyError(f"{where}: expected a mapping with 'handling'")
    handling = spec.get("handling")
    if handling not in HANDLINGS:
        raise PolicyError(f"{where}.handling: {handling!r} is not one of {sorted(HANDLINGS)}")
    method = spec.get("method")
    if handling == "generalize" and method not in METHODS:
        raise PolicyError(
            f"{where}.method: generalize needs a method from {sorted(METHODS)}, got {method!r}"
        )
    if handling != "generalize" and method is not None:
        raise PolicyError(f"{where}.method: only 'generalize' takes a method")
    default_out = f"{field}_pseudonym" if handling == "pseudonymize" else field
    return Handling(str(handling), method, str(spec.get("as", default_out)))


def _privacy(field: Mapping[str, Any], where: str) -> FieldPrivacy:
    ann = field.get("privacy")
    if not isinstance(ann, Mapping):
        raise PolicyError(f"{where}: input field has no 'privacy' annotation")
    category = ann.get("category")
    if category not in CATEGORIES:
        raise PolicyError(
            f"{where}.privacy.category: {category!r} is not one of {sorted(CATEGORIES)}"
        )
    name = str(field["name"])
    linked = _handling(ann, f"{where}.privacy", name)
    if "unlinked" in ann:
        spec = dict(ann["unlinked"]) if isinstance(ann["unlinked"], Mapping) else ann["unlinked"]
        unlinked = _handling(spec, f"{where}.privacy.unlinked", name)
    elif linked.handling == "pseudonymize":
        unlinked = Handling("drop", None, linked.out_name)  # C7: no pseudonym in unlinked outputs
    else:
        unlinked = linked
    personal = None
    if "personal" in ann:
        p = ann["personal"]
        pcat = p.get("category") if isinstance(p, Mapping) else None
        if pcat not in CATEGORIES:
            raise PolicyError(f"{where}.privacy.personal.category: {pcat!r} is not a category")
        personal = (str(pcat), _handling(p, f"{where}.privacy.personal", name))
    return FieldPrivacy(str(category), linked, unlinked, personal)


def _load_schema(entry: Mapping[str, Any], directory: Path, named: dict[str, Any]) -> SchemaInfo:
    where = f"{directory / 'index.yaml'}: schemas[id={entry.get('id')}]"
    for key in ("id", "name", "file", "role"):
        if key not in entry:
            raise PolicyError(f"{where}.{key}: missing")
    if entry["role"] not in ROLES:
        raise PolicyError(f"{where}.role: {entry['role']!r} is not one of {sorted(ROLES)}")
    if entry["role"] == "input" and not entry.get("topic"):
        raise PolicyError(f"{where}.topic: an input schema must name its raw topic")
    path = directory / str(entry["file"])
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PolicyError(f"{path}: cannot read schema: {exc}") from exc
    if raw.get("name") != entry["name"]:
        raise PolicyError(
            f"{path}: record name {raw.get('name')!r} != index name {entry['name']!r}"
        )
    try:
        parsed = fastavro.parse_schema(_strip_logical(copy.deepcopy(raw)), named_schemas=named)
    except Exception as exc:  # fastavro raises several unrelated types for bad schemas
        raise PolicyError(f"{path}: invalid Avro schema: {exc}") from exc
    fields = []
    for fdef in raw["fields"]:
        base, nullable = _type_shape(fdef["type"])
        privacy = None
        if entry["role"] == "input":
            privacy = _privacy(fdef, f"{path}: fields.{fdef['name']}")
        fields.append(FieldInfo(str(fdef["name"]), base, nullable, privacy))
    personal_when = None
    if "personal_content_when" in raw:
        pw = raw["personal_content_when"]
        personal_when = (str(pw["field"]), str(pw["equals"]))
    if entry["role"] == "input":
        names = {f.name for f in fields}
        missing = {"event_id", "subject_id", "event_time", "event_type"} - names
        if missing:
            raise PolicyError(f"{path}: input schema lacks envelope fields {sorted(missing)}")
    return SchemaInfo(
        id=int(entry["id"]),
        name=str(entry["name"]),
        file=path,
        role=str(entry["role"]),
        topic=entry.get("topic"),
        raw=raw,
        parsed=parsed,
        fields=tuple(fields),
        personal_when=personal_when,
    )


def load_catalog(directory: Path | str | None = None) -> SchemaCatalog:
    """Load and validate every schema listed in ``<directory>/index.yaml``."""
    directory = Path(directory) if directory is not None else SCHEMA_DIR
    index_path = directory / "index.yaml"
    try:
        index = yaml.safe_load(index_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"{index_path}: cannot read schema index: {exc}") from exc
    entries = index.get("schemas") if isinstance(index, Mapping) else None
    if not isinstance(entries, list):
        raise PolicyError(f"{index_path}: schemas: expected a list")
    schemas: list[SchemaInfo] = []
    seen_ids: set[int] = set()
    for entry in entries:
        info = _load_schema(entry, directory, {})
        if info.id in seen_ids or not 0 <= info.id < 2**31:
            raise PolicyError(f"{index_path}: schemas[id={info.id}]: duplicate or invalid id")
        seen_ids.add(info.id)
        schemas.append(info)
    return SchemaCatalog(schemas)


@lru_cache(maxsize=1)
def default_catalog() -> SchemaCatalog:
    """The catalog shipped in the ``schemas`` package (loaded once)."""
    return load_catalog()


def _canonical(raw: Mapping[str, Any]) -> str:
    return json.dumps(raw, sort_keys=True, indent=2) + "\n"


def snapshot(directory: Path | None = None) -> list[Path]:
    """Copy every schema that differs from its latest snapshot into ``history/``."""
    directory = directory or SCHEMA_DIR
    written = []
    for info in load_catalog(directory):
        hist = directory / "history" / info.name
        versions = sorted(hist.glob("v*.avsc"), key=lambda p: int(p.stem[1:]))
        text = _canonical(info.raw)
        if versions and versions[-1].read_text(encoding="utf-8") == text:
            continue
        hist.mkdir(parents=True, exist_ok=True)
        target = hist / f"v{len(versions) + 1}.avsc"
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


if __name__ == "__main__":  # pragma: no cover - maintenance command
    if sys.argv[1:] != ["snapshot"]:
        sys.exit("usage: python -m streams.schema_catalog snapshot")
    for p in snapshot():
        print(f"wrote {p}")
