"""The queue of FineTuneJobs to reconcile, served by a fixed pool of worker threads (client-go's workqueue).

- A key waits in the queue at most once, however many events name it; a key that changes while a worker
  holds it is queued again when that worker is done, so one object is never reconciled by two workers at
  once and the last change is never missed.
- `urgent` keys (a FineTuneJob that has no Job yet) go before the others: in a burst of new jobs, creating
  their Jobs comes before re-checking the ones that run.
- A retry is a key added `after` some seconds (the server's Retry-After on a 429, a backoff on errors):
  it waits in a timer heap, not in a sleeping worker.
- `progress` marks a visit that should also read the trainer's log; it sticks to the key until served.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

Key = tuple[str, str]


@dataclass(frozen=True)
class Item:
    key: Key
    progress: bool


class WorkQueue:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._urgent: deque[Key] = deque()
        self._normal: deque[Key] = deque()
        self._queued: dict[Key, bool] = {}  # key -> progress wanted
        self._processing: set[Key] = set()
        self._again: dict[Key, tuple[bool, bool]] = {}  # added while processing: (progress, urgent)
        self._timers: list[tuple[float, int, Key, bool]] = []
        self._sequence = itertools.count()
        self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._queued)

    def urgent_waiting(self) -> bool:
        with self._cond:
            return bool(self._urgent)

    def add(self, key: Key, *, progress: bool = False, urgent: bool = False, after: float = 0.0) -> None:
        with self._cond:
            if self._closed:
                return
            if after > 0:
                heapq.heappush(self._timers, (self._clock() + after, next(self._sequence), key, progress))
                self._cond.notify()
                return
            self._add_now(key, progress, urgent)

    def _add_now(self, key: Key, progress: bool, urgent: bool) -> None:
        if key in self._processing:
            wanted, was_urgent = self._again.get(key, (False, False))
            self._again[key] = (wanted or progress, was_urgent or urgent)
            return
        if key in self._queued:
            self._queued[key] = self._queued[key] or progress
            if urgent and key in self._normal:
                self._normal.remove(key)
                self._urgent.append(key)
            return
        self._queued[key] = progress
        (self._urgent if urgent else self._normal).append(key)
        self._cond.notify()

    def _release_timers(self) -> float | None:
        """Move due timers into the queue; seconds until the next one (None: no timer)."""
        now = self._clock()
        while self._timers and self._timers[0][0] <= now:
            _, _, key, progress = heapq.heappop(self._timers)
            self._add_now(key, progress, False)
        return self._timers[0][0] - now if self._timers else None

    def get(self, timeout: float | None = None) -> Item | None:
        """The next key to reconcile (the caller must call `done` with it); None when closed or timed out."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                wait = self._release_timers()
                if self._closed:
                    return None
                queue = self._urgent or self._normal
                if queue:
                    key = queue.popleft()
                    progress = self._queued.pop(key)
                    self._processing.add(key)
                    return Item(key, progress)
                if deadline is not None:
                    left = deadline - self._clock()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def done(self, item: Item) -> None:
        with self._cond:
            self._processing.discard(item.key)
            again = self._again.pop(item.key, None)
            if again is not None:
                self._add_now(item.key, *again)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
