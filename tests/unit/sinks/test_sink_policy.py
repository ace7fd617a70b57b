"""C14: a row's retention is the shortest among the data categories it carries."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from sinks.sink_policy import RowRetention, SinkPolicy, load_sink_policy
from streams.settings import Settings


@pytest.fixture
def packaged(tmp_path: Path) -> SinkPolicy:
    """The sinks' view of the packaged policy file (schemas/policy.yaml)."""
    return load_sink_policy(Settings.from_env({"PRIVACY_PIPELINE_HOME": str(tmp_path)}))


def test_row_retention_follows_the_shortest_category(packaged: SinkPolicy) -> None:
    retention = RowRetention(packaged)
    # event_type (internet_activity, 395 d), event_time (other_linked, 395 d),
    # platform (technical, 180 d), country (geolocation, 90 d)
    assert retention("PlaybackEvent", []) == ("internet_activity", 395 * 24)
    assert retention("PlaybackEvent", ["platform"]) == ("technical", 180 * 24)
    assert retention("PlaybackEvent", ["platform", "country"]) == ("geolocation", 90 * 24)
    # Output names of generalized fields map back to their source category.
    assert retention("PlaybackEvent", ["postal_region"]) == ("geolocation", 90 * 24)


def test_unknown_source_gets_the_policys_longest_period() -> None:
    policy = SinkPolicy(allowed_regions=frozenset({"us-east"}),
                        retention={"technical": timedelta(days=10),
                                   "commercial": timedelta(days=20)},
                        aggregates_retention=timedelta(days=30), k_threshold=10,
                        region="us-east")
    assert RowRetention(policy)("Nope", ["x"]) == ("commercial", 20 * 24)


def test_region_rule(packaged: SinkPolicy) -> None:
    assert packaged.region == "us-east" and packaged.region_allowed("us-east")
    assert not packaged.region_allowed("eu-west")
