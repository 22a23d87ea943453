"""Events posted from a thread of their own, as client-go's event recorder does: a reconcile hands its Events
over and goes on, so in a burst of new jobs the Jobs and statuses are written first and the Events follow.

Events are best effort (the status holds the same information): a throttled post is tried again after the
server's Retry-After, a few times, then dropped with a warning; the queue is bounded, so an API server
that keeps refusing cannot make the operator's memory grow.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from typing import Final

from .kube import ErrorKind, Kube, KubeError
from .names import JsonDict

logger = logging.getLogger(__name__)

MAX_QUEUED: Final = 10_000
MAX_ATTEMPTS: Final = 4


class EventRecorder:
    def __init__(self, kube: Kube) -> None:
        self._kube = kube
        self._cond = threading.Condition()
        self._ready: deque[tuple[str, JsonDict, int]] = deque()
        self._later: list[tuple[float, int, str, JsonDict, int]] = []
        self._sequence = itertools.count()
        self._busy = 0
        self._closed = False
        self._dropped = 0
        self._thread = threading.Thread(target=self._run, name="event-recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def record(self, namespace: str, body: JsonDict) -> None:
        with self._cond:
            if len(self._ready) + len(self._later) >= MAX_QUEUED:
                self._dropped += 1
                if self._dropped == 1 or self._dropped % 1000 == 0:
                    logger.warning(
                        "%d Events dropped: the API server does not take them fast enough", self._dropped
                    )
                return
            self._ready.append((namespace, body, 0))
            self._cond.notify()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every Event handed over so far was posted or given up (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._ready or self._later or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def stop(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _next(self) -> tuple[str, JsonDict, int] | None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._later and self._later[0][0] <= now:
                    _, _, namespace, body, attempt = heapq.heappop(self._later)
                    self._ready.append((namespace, body, attempt))
                if self._ready:
                    self._busy += 1
                    return self._ready.popleft()
                wait = self._later[0][0] - now if self._later else None
                self._cond.wait(wait)
            return None

    def _run(self) -> None:
        while (item := self._next()) is not None:
            namespace, body, attempt = item
            try:
                self._kube.create_event(namespace, body)
            except KubeError as err:
                retry = (
                    err.kind in (ErrorKind.THROTTLED, ErrorKind.UNAVAILABLE) and attempt + 1 < MAX_ATTEMPTS
                )
                if retry:
                    delay = err.retry_after if err.retry_after is not None else 2.0**attempt
                    with self._cond:
                        heapq.heappush(
                            self._later,
                            (time.monotonic() + delay, next(self._sequence), namespace, body, attempt + 1),
                        )
                else:
                    reason = body.get("reason")
                    logger.warning("%s: could not record Event %s: %s", namespace, reason, err)
            except Exception:
                logger.exception("%s: posting an Event crashed", namespace)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()
