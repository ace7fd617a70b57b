"""One run serves every call that arrives while another run is busy (group commit).

Concurrent deletions each need a from-the-beginning read of the compacted topics for
their receipts; the read costs the same for one subject as for a thousand. ``Coalesced``
lets the calls that queue up behind a running read share the next one. A call is only
ever served by a run that *starts* after it was made, so whatever the caller did before
calling (e.g. shredding keys) is visible to the run that answers it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K")
A = TypeVar("A")
V = TypeVar("V")


class Coalesced(Generic[K, A, V]):
    """Wraps ``fn(items) -> results`` (both keyed alike) so concurrent calls share runs."""

    def __init__(self, fn: Callable[[dict[K, A]], Mapping[K, V]]) -> None:
        self._fn = fn
        self._cond = threading.Condition()
        self._next: dict[K, A] = {}  # items of the round that starts next
        self._round = 0  # number of the round that starts next
        self._running = False
        self._outcomes: dict[int, tuple[Mapping[K, V] | None, BaseException | None]] = {}
        self._callers: dict[int, int] = {}  # round -> callers yet to take their outcome
        self.runs = 0

    @property
    def queued(self) -> int:
        """Calls waiting for a run that has not started yet."""
        with self._cond:
            return self._callers.get(self._round, 0)

    def __call__(self, items: Mapping[K, A]) -> dict[K, V]:
        with self._cond:
            mine = self._round
            self._next.update(items)
            self._callers[mine] = self._callers.get(mine, 0) + 1
            while mine not in self._outcomes:
                if self._running:
                    self._cond.wait()
                    continue
                batch, self._next = self._next, {}
                self._round += 1
                self._running = True
                self._cond.release()
                outcome: tuple[Mapping[K, V] | None, BaseException | None]
                try:
                    outcome = (self._fn(batch), None)
                except BaseException as exc:  # every caller of the round gets it
                    outcome = (None, exc)
                finally:
                    self._cond.acquire()
                self._outcomes[mine] = outcome
                self._running = False
                self.runs += 1
                self._cond.notify_all()
            results, error = self._outcomes[mine]
            self._callers[mine] -= 1
            if not self._callers[mine]:
                del self._callers[mine], self._outcomes[mine]
        if error is not None:
            raise error
        assert results is not None
        return {k: results[k] for k in items}
