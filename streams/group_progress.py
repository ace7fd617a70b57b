"""Waiting until a consumer group has committed past given offsets.

A deletion waits on other processes: the request service until the worker group has
committed past its consent tombstones, the ClickHouse sink's purge consumer until the
sink group has committed the analytics records the purge must see. Committed offsets are
the ground truth whichever group member owns a partition, so they are read from the
group coordinator. One ``GroupProgress`` serves every waiter on a group and topic: one
waiter at a time refreshes the offsets, the others wait on the answer, so concurrent
deletions cost one query per interval, not one each.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streams import kafka_clients
from streams.errors import BrokerError

log = logging.getLogger(__name__)
POLL_S = 0.02  # between two reads of the committed offsets while someone waits
_COORDINATOR_MOVING = frozenset({KafkaError.NOT_COORDINATOR,
                                 KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                                 KafkaError.COORDINATOR_NOT_AVAILABLE})


class GroupProgress:
    """The committed offsets of ``group`` on ``topic``, waited on by any thread."""

    def __init__(self, bootstrap: str, group: str, topic: str, *,
                 interval: float = POLL_S) -> None:
        self.group = group
        self.topic = topic
        self.interval = interval
        # Never subscribes: a client of the group only to read its committed offsets.
        self._client = kafka_clients.consumer(bootstrap, group)
        self._cond = threading.Condition()
        self._committed: dict[int, int] = {}
        self._read_at = float("-inf")
        self._reading = False
        self._parts: list[TopicPartition] = []

    def committed(self, timeout: float = 30.0) -> dict[int, int]:
        """Committed offsets per partition (negative: nothing committed), at most one
        interval old; raises ``BrokerError`` if the coordinator does not answer in time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while time.monotonic() - self._read_at >= self.interval:
                if time.monotonic() > deadline:
                    raise BrokerError(f"offsets of group {self.group} on {self.topic}: "
                                      f"no answer from the group coordinator")
                if not self._reading:
                    self._read()
                else:
                    self._cond.wait(self.interval)
            return dict(self._committed)

    def wait_past(self, targets: Mapping[int, int], timeout: float,
                  on_wait: Callable[[], None] | None = None,
                  stop: threading.Event | None = None) -> bool:
        """True once every partition in ``targets`` is committed at or past its offset;
        False after ``timeout`` or once ``stop`` is set. ``on_wait`` runs between reads
        (e.g. to ask for a flush)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(self._committed.get(p, -1) >= o for p, o in targets.items()):
                left = deadline - time.monotonic()
                if left <= 0 or (stop is not None and stop.is_set()):
                    return False
                if on_wait is not None:
                    on_wait()
                if not self._reading and time.monotonic() - self._read_at >= self.interval:
                    self._read()
                else:
                    self._cond.wait(min(left, self.interval))
            return True

    def _read(self) -> None:
        """Read the offsets without holding the lock; waiters meanwhile wait for them.
        A coordinator that is moving or loading leaves the last answer (and its age) as
        it was: the next waiter to come along asks again."""
        self._reading = True
        self._cond.release()
        offsets = None
        try:
            if not self._parts:
                md = self._client.list_topics(self.topic, timeout=10)
                self._parts = [TopicPartition(self.topic, p)
                               for p in md.topics[self.topic].partitions]
            offsets = {tp.partition: tp.offset
                       for tp in self._client.committed(self._parts, timeout=10)}
        except KafkaException as exc:
            err = exc.args[0]
            if not (err.retriable() or err.code() in _COORDINATOR_MOVING):
                raise
            log.debug("offsets of group %s: %s; asking again", self.group, err.str())
            time.sleep(self.interval)  # the coordinator answered at once: do not spin
        finally:
            self._cond.acquire()
            self._reading = False
            if offsets is not None:
                self._read_at = time.monotonic()
                self._committed = offsets
            self._cond.notify_all()

    def close(self) -> None:
        self._client.close()
