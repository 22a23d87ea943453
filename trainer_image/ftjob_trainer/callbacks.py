"""transformers TrainerCallbacks: progress records, checkpoint upload, stop on SIGTERM."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ftjob.contract import ProgressRecord

from .offload import HostOffload, offloaded_checkpoint
from .progress import ProgressReporter, ThroughputMeter, human_line, now_iso
from .signals import StopRequest

log = logging.getLogger("ftjob.trainer")


def _synchronize() -> None:
    """Wait for the GPU's queued work, so a clock read after it times the work, not its launch."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class ProgressCallback(TrainerCallback):
    """Emits a progress record on every log step, and at least every `heartbeat_seconds` while training.
    The operator reads the log when the next record is due (operator/ftjob_operator/progress_schedule.py):
    30 s between records is one log read and one status write per job per two 15 s polls, and the status
    trails the trainer by about one poll.

    Tokens per second count the tokens that are not padding (`state.num_input_tokens_seen`, counted by
    `training.counting_trainer_class`), and only after the first `warmup_steps` optimiser steps of this
    session: those hold compilation (FlexAttention, Triton kernels), allocator growth and the first data
    loading, and would make the rate of a short run meaningless."""

    def __init__(
        self, reporter: ProgressReporter, heartbeat_seconds: float = 30.0, warmup_steps: int = 1
    ) -> None:
        self.reporter = reporter
        self.heartbeat_seconds = heartbeat_seconds
        self.warmup_steps = warmup_steps
        self.meter = ThroughputMeter()
        self.last_loss: float | None = None
        self._last_emit = 0.0
        self._begin_step = 0
        self._begun_at: float | None = None
        self.first_step_seconds: float | None = None
        self._measured_from: tuple[float, int, int] | None = None
        self._measured_to: tuple[float, int, int] | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._begin_step = state.global_step
        self._begun_at = time.monotonic()
        self._emit(state)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        done = state.global_step - self._begin_step
        if done >= self.warmup_steps:
            _synchronize()
            now, tokens = time.monotonic(), int(state.num_input_tokens_seen or 0)
            if self._measured_from is None:
                self._measured_from = (now, state.global_step, tokens)
            self._measured_to = (now, state.global_step, tokens)
            self.meter.add(state.global_step, tokens, at=now)
        if done == 1 and self._begun_at is not None:
            self.first_step_seconds = round(time.monotonic() - self._begun_at, 2)
        # On a logging step on_log follows with this step's loss: a heartbeat now would print the step twice,
        # the first time with the previous step's loss.
        if not control.should_log and time.monotonic() - self._last_emit >= self.heartbeat_seconds:
            self._emit(state)

    def throughput(self) -> dict[str, Any]:
        """What the manifest records: non-padding tokens per second over every step after the warm-up."""
        out: dict[str, Any] = {"warmupSteps": self.warmup_steps, "firstStepSeconds": self.first_step_seconds}
        if self._measured_from and self._measured_to and self._measured_to[1] > self._measured_from[1]:
            (t0, s0, k0), (t1, s1, k1) = self._measured_from, self._measured_to
            out.update(
                {
                    "measuredSteps": s1 - s0,
                    "measuredSeconds": round(t1 - t0, 2),
                    "nonPadTokensPerSecond": round((k1 - k0) / (t1 - t0), 1) if t1 > t0 else None,
                    "secondsPerStep": round((t1 - t0) / (s1 - s0), 3),
                }
            )
        return out

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
    """After transformers writes `checkpoint-N/` locally, publish it to the output location (from global rank
    0 only, the one process that writes checkpoints and under the output prefix).

    With several processes every one writes its own RNG state into the checkpoint folder: `barrier` (called
    on every rank) makes rank 0 wait for them before uploading."""

    def __init__(self, sink: CheckpointSink, barrier: Callable[[], None] | None = None) -> None:
        self.sink = sink
        self.barrier = barrier

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.barrier is not None:
            self.barrier()
        local = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and local.is_dir():
            best = best_step(state)
            self.sink.publish(state.global_step, local, frozenset() if best is None else frozenset({best}))


