"""SIGTERM handling: the pod is being stopped (suspend, preemption, node drain). Training saves a
checkpoint after the current micro-batch and exits; the next attempt resumes from it."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger("ftjob.trainer")


class StopRequest:
    """Set by the SIGTERM handler, read by the training loop."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None

    def set(self, name: str = "SIGTERM") -> None:
        self.signal_name = name
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def install(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            del frame
            name = signal.Signals(signum).name
            if not self.requested:
                log.warning("%s received: saving a checkpoint after this micro-batch, then exiting", name)
            self.set(name)

        signal.signal(signal.SIGTERM, handler)
