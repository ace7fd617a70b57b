"""Grafana dashboard: every query uses a metric the code exports, and parses as PromQL."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "privacy-pipeline.json"

# Series Prometheus itself creates for every target, not the code.
PROMETHEUS_OWN = {"up"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def _exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    exprs = []
    for panel in panels:
        assert panel["targets"], panel["title"]
        exprs += [target["expr"] for target in panel["targets"]]
    return exprs


def metric_names_in(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not functions, keywords,
    label names, label values, grouping labels or durations."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges, incl. $__rate_interval
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in IDENTIFIER.finditer(text):
        after = text[match.end():].lstrip()
        word = match.group()
        if after.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def _exported(name: str) -> bool:
    exported = metrics.metric_names()
    if name in exported or name in PROMETHEUS_OWN:
        return True
    return any(name.endswith(suffix) and name.removesuffix(suffix) in exported
               for suffix in HISTOGRAM_SUFFIXES)


@pytest.mark.unit
def test_parser_finds_metric_names() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, sink) '
            '(rate(privacy_pipeline_sink_insert_seconds_bucket{sink="x"}[$__rate_interval])))'
            ' / on(sink) group_left sum(up{job="privacy-pipeline"})')
    assert metric_names_in(expr) == {"privacy_pipeline_sink_insert_seconds_bucket", "up"}


@pytest.mark.unit
def test_every_query_uses_exported_metrics() -> None:
    for expr in _exprs():
        names = metric_names_in(expr)
        assert names, expr
        unknown = sorted(name for name in names if not _exported(name))
        assert not unknown, f"{expr}: {unknown} not exported by streams/metrics.py"


@pytest.mark.unit
def test_every_exported_metric_is_on_the_dashboard() -> None:
    used = set().union(*(metric_names_in(expr) for expr in _exprs()))
    bases = {name.removesuffix(s) for name in used for s in HISTOGRAM_SUFFIXES
             if name.endswith(s)} | used
    missing = sorted(metrics.metric_names() - bases)
    assert not missing, f"exported but not on the dashboard: {missing}"


@pytest.mark.integration
def test_every_query_parses_as_promql(promtool: str, tmp_path: Path) -> None:
    # promtool has no "parse this query" command; recording rules are parsed on check.
    rules: list[dict[str, Any]] = [
        {"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, expr in enumerate(_exprs())
    ]
    path = tmp_path / "dashboard_queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
