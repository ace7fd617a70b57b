"""Schema catalog: ids, roles, topics and the privacy annotation of every input field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from streams.errors import PolicyError
from streams.schema_catalog import (
    CATEGORIES,
    HANDLINGS,
    SCHEMA_DIR,
    default_catalog,
    load_catalog,
)

pytestmark = pytest.mark.unit

RAW_TOPICS = {"raw.playback", "raw.activity", "raw.server"}
ENVELOPE = ("event_id", "subject_id", "event_time", "event_type")


def test_every_input_field_has_category_and_handling() -> None:
    """Acceptance: no input field without a category and a handling (read from the files)."""
    for info in default_catalog().with_role("input"):
        raw = json.loads(info.file.read_text())
        for field in raw["fields"]:
            ann = field.get("privacy")
            assert isinstance(ann, dict), f"{info.name}.{field['name']} lacks privacy"
            assert ann.get("category") in CATEGORIES, f"{info.name}.{field['name']}"
            assert ann.get("handling") in HANDLINGS, f"{info.name}.{field['name']}"


def _copy_schemas(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, target, ignore=shutil.ignore_patterns("history", "*.py"))
    return target


@pytest.mark.parametrize("drop_key", ["category", "handling", "privacy"])
def test_missing_annotation_is_rejected(tmp_path: Path, drop_key: str) -> None:
    directory = _copy_schemas(tmp_path)
    path = directory / "playback_event.avsc"
    raw = json.loads(path.read_text())
    field = next(f for f in raw["fields"] if f["name"] == "platform")
    if drop_key == "privacy":
        del field["privacy"]
    else:
        del field["privacy"][drop_key]
    path.write_text(json.dumps(raw))
    with pytest.raises(PolicyError, match=r"playback_event\.avsc: fields\.platform"):
        load_catalog(directory)


def test_unknown_generalize_method_is_rejected(tmp_path: Path) -> None:
    directory = _copy_schemas(tmp_path)
    path = directory / "playback_event.avsc"
    raw = json.loads(path.read_text())
    field = next(f for f in raw["fields"] if f["name"] == "ip_address")
    field["privacy"]["method"] = "ipv4_8"
    path.write_text(json.dumps(raw))
    with pytest.raises(PolicyError, match=r"ip_address\.privacy\.method"):
        load_catalog(directory)


def test_ids_roles_and_topics() -> None:
    cat = default_catalog()
    inputs = cat.with_role("input")
    assert {s.topic for s in inputs} == RAW_TOPICS
    assert cat.by_name("ConsentRecord").topic == "control.consent"
    assert cat.by_name("SubjectRequest").topic == "control.requests"
    assert len({s.id for s in cat}) == len(cat)
    for info in inputs:
        assert tuple(f.name for f in info.fields[:4]) == ENVELOPE, info.name
        assert info.field("subject_id").privacy is not None
        assert info.field("subject_id").privacy.linked.handling == "pseudonymize"  # type: ignore[union-attr]


def test_every_output_carries_processing_region_C12() -> None:
    """C12: every output record schema has a processing_region field."""
    for info in default_catalog().with_role("output"):
        assert "processing_region" in {f.name for f in info.fields}, info.name


def test_relay_schema_has_transfer_metrics_only_C18() -> None:
    """C18: the relay event holds no payload or content field, only transfer metrics."""
    info = default_catalog().by_name("RelayTransferEvent")
    categories = {f.privacy.category for f in info.fields if f.privacy}
    assert categories <= {
        "technical",
        "identifiers",
        "geolocation",
        "other_linked",
        "internet_activity",
    }
    names = {f.name for f in info.fields}
    assert not names & {"payload", "content", "data", "title", "file_name", "body"}


def test_file_names_are_personal_content_and_dropped_outside_crash_reports_C4_C17() -> None:
    """C4/C17: file-name fields are personal content; only the crash report keeps them."""
    for info in default_catalog().with_role("input"):
        for f in info.fields:
            if f.name in {"file_name", "file_names", "file_hash"}:
                assert f.privacy is not None and f.privacy.category == "personal_content"
                if info.name != "CrashReportEvent":
                    assert f.privacy.linked.handling == "drop", (info.name, f.name)


def test_raw_email_name_and_sensitive_fields_are_dropped_C16() -> None:
    """C16: sensitive fields and raw e-mails/names are handled 'drop' in every input schema."""
    for info in default_catalog().with_role("input"):
        for f in info.fields:
            assert f.privacy is not None
            if (
                f.privacy.category == "sensitive"
                or "email" in f.name
                or f.name in {"user_name", "full_name", "owner_user_name"}
            ):
                assert f.privacy.linked.handling == "drop", (info.name, f.name)
