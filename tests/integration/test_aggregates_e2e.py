"""Aggregates through the worker and the aggregator on the real broker (C20)."""

from __future__ import annotations

import random
from pathlib import Path

from tests.factories import BASE_TIME_MS, make_consent, make_record
from tests.integration.harness import (
    decoded,
    pipeline_settings,
    produce,
    read_topic,
    running_aggregator,
    running_worker,
)

HOUR = 3_600_000


def _play(rng: random.Random, subject: str, title: str, hour: int, source: str = "catalog"
          ) -> dict:
    return make_record("PlaybackEvent", rng, subject_id=subject, event_type="play",
                       title=title, content_source=source, platform="ios", country="US",
                       event_time=BASE_TIME_MS + hour * HOUR + rng.randint(0, HOUR - 1),
                       file_name=None)


def test_c20_k_anonymous_hourly_cells(kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    settings = pipeline_settings(kafka_bootstrap, tmp_path, f"agg-{unique}.")
    cat = settings.catalog
    rng = random.Random(5)
    subjects = [f"agg-{unique}-{i}" for i in range(30)]
    produce(settings, cat.consent.name,
            [(s, make_consent(s, rng, jurisdiction="US")) for s in subjects],
            schema="ConsentRecord")
    plays = ([(s, _play(rng, s, "Ocean Drift", 0)) for s in subjects[:12]]          # 12 >= k
             + [(s, _play(rng, s, "Ocean Drift", 0)) for s in subjects[:12]]        # repeats
             + [(s, _play(rng, s, "Paper Moons", 0)) for s in subjects[12:16]]      # 4 < k
             + [(s, _play(rng, s, "My Home Video", 0, "personal")) for s in subjects]  # C17
             + [(s, _play(rng, s, "Iron Valley", 2)) for s in subjects[16:28]])     # 12 >= k
    produce(settings, cat.raw_playback.name, plays, schema="PlaybackEvent")

    with running_worker(settings), running_aggregator(settings, idle_s=2.0):
        cells = decoded(read_topic(kafka_bootstrap, cat.aggregates.name,
                                   until=lambda m: len(m) >= 2, timeout=120))
        # late plays for the closed hour-0 "Paper Moons" cell lift it to k=10
        produce(settings, cat.raw_playback.name,
                [(s, _play(rng, s, "Paper Moons", 0)) for s in subjects[20:26]],
                schema="PlaybackEvent")
        cells = decoded(read_topic(kafka_bootstrap, cat.aggregates.name,
                                   until=lambda m: len(m) >= 3, timeout=120))

    got = {(c["dimensions"]["title"], c["window_start"]): c["count"] for c in cells}
    assert got == {("Ocean Drift", BASE_TIME_MS): 12, ("Iron Valley", BASE_TIME_MS + 2 * HOUR): 12,
                   ("Paper Moons", BASE_TIME_MS): 10}
    assert all(c["count"] >= 10 and c["processing_region"] for c in cells)
    assert not any("Home Video" in c["dimensions"]["title"] for c in cells)