class StopOnSignalCallback(TrainerCallback):
    """Turns a SIGTERM into "save now, then stop" after the current micro-batch.

    With gradient accumulation an optimiser step is many micro-batches: waiting for its end could outlast
    the pod's grace period. The stop is checked after every micro-batch (`on_substep_end`); transformers
    then leaves the loop without stepping the optimiser, and the checkpoint saved at the epoch end holds
    the weights of the last complete step, which the next attempt resumes from, replaying the micro-batches
    of the unfinished one. An evaluation the epoch end would start is skipped: it is not worth the grace
    period, and so is a second save of a step saved already.

    With several processes `agree` makes the decision collective (true on every rank when true on one):
    every rank then stops after the same micro-batch and joins the same save, and none is left waiting for
    the others in a gradient all-reduce. It is called at the same points on every rank."""

    def __init__(self, stop: StopRequest, agree: Callable[[bool], bool] | None = None) -> None:
        self.stop = stop
        self.agree = agree
        self._saved_step = -1

    def _stop(self) -> bool:
        if self.agree is not None and self.agree(self.stop.requested) and not self.stop.requested:
            self.stop.set("SIGTERM")  # received by another rank first
        return self.stop.requested

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._saved_step = state.global_step

    def on_substep_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._stop():
            control.should_training_stop = True

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._stop():
            control.should_evaluate = False
            control.should_save = True
            control.should_training_stop = True

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._stop():
            control.should_evaluate = False
            # Nothing to add when this step is saved already; step 0 has nothing worth saving.
            control.should_save = state.global_step > 0 and state.global_step != self._saved_step


class SelectiveRecomputeCallback(TrainerCallback):
    """Recompute only the first `recomputed` decoder layers in the backward pass; the others keep their
    activations. transformers turns checkpointing on for every layer at the start of `train()` (before
    this hook), so the choice is applied here, layer by layer; with `inputs_on_host`, the recomputed
    layers keep their inputs in host memory (`offload.py`)."""

    def __init__(self, recomputed: int, inputs_on_host: bool = False) -> None:
        self.recomputed = recomputed
        self.inputs_on_host = inputs_on_host
        self.layers = 0
        self.offload: HostOffload | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model = kwargs.get("model")
        if model is None:
            return
        self.layers = apply_selective_recompute(model, self.recomputed)
        if self.inputs_on_host:
            self.offload = HostOffload()
            offloaded = offload_recomputed_inputs(model, self.offload)
        log.info(
            "recomputing activations of %d of %d decoder layers in the backward pass%s",
            min(self.recomputed, self.layers),
            self.layers,
            f", the inputs of {offloaded} in host memory" if self.inputs_on_host else "",
        )


def _checkpointing_layers(model: Any) -> list[Any]:
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def apply_selective_recompute(model: Any, recomputed: int) -> int:
    """Set each decoder layer's checkpointing flag (the first `recomputed` on); returns the layer count."""
    layers = _checkpointing_layers(model)
    for index, layer in enumerate(layers):
        # Only ever switched off: a layer stays recomputed only where checkpointing was enabled.
        layer.gradient_checkpointing = bool(layer.gradient_checkpointing) and index < recomputed
    return len(layers)


def offload_recomputed_inputs(model: Any, offload: HostOffload) -> int:
    """Route every recomputed layer's checkpointing through `offload`; how many layers were."""
    count = 0
    for layer in _checkpointing_layers(model):
        current = getattr(layer, "_gradient_checkpointing_func", None)
        if not layer.gradient_checkpointing or current is None or getattr(current, "offloads", False):
            continue
        layer._gradient_checkpointing_func = offloaded_checkpoint(offload, fallback=current)
        count += 1
    return count
