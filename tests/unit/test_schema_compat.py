"""Schema compatibility: a change must not break readers of earlier versions.

Every schema version ever shipped is snapshotted in ``schemas/history/<Name>/v<N>.avsc``
(``python -m streams.schema_catalog snapshot``). Each current schema must equal its latest
snapshot, and data written with any version must be readable with every other version
(fastavro schema resolution, both directions: new fields need defaults).
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.utils import generate_many

from streams.schema_catalog import SCHEMA_DIR, _canonical, _strip_logical, default_catalog

pytestmark = pytest.mark.unit

HISTORY = SCHEMA_DIR / "history"


def _parse(raw: dict[str, Any]) -> Any:
    return fastavro.parse_schema(_strip_logical(copy.deepcopy(raw)), named_schemas={})


def _versions(name: str) -> list[Path]:
    return sorted((HISTORY / name).glob("v*.avsc"), key=lambda p: int(p.stem[1:]))


def incompatibilities(
    writer: dict[str, Any], reader: dict[str, Any], samples: int = 20
) -> list[str]:
    """Problems reading data written with ``writer`` using ``reader`` (empty if compatible)."""
    problems = []
    wf = {f["name"] for f in writer["fields"]}
    for f in reader["fields"]:
        if f["name"] not in wf and "default" not in f:
            problems.append(f"field {f['name']!r} is new to the reader and has no default")
    w, r = _parse(writer), _parse(reader)
    for rec in generate_many(w, samples):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, w, rec)
        buf.seek(0)
        try:
            fastavro.schemaless_reader(buf, w, r)
        except Exception as exc:  # resolution errors come in several types
            problems.append(f"{type(exc).__name__}: {exc}")
            break
    return problems


@pytest.mark.parametrize("name", [s.name for s in default_catalog()])
def test_current_schema_is_snapshotted(name: str) -> None:
    versions = _versions(name)
    assert versions, f"no history for {name}: run python -m streams.schema_catalog snapshot"
    current = _canonical(default_catalog().by_name(name).raw)
    assert versions[-1].read_text() == current, (
        f"{name} changed: run python -m streams.schema_catalog snapshot and commit it"
    )


@pytest.mark.parametrize("name", [s.name for s in default_catalog()])
def test_every_version_reads_every_other(name: str) -> None:
    current = dict(default_catalog().by_name(name).raw)
    for path in _versions(name):
        old = json.loads(path.read_text())
        assert not incompatibilities(old, current), f"{name}: current cannot read {path.name}"
        assert not incompatibilities(current, old), f"{name}: {path.name} cannot read current"


def test_the_check_catches_a_new_field_without_default() -> None:
    old = dict(default_catalog().by_name("RelayTransferEvent").raw)
    new = copy.deepcopy(old)
    new["fields"].append({"name": "packet_loss", "type": "double"})
    assert incompatibilities(old, new)
    new["fields"][-1]["default"] = 0.0
    assert not incompatibilities(old, new)


def test_the_check_catches_a_type_change() -> None:
    old = dict(default_catalog().by_name("RelayTransferEvent").raw)
    new = copy.deepcopy(old)
    field = next(f for f in new["fields"] if f["name"] == "relay_region")
    field["type"] = "int"
    assert incompatibilities(old, new)


def test_the_check_catches_a_removed_field_old_readers_need() -> None:
    old = dict(default_catalog().by_name("RelayTransferEvent").raw)
    new = copy.deepcopy(old)
    new["fields"] = [f for f in new["fields"] if f["name"] != "relay_region"]
    assert incompatibilities(new, old)
