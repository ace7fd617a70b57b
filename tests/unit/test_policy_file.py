"""The policy file: loads, and an invalid one fails with one line naming file, key, problem."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.errors import ConfigError, PolicyError
from streams.policy import DEFAULT_POLICY_PATH, default_policy, load_policy

pytestmark = pytest.mark.unit


def _doc() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_POLICY_PATH.read_text())


def _write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return path


def _error(tmp_path: Path, doc: Any) -> str:
    path = _write(tmp_path, doc)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = str(info.value)
    assert "\n" not in message, "one line"
    assert message.startswith(f"{path}: "), "names the file"
    return message


def test_shipped_policy_loads() -> None:
    policy = default_policy()
    assert policy.version == "2024-06-28"
    assert set(policy.destinations) == {
        "analytics",
        "ml_training",
        "advertising",
        "social",
        "crash_triage",
        "metadata_matching",
        "billing",
    }
    assert isinstance(PolicyError("x"), ConfigError)


def test_unknown_category_names_key_and_problem(tmp_path: Path) -> None:
    doc = _doc()
    doc["destinations"]["analytics"]["categories"].append("biometrics")
    msg = _error(tmp_path, doc)
    assert "destinations.analytics.categories[7]" in msg
    assert "unknown value 'biometrics'" in msg


def test_missing_key(tmp_path: Path) -> None:
    doc = _doc()
    del doc["aggregates"]["k_threshold"]
    assert "aggregates.k_threshold: missing" in _error(tmp_path, doc)


def test_wrong_type(tmp_path: Path) -> None:
    doc = _doc()
    doc["aggregates"]["k_threshold"] = "ten"
    assert "aggregates.k_threshold: expected an integer" in _error(tmp_path, doc)


def test_typo_in_key_is_an_unknown_key(tmp_path: Path) -> None:
    doc = _doc()
    doc["destinations"]["social"]["requiers"] = doc["destinations"]["social"].pop("requires")
    assert "destinations.social.requiers: unknown key" in _error(tmp_path, doc)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    msg = _error(tmp_path, "version: [unclosed\n")
    assert "line" in msg and "not valid YAML" in msg


def test_missing_file() -> None:
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy("/nonexistent/policy.yaml")


def test_unknown_consent_switch(tmp_path: Path) -> None:
    doc = _doc()
    doc["destinations"]["advertising"]["requires"] = ["targeted_ad"]
    msg = _error(tmp_path, doc)
    assert "destinations.advertising.requires[0]: unknown consent switch 'targeted_ad'" in msg


def test_payment_to_advertising_is_refused_C13(tmp_path: Path) -> None:
    """C13: payment/billing data can never be configured into an ad-tech destination."""
    doc = _doc()
    doc["destinations"]["advertising"]["categories"].append("payment_billing")
    msg = _error(tmp_path, doc)
    assert "destinations.advertising.categories" in msg and "payment_billing" in msg


def test_inferences_to_a_third_party_are_refused_C13(tmp_path: Path) -> None:
    """C13: even if the sharing matrix allowed it, inferences never go to a third party."""
    doc = _doc()
    doc["sharing_matrix"]["inferences"].append("ad_tech")
    doc["destinations"]["advertising"]["categories"].append("inferences")
    assert "never shared with third parties" in _error(tmp_path, doc)


def test_sharing_cannot_default_on_C2(tmp_path: Path) -> None:
    """C2: activity sharing defaults to off in every jurisdiction."""
    doc = _doc()
    doc["jurisdictions"]["EU"]["defaults"]["activity_sharing"] = True
    assert "jurisdictions.EU.defaults.activity_sharing" in _error(tmp_path, doc)


def test_fallback_must_fail_closed(tmp_path: Path) -> None:
    doc = _doc()
    doc["jurisdictions"]["ZZ"]["defaults"]["targeted_ads"] = True
    assert "fail closed" in _error(tmp_path, doc)


def test_unlinkable_destination_takes_no_pseudonym_C7(tmp_path: Path) -> None:
    """C7: the ML-training destination cannot be given a pseudonym domain."""
    doc = _doc()
    doc["destinations"]["ml_training"]["pseudonym_domain"] = "analytics"
    assert "destinations.ml_training.pseudonym_domain" in _error(tmp_path, doc)


def test_processing_region_must_be_allowed_C12(tmp_path: Path) -> None:
    """C12: the configured region must be one of the allowed regions."""
    doc = _doc()
    doc["processing"]["region"] = "eu-west"
    assert "processing.region: 'eu-west' is not in allowed_regions" in _error(tmp_path, doc)
    policy = default_policy()
    assert policy.region_allowed("us-west") and not policy.region_allowed("eu-west")
    assert policy.with_region("us-west").processing_region == "us-west"
    with pytest.raises(PolicyError, match="allowed_regions"):
        policy.with_region("ap-south")


def test_retention_per_category_C14(tmp_path: Path) -> None:
    """C14: every category has a retention period; destinations get the shortest of theirs."""
    policy = default_policy()
    assert policy.retention_for("payment_billing") == timedelta(days=2555)
    assert policy.retention_for("geolocation") == timedelta(days=90)
    assert policy.retention_for("raw_events") == timedelta(hours=72)
    assert policy.destination_retention("crash_triage") == timedelta(days=30)
    assert policy.destination_retention("analytics") == timedelta(days=90)
    doc = _doc()
    del doc["retention"]["categories"]["inferences"]
    assert "retention.categories.inferences: missing" in _error(tmp_path, doc)
    doc = _doc()
    doc["retention"]["categories"]["inferences"] = {"weeks": 3}
    assert "retention.categories.inferences" in _error(tmp_path, doc)


def test_k_threshold_C20(tmp_path: Path) -> None:
    """C20: the aggregate k-threshold lives in the policy file and must be >= 2."""
    assert default_policy().k_threshold == 10
    doc = _doc()
    doc["aggregates"]["k_threshold"] = 1
    assert "aggregates.k_threshold: must be at least 2" in _error(tmp_path, doc)


def test_policy_versions_C21(tmp_path: Path) -> None:
    """C21: the current version and every destination's since_version are listed versions."""
    policy = default_policy()
    assert policy.version_index("2023-09-01") == 0
    assert policy.version_index("1999-01-01") == -1
    assert policy.destinations["ml_training"].since_version == "2024-06-28"
    doc = _doc()
    doc["destinations"]["ml_training"]["since_version"] = "2025-01-01"
    assert "destinations.ml_training.since_version" in _error(tmp_path, doc)


def test_gate_on_a_missing_field(tmp_path: Path) -> None:
    doc = _doc()
    doc["gates"][0]["when"]["field"] = "cookie_kind"
    assert "gates[0].when.field: ActivityEvent has no field 'cookie_kind'" in _error(tmp_path, doc)


def test_field_plan_errors_name_the_destination(tmp_path: Path) -> None:
    doc = _doc()
    doc["destinations"]["billing"]["categories"].remove("technical")
    msg = _error(tmp_path, doc)
    assert "destinations.billing" in msg and "BillingRecord.event_id" in msg
