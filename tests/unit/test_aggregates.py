"""Hourly aggregates with small-cell suppression (C20), pure logic."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from streams.aggregates import (
    DIMENSIONS,
    WINDOW_MS,
    Contributions,
    Windows,
    cell_of,
    subject_token,
    token_key,
)
from streams.aggregator import decode_partials
from streams.codec import default_codec
from streams.errors import SerializationError
from streams.event_columns import subject_tokens

H0 = 1_767_225_600_000


def play(subject: int, window: int = 0, title: str = "Ocean Drift", source: str = "catalog",
         platform: str = "ios") -> dict:
    return {"source": "PlaybackEvent", "event_type": "play", "event_time": H0 + window * WINDOW_MS
            + subject, "attributes": {"title": title, "platform": platform, "country": "US",
                                      "content_source": source}}


def partials(events: list[tuple[dict, str]]) -> list[dict]:
    contrib = Contributions(token_key(b"m" * 32))
    for rec, subject in events:
        contrib.add(rec, subject)
    return [p for _, p in contrib.records("us-east")]


def test_c20_cells_under_k_are_never_emitted() -> None:
    windows = Windows(k=10, region="us-east")
    big = [(play(i), f"s{i}") for i in range(12)]
    small = [(play(i, title="Paper Moons"), f"s{i}") for i in range(9)]
    for p in partials(big + small):
        windows.add(p, closed_before=0)
    cells = windows.close(before=H0 + WINDOW_MS)
    assert [(c["dimensions"]["title"], c["count"]) for c in cells] == [("Ocean Drift", 12)]


def test_c20_counts_distinct_subjects_across_batches_and_workers() -> None:
    windows = Windows(k=3, region="us-east")
    # the same two subjects in two batches (two workers) count once each
    for batch in ([(play(1), "a"), (play(2), "b")], [(play(3), "a"), (play(4), "b")]):
        for p in partials(batch):
            windows.add(p, closed_before=0)
    assert windows.close(before=H0 + WINDOW_MS) == []  # 2 distinct < k=3


def test_c20_late_event_corrects_a_closed_window_upwards_only() -> None:
    windows = Windows(k=3, region="us-east")
    for p in partials([(play(i), f"s{i}") for i in range(2)]):
        windows.add(p, closed_before=0)
    assert windows.close(before=H0 + WINDOW_MS) == []
    # a late contribution lifts the closed cell to k: now, and only now, it is emitted
    late = windows.add(partials([(play(5), "s5")])[0], closed_before=H0 + WINDOW_MS)
    assert [c["count"] for c in late] == [3]
    # the same subject again changes nothing: no duplicate or smaller re-emission
    assert windows.add(partials([(play(6), "s5")])[0], closed_before=H0 + WINDOW_MS) == []


def test_c20_no_margin_or_total_is_published() -> None:
    """Only cells >= k are emitted, never totals: a suppressed cell cannot be recovered by
    subtracting published numbers."""
    windows = Windows(k=2, region="us-east")
    for p in partials([(play(1, platform="ios"), "a"), (play(2, platform="ios"), "b"),
                       (play(3, platform="web"), "c")]):
        windows.add(p, closed_before=0)
    cells = windows.close(before=H0 + WINDOW_MS)
    assert [c["dimensions"]["platform"] for c in cells] == ["ios"]
    assert all(set(c["dimensions"]) == {"title", "platform", "country"} for c in cells)


def test_c17_personal_content_never_enters_a_cell() -> None:
    assert cell_of(play(1, source="personal")) is None
    assert cell_of({**play(1), "event_type": "pause"}) is None


def test_tokens_are_keyed_per_window() -> None:
    a = partials([(play(1, window=0), "s1")])[0]["subject_tokens"]
    b = partials([(play(1, window=1), "s1")])[0]["subject_tokens"]
    assert a != b and "s1" not in a[0]


def test_columnar_subject_tokens_equal_subject_token() -> None:
    """C20: the worker's columnar path hashes a batch's tokens in one native call; each is
    the token ``subject_token`` gives (so cells from either path merge)."""
    key = bytes(range(32))
    windows = np.array([0, 3_600_000, -3_600_000, 1_700_000_000_000, 7], np.int64)
    subjects = ["acct-1", "", "ü✓-subject", "x" * 120, "acct-1"]
    tokens = subject_tokens(key, windows, pa.array(subjects, pa.string())).to_pylist()
    assert tokens == [subject_token(key, int(w), s)
                      for w, s in zip(windows, subjects, strict=True)]


def test_c20_partials_decoded_in_columns_fold_as_the_row_codecs_records() -> None:
    """The aggregator decodes a batch of contributions in columns: per contribution the
    window, dimension values and tokens ``Windows.add`` reads from ``codec.decode``'s
    record, in batch order; a record that is not a partial stops it (a worker bug)."""
    codec = default_codec()
    contrib = Contributions(token_key(b"m" * 32))
    for i in range(40):
        contrib.add(play(i, window=i % 3, title=f"T{i % 5}", platform=["ios", ""][i % 2]),
                    f"s{i % 7}")
    values = [codec.encode("AggregatePartial", rec) for _, rec in contrib.records("us-east")]
    decoded = [codec.decode(v)[1] for v in values]
    expected = [(i, p["window_start"], tuple(p["dimensions"].get(d, "unknown")
                                             for d in DIMENSIONS), p["subject_tokens"])
                for i, p in enumerate(decoded)]
    assert decode_partials(values, codec) == expected and len(expected) > 10
    drop = codec.encode("DropRecord", {
        "event_id": "e", "reason": "r", "clause": "C1", "source_topic": "t",
        "source_partition": 0, "source_offset": 0, "dropped_at": 0,
        "processing_region": "us-east"})
    with pytest.raises(SerializationError):
        decode_partials([*values, drop], codec)
    with pytest.raises(SerializationError):
        decode_partials([values[0][:-3]], codec)
