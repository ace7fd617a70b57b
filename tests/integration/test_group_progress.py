"""Deletions wait on other groups' committed offsets (``streams.group_progress``, C15):
the request service on the worker group, the sink's purge on the sink group."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from streams import kafka_clients
from streams.group_progress import GroupProgress


def test_waiters_see_the_group_commit_past_their_offsets(kafka_bootstrap: str,
                                                         unique: str) -> None:
    topic, group = f"progress-{unique}", f"group-{unique}"
    admin = kafka_clients.admin(kafka_bootstrap)
    for fut in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        fut.result(30)
    member = kafka_clients.consumer(kafka_bootstrap, group)
    progress = GroupProgress(kafka_bootstrap, group, topic)
    try:
        deadline = time.monotonic() + 30
        while len(member.list_topics(topic, timeout=10).topics[topic].partitions) < 2:
            assert time.monotonic() < deadline, "the new topic has no partitions"
            time.sleep(0.1)  # polling metadata until the fresh topic shows its partitions
        assert progress.committed() == {0: -1001, 1: -1001}  # nothing committed yet
        assert not progress.wait_past({0: 1}, 0.2)
        asked: list[int] = []
        with ThreadPoolExecutor(2) as pool:
            # Two waiters at once (two deletions), both answered by the same reads.
            first = pool.submit(progress.wait_past, {0: 3}, 30, lambda: asked.append(1))
            second = pool.submit(progress.wait_past, {0: 3, 1: 2}, 30)
            member.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
            assert first.result(30)
            assert not second.done() or not second.result()
            member.commit(offsets=[TopicPartition(topic, 1, 2)], asynchronous=False)
            assert second.result(30)
        assert asked  # ran between reads (the sink's purge asks for a flush there)
        assert progress.committed() == {0: 3, 1: 2}
        stop = threading.Event()
        stop.set()
        assert not progress.wait_past({0: 10}, 30, stop=stop)  # returns once stopped
    finally:
        progress.close()
        member.close()
        admin.delete_topics([topic])


def test_a_group_never_seen_reads_as_nothing_committed(kafka_bootstrap: str) -> None:
    progress = GroupProgress(kafka_bootstrap, f"nobody-{uuid.uuid4().hex}", "__consumer_offsets")
    try:
        assert all(o < 0 for o in progress.committed().values())
    finally:
        progress.close()
