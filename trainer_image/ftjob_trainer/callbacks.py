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
    def publish(self, step: int, local_dir: Path, keep: frozenset[int] = frozenset()) -> None: ...


def best_step(state: TrainerState) -> int | None:
    """The step of the best checkpoint so far (`load_best_model_at_end`), from its folder name."""
    best = state.best_model_checkpoint
    if not best:
        return None
    name = Path(str(best)).name
    suffix = name.removeprefix("checkpoint-")
    return int(suffix) if suffix != name and suffix.isdigit() else None


class CheckpointUploadCallback(TrainerCallback):
    """After transformers writes `checkpoint-N/` locally, publish it to the output location."""

    def __init__(self, sink: CheckpointSink) -> None:
        self.sink = sink

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        local = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
        if local.is_dir():
            best = best_step(state)
            self.sink.publish(state.global_step, local, frozenset() if best is None else frozenset({best}))


class StopOnSignalCallback(TrainerCallback):
    """Turns a SIGTERM into "save now, then stop" after the current micro-batch.

    With gradient accumulation an optimiser step is many micro-batches: waiting for its end could outlast
    the pod's grace period. The stop is checked after every micro-batch (`on_substep_end`); transformers
    then leaves the loop without stepping the optimiser, and the checkpoint saved at the epoch end holds
    the weights of the last complete step, which the next attempt resumes from, replaying the micro-batches
    of the unfinished one. An evaluation the epoch end would start is skipped: it is not worth the grace
    period, and so is a second save of a step saved already."""

    def __init__(self, stop: StopRequest) -> None:
        self.stop = stop
        self._saved_step = -1

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._saved_step = state.global_step

    def on_substep_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.stop.requested:
            control.should_training_stop = True

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.stop.requested:
            control.should_evaluate = False
            control.should_save = True
            control.should_training_stop = True

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.stop.requested:
            control.should_evaluate = False
            # Nothing to add when this step is saved already; step 0 has nothing worth saving.
            control.should_save = state.global_step > 0 and state.global_step != self._saved_step
