"""Concurrent receipts share one from-the-beginning read (``streams.coalesce``, C15)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from streams.coalesce import Coalesced


def test_calls_one_after_another_each_get_their_own_run() -> None:
    seen: list[set[str]] = []

    def run(items: dict[str, int]) -> dict[str, int]:
        seen.append(set(items))
        return {k: v * 2 for k, v in items.items()}

    shared = Coalesced(run)
    assert shared({"a": 1}) == {"a": 2}
    assert shared({"b": 2, "c": 3}) == {"b": 4, "c": 6}
    assert seen == [{"a"}, {"b", "c"}]


def test_calls_made_during_a_run_share_the_next_run_and_get_only_their_keys() -> None:
    started, release = threading.Event(), threading.Event()
    seen: list[set[str]] = []

    def run(items: dict[str, int]) -> dict[str, int]:
        seen.append(set(items))
        if len(seen) == 1:
            started.set()
            assert release.wait(10)
        return {k: v + 100 for k, v in items.items()}

    shared = Coalesced(run)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(shared, {"a": 1})
        assert started.wait(10)
        later = [pool.submit(shared, {k: i}) for i, k in enumerate("xyz")]
        # Queued behind the running read: none of them may be answered by it.
        deadline = time.monotonic() + 10
        while shared.queued < 3:
            assert time.monotonic() < deadline, "calls did not queue"
            time.sleep(0.01)  # polling the queue with a deadline
        release.set()
        assert first.result(10) == {"a": 101}
        assert [f.result(10) for f in later] == [{"x": 100}, {"y": 101}, {"z": 102}]
    assert seen == [{"a"}, {"x", "y", "z"}]
    assert shared.runs == 2


def test_a_failed_run_fails_every_call_it_served() -> None:
    def run(items: dict[str, Any]) -> dict[str, Any]:
        if not items:
            return {}
        raise RuntimeError("broker gone")

    shared = Coalesced(run)
    with pytest.raises(RuntimeError, match="broker gone"):
        shared({"a": 1})
    assert shared.queued == 0
    assert shared({}) == {}  # not stuck: the next call runs
