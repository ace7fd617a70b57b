"""The metrics module: naming, no personal data in labels, and the HTTP endpoint."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest
from prometheus_client import Counter, Gauge, Histogram

from streams import __version__, metrics

pytestmark = pytest.mark.unit

# Label names that would carry personal data (design: no subject id, e-mail, IP in labels).
PERSONAL = re.compile(r"subject|email|e_mail|mail|ip|addr|user|account|name|device|phone",
                      re.IGNORECASE)
ALLOWED_LABELS = {"topic", "destination", "reason", "clause", "error_class", "partition",
                  "sink", "table", "type", "status", "version"}


def _declared() -> list[Counter | Gauge | Histogram]:
    return [value for value in vars(metrics).values()
            if isinstance(value, Counter | Gauge | Histogram)]


def test_every_metric_is_exported_and_prefixed() -> None:
    declared = _declared()
    assert len(declared) == 18
    for metric in declared:
        assert metric._name.startswith(metrics.PREFIX), metric._name
        exported = [name for name, value in vars(metrics).items() if value is metric]
        assert set(exported) <= set(metrics.__all__), exported


def test_no_label_can_hold_personal_data() -> None:
    for metric in _declared():
        for label in metric._labelnames:
            assert label in ALLOWED_LABELS, (metric._name, label)
            assert not PERSONAL.search(label), (metric._name, label)


def test_all_is_sorted_and_complete() -> None:
    assert metrics.__all__ == sorted(metrics.__all__, key=lambda n: (not n.isupper(), n))
    for name in metrics.__all__:
        assert hasattr(metrics, name)


def test_metric_names_as_exposed() -> None:
    names = metrics.metric_names()
    assert "privacy_pipeline_events_in_total" in names
    assert "privacy_pipeline_batch_size" in names
    assert "privacy_pipeline_sink_paused" in names
    assert all(name.startswith(metrics.PREFIX) for name in names)


def test_build_info_carries_version() -> None:
    value = metrics.REGISTRY.get_sample_value(
        "privacy_pipeline_build_info", {"version": __version__})
    assert value == 1


def test_counter_moves_in_the_module_registry() -> None:
    labels = {"topic": "unit-test-topic"}
    before = metrics.REGISTRY.get_sample_value("privacy_pipeline_events_in_total", labels) or 0
    metrics.EVENTS_IN.labels(**labels).inc(3)
    after = metrics.REGISTRY.get_sample_value("privacy_pipeline_events_in_total", labels)
    assert after == before + 3


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_endpoint_serves_metrics_health_and_readiness() -> None:
    state = {"ready": False}
    with metrics.serve_metrics(0, "127.0.0.1", ready=lambda: state["ready"]) as server:
        base = f"http://127.0.0.1:{server.port}"
        status, body = _get(base + metrics.METRICS_PATH)
        assert status == 200
        assert "privacy_pipeline_build_info" in body
        assert _get(base + metrics.LIVENESS_PATH)[0] == 200
        assert _get(base + metrics.READINESS_PATH)[0] == 503
        state["ready"] = True
        assert _get(base + metrics.READINESS_PATH)[0] == 200
        assert _get(base + "/nope")[0] == 404


def test_aiohttp_response_carries_exposition() -> None:
    response = metrics.metrics_response()
    assert response.status == 200
    assert response.body is not None
    assert b"privacy_pipeline_build_info" in bytes(response.body)
