"""transformers TrainerCallbacks: progress records, checkpoint upload, stop on SIGTERM."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Protocol

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ftjob.contract import ProgressRecord

from .progress import ProgressReporter, ThroughputMeter, human_line, now_iso
from .signals import StopRequest

log = logging.getLogger("ftjob.trainer")


class ProgressCallback(TrainerCallback):
    """Emits a progress record on every log step, and at least every `heartbeat_seconds` while training,
    so the operator's status is never more than one poll interval behind."""

    def __init__(self, reporter: ProgressReporter, heartbeat_seconds: float = 20.0) -> None:
        self.reporter = reporter
        self.heartbeat_seconds = heartbeat_seconds
        self.meter = ThroughputMeter()
        self.last_loss: float | None = None
        self._last_emit = 0.0

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.meter.add(state.global_step, int(state.num_input_tokens_seen or 0))
        self._emit(state)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.meter.add(state.global_step, int(state.num_input_tokens_seen or 0))
        if time.monotonic() - self._last_emit >= self.heartbeat_seconds:
            self._emit(state)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs and "loss" in logs:
            self.last_loss = float(logs["loss"])
            self._emit(state)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._emit(state)

    def record(self, state: TrainerState) -> ProgressRecord:
        _, tokens_per_second = self.meter.rates()
        return ProgressRecord(
            stage="training",
            step=state.global_step,
            total_steps=state.max_steps,
            epoch=round(float(state.epoch or 0.0), 3),
            loss=self.last_loss,
            tokens_per_second=tokens_per_second,
            eta_seconds=self.meter.eta_seconds(state.global_step, state.max_steps),
            time=now_iso(),
        )

    def _emit(self, state: TrainerState) -> None:
        record = self.record(state)
        self.reporter.report(record)
        log.info("%s", human_line(record))
        self._last_emit = time.monotonic()


class CheckpointSink(Protocol):
    def publish(self, step: int, local_dir: Path) -> None: ...


class CheckpointUploadCallback(TrainerCallback):
    """After transformers writes `checkpoint-N/` locally, publish it to the output location."""

    def __init__(self, sink: CheckpointSink) -> None:
        self.sink = sink

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        local = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
        if local.is_dir():
            self.sink.publish(state.global_step, local)


class StopOnSignalCallback(TrainerCallback):
    """Turns a SIGTERM into "save now, then stop" at the next step boundary."""

    def __init__(self, stop: StopRequest) -> None:
        self.stop = stop

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.stop.requested:
            control.should_save = True
            control.should_training_stop = True
