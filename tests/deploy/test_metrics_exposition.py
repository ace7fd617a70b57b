"""The /metrics exposition, scraped over HTTP, passes `promtool check metrics`."""

from __future__ import annotations

import subprocess
import urllib.request

import pytest

from streams import metrics


@pytest.mark.integration
def test_scrape_passes_promtool_check_metrics(promtool: str) -> None:
    # Touch every labelled family so the scrape holds real samples, not just HELP/TYPE.
    metrics.EVENTS_IN.labels(topic="t").inc()
    metrics.EVENTS_OUT.labels(destination="analytics").inc()
    metrics.DROPS.labels(reason="no_consent", clause="C3").inc()
    metrics.DEAD_LETTERS.labels(error_class="SerializationError").inc()
    metrics.CONSUMER_LAG.labels(topic="t", partition="0").set(5)
    metrics.SINK_ROWS.labels(sink="clickhouse", table="events").inc(10)
    metrics.SINK_INSERT_SECONDS.labels(sink="clickhouse").observe(0.02)
    metrics.SINK_ERRORS.labels(sink="clickhouse", error_class="ClickHouseError").inc()
    metrics.SINK_PAUSED.labels(sink="clickhouse").set(0)
    metrics.REQUESTS.labels(type="deletion", status="completed").inc()
    metrics.OLDEST_OPEN_REQUEST_AGE_SECONDS.labels(type="deletion").set(0)
    with metrics.serve_metrics(0, "127.0.0.1") as server:
        url = f"http://127.0.0.1:{server.port}{metrics.METRICS_PATH}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read()
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                            timeout=60, check=False)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    assert output.strip() == "", output  # promtool prints lint problems even on exit 0
