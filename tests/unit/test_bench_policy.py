"""The engine benchmark runs and reports events_per_s (figures: docs/traceability.md)."""

from __future__ import annotations

import json

import pytest

from streams import bench_policy

pytestmark = pytest.mark.unit


def test_run_reports_events_per_s() -> None:
    result = bench_policy.run(events=2_000, seed=1)
    assert result["events"] == 2_000 and result["events_per_s"] > 0
    assert sum(result["outcomes"].values()) == 2_000


def test_main_prints_one_json_object_last(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_policy.main(["1000", "2"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["events"] == 1000
