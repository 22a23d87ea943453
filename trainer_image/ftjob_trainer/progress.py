"""Progress reporting behind one small interface.

The operator reads the machine-readable records from the pod log (see docs/progress.md); people read
the human lines. Both go to stdout, so `kubectl logs` shows them too.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Protocol, TextIO

from ftjob.contract import ProgressRecord, Stage, format_progress_line
from ftjob.task_progress import TaskRecord, format_task_line

log = logging.getLogger("ftjob.trainer")


class ProgressReporter(Protocol):
    def report(self, record: ProgressRecord) -> None: ...


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class LogLineReporter:
    """Writes `FTJOB_PROGRESS {json}` lines to a stream (stdout in the pod)."""

    stream: TextIO = field(default_factory=lambda: sys.stdout)

    def report(self, record: ProgressRecord) -> None:
        self.stream.write(format_progress_line(record) + "\n")
        self.stream.flush()


@dataclass
class TaskProgress:
    """Progress of one task inside a stage (`FTJOB_TASK` lines, see ftjob.task_progress): what `ftjob local`
    and `ftjob logs` draw as a bar. Lines come at most every `min_interval` seconds, plus the first and the
    last, so a task of thousands of items does not flood the pod log."""

    stage: Stage
    task: str
    total: int
    unit: str = ""
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    min_interval: float = 1.0
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    _last_emit: float | None = None

    def __post_init__(self) -> None:
        self._emit()

    def advance(self, count: int = 1) -> None:
        self.done = min(self.total, self.done + count) if self.total else self.done + count
        finished = bool(self.total) and self.done >= self.total
        if finished or self._last_emit is None or time.monotonic() - self._last_emit >= self.min_interval:
            self._emit()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def _emit(self) -> None:
        record = TaskRecord(
            stage=self.stage, task=self.task, done=self.done, total=self.total, unit=self.unit, time=now_iso()
        )
        self.stream.write(format_task_line(record) + "\n")
        self.stream.flush()
        self._last_emit = time.monotonic()


@dataclass
class StageTracker:
    """Wraps a reporter: stage changes after training keep the last step counts, so a status reading
    "evaluating" still says 120/120 steps rather than falling back to 0/0."""

    inner: ProgressReporter
    last: ProgressRecord | None = None
    current: Stage | None = None

    def report(self, record: ProgressRecord) -> None:
        if record.stage == "training":
            self.last = record
        self.inner.report(record)

    def stage(self, stage: Stage) -> ProgressRecord:
        self.current = stage
        record = ProgressRecord(stage=stage, time=now_iso())
        if self.last is not None and stage != "training":
            record = self.last.model_copy(update={"stage": stage, "time": record.time, "eta_seconds": None})
        self.report(record)
        return record


@dataclass
class ThroughputMeter:
    """Steps/s and tokens/s over a sliding window, and the ETA that follows from them."""

    window: int = 20
    _samples: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=21))

    def add(self, step: int, tokens_seen: int, at: float | None = None) -> None:
        self._samples.append((time.monotonic() if at is None else at, step, tokens_seen))

    def rates(self) -> tuple[float | None, float | None]:
        """(steps per second, tokens per second), or None while there is too little data."""
        if len(self._samples) < 2:
            return None, None
        (t0, s0, k0), (t1, s1, k1) = self._samples[0], self._samples[-1]
        elapsed = t1 - t0
        if elapsed <= 0 or s1 <= s0:
            return None, None
        return (s1 - s0) / elapsed, (k1 - k0) / elapsed if k1 > k0 else None

    def eta_seconds(self, step: int, total_steps: int) -> int | None:
        steps_per_second, _ = self.rates()
        if steps_per_second is None or total_steps <= 0:
            return None
        return max(0, round((total_steps - step) / steps_per_second))


def human_line(record: ProgressRecord) -> str:
    """`step 40/120 (33%) | epoch 0.67 | loss 1.234 | 812 tok/s | ETA 2m10s`."""
    parts = [f"step {record.step}/{record.total_steps}"]
    if record.total_steps:
        parts[0] += f" ({100 * record.step // record.total_steps}%)"
    parts.append(f"epoch {record.epoch:.2f}")
    if record.loss is not None:
        parts.append(f"loss {record.loss:.4f}")
    if record.tokens_per_second is not None:
        parts.append(f"{record.tokens_per_second:.0f} tok/s")
    if record.eta_seconds is not None:
        minutes, seconds = divmod(record.eta_seconds, 60)
        parts.append(f"ETA {minutes}m{seconds:02d}s")
    return " | ".join(parts)


LIBRARY_NOISE: Final = (
    # transformers' optional `kernels` package fetches compiled GPU kernels from the Hub at run time. A
    # trainer pod pins its dependencies and may have no network, CPUs have no such kernels, and the
    # reference implementation used instead is correct: the notice, printed on every run, asks the user
    # for nothing they can or should do.
    "is falling back to its reference PyTorch implementation because `kernels` is not installed",
)


class DropLibraryNoise(logging.Filter):
    """Drops the library notices in LIBRARY_NOISE (each with its reason there); everything else passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in LIBRARY_NOISE)


def drop_library_noise() -> None:
    """Install DropLibraryNoise where transformers writes (its own handler, and the root's), once."""
    import transformers

    transformers.utils.logging.get_logger()  # makes sure transformers' library handler exists
    for logger in (logging.getLogger("transformers"), logging.getLogger()):
        for handler in logger.handlers:
            if not any(isinstance(f, DropLibraryNoise) for f in handler.filters):
                handler.addFilter(DropLibraryNoise())
