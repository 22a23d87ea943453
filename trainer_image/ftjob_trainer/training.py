"""From the spec and the cleaned data to a configured trl SFTTrainer."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftjob.api import FineTuneJobSpec

from .base_model import sha256_file
from .chat_masks import tokenize_chat
from .memory import MemoryPlan
from .modeling import SpeedPlan, TrainingPlan
from .sharded_adapter import load_sharded_adapter, save_sharded_adapter

FSDP_MODEL_FILE = "pytorch_model_fsdp.bin"


@dataclass(frozen=True)
class Schedule:
    """When to evaluate and save, in optimiser steps (None: once per epoch)."""

    eval_steps: int | None
    save_steps: int
    load_best_at_end: bool


def plan_schedule(spec: FineTuneJobSpec) -> Schedule:
    """Early stopping needs evaluations on a fixed grid and checkpoints on the same grid (transformers
    restores the best one at the end), so saves are rounded up to a multiple of the evaluation interval."""
    training, every = spec.training, spec.checkpointing.every_steps
    if not training.early_stopping.enabled:
        return Schedule(eval_steps=training.eval_every_steps, save_steps=every, load_best_at_end=False)
    eval_steps = training.eval_every_steps or every
    return Schedule(
        eval_steps=eval_steps, save_steps=eval_steps * math.ceil(every / eval_steps), load_best_at_end=True
    )


def total_steps(spec: FineTuneJobSpec, num_sequences: int, world_size: int = 1) -> int:
    """Optimiser steps the run will take (as transformers counts them)."""
    training = spec.training
    if training.max_steps is not None:
        return training.max_steps
    batches_per_epoch = math.ceil(num_sequences / (training.per_device_batch_size * world_size))
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / training.gradient_accumulation_steps))
    return max(1, math.ceil(training.epochs * steps_per_epoch))


def warmup_steps(spec: FineTuneJobSpec, steps: int) -> int:
    """The warmup transformers runs for `steps` optimiser steps: it reads `warmup_steps` below 1 as a ratio
    of the total (transformers 5 has no warmup_ratio) and rounds up, as here."""
    return math.ceil(steps * spec.training.warmup_ratio)


def sft_config_kwargs(
    spec: FineTuneJobSpec,
    plan: TrainingPlan,
    output_dir: Path,
    *,
    use_cpu: bool,
    speed: SpeedPlan | None = None,
    memory: MemoryPlan | None = None,
    ddp_timeout: int | None = None,
    fsdp: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Arguments of trl.SFTConfig (pure). The datasets passed to the trainer are already tokenized, with
    an `assistant_masks` column that is all ones when the loss covers every token.

    `speed` (attention, padding-free batches, kernels, optimiser) and `memory` (micro-batch, recomputation)
    are what the trainer chose for the hardware; without them the spec's values run as given. `fsdp`: the
    model is sharded across the processes with this `fsdp_config` (parallelism.fsdp_config)."""
    training = spec.training
    schedule = plan_schedule(spec)
    micro = memory.micro_batch if memory else training.per_device_batch_size
    accumulation = memory.accumulation if memory else training.gradient_accumulation_steps
    checkpointing = memory.recomputed_layers > 0 if memory else training.gradient_checkpointing
    kwargs: dict[str, Any] = {
        "output_dir": str(output_dir),
        "num_train_epochs": training.epochs,
        "max_steps": training.max_steps or -1,
        "per_device_train_batch_size": micro,
        "per_device_eval_batch_size": micro,
        "gradient_accumulation_steps": accumulation,
        "learning_rate": training.learning_rate,
        # A ratio (the spec bounds it to 0.5): transformers turns it into steps once it knows the total, which
        # packing changes after the trainer is built.
        "warmup_steps": training.warmup_ratio,
        "lr_scheduler_type": training.scheduler,
        "weight_decay": training.weight_decay,
        "max_grad_norm": training.max_grad_norm,
        "seed": training.seed,
        "data_seed": training.seed,
        "logging_steps": training.logging_steps,
        "eval_strategy": "steps" if schedule.eval_steps else "epoch",
        "eval_steps": schedule.eval_steps,
        "save_strategy": "steps",
        "save_steps": schedule.save_steps,
        "save_total_limit": spec.checkpointing.keep_last,
        "load_best_model_at_end": schedule.load_best_at_end,
        "metric_for_best_model": "eval_loss" if schedule.load_best_at_end else None,
        "greater_is_better": False if schedule.load_best_at_end else None,
        # Chosen from the hardware, never from trl's default (bf16=True even on CPUs without bf16).
        "bf16": plan.bf16,
        "fp16": plan.fp16,
        "use_cpu": use_cpu,
        "gradient_checkpointing": checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False} if checkpointing else None,
        "packing": training.packing,
        "max_length": training.max_seq_length,
        # The datasets are pre-tokenized with an `assistant_masks` column, which trl folds into the labels on
        # its own; its `assistant_only_loss` flag is for conversational datasets it tokenizes itself.
        "assistant_only_loss": False,
        # Counted by `CountingTrainer` instead: transformers counts padding (or misses EOS used as padding).
        "include_num_input_tokens_seen": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    if ddp_timeout is not None:
        # Several processes (torchrun): DDP. Only the LoRA weights train: every one of them gets a gradient,
        # so DDP need not search the graph for unused ones (and must not: gradient checkpointing forbids it).
        kwargs["ddp_find_unused_parameters"] = False
        kwargs["ddp_timeout"] = ddp_timeout
    if fsdp is not None:
        kwargs["fsdp"] = True
        kwargs["fsdp_config"] = fsdp
    if speed is not None and not use_cpu:
        # Batches go to the GPU from pinned memory without making the host wait for the GPU's queue
        # (twelve such waits a step on the H200 profile, bench/results/train-speed-h200-2026-11-30-offload).
        kwargs["dataloader_pin_memory"] = True
        kwargs["accelerator_config"] = {"non_blocking": True}
    if speed is not None:
        kwargs["optim"] = speed.optimizer
        kwargs["use_liger_kernel"] = speed.liger
        if speed.padding_free and not training.packing:
            # Rows are truncated to maxSeqLength when tokenized; trl refuses max_length with padding-free
            # batches that are not packed (it would not enforce it).
            kwargs["padding_free"] = True
            kwargs["max_length"] = None
    return kwargs


def real_tokens(inputs: Mapping[str, Any]) -> int:
    """Tokens of a micro-batch that are not padding: the attention mask's ones, or, for a padding-free
    batch (no attention mask, one row of sequences end to end, never padded), every token."""
    mask = inputs.get("attention_mask")
    if mask is not None:
        return int(mask.sum())
    ids = inputs.get("input_ids")
    return int(ids.numel()) if ids is not None else 0


def _no_model_copy(*args: Any, **kwargs: Any) -> None:
    """Stands in for accelerate's save_fsdp_model while a sharded run saves a checkpoint."""


def counting_trainer_class() -> type:
    """trl's SFTTrainer, counting into `state.num_input_tokens_seen` only the tokens that are not padding
    (kept in checkpoints, so a resumed run goes on counting)."""
    from trl.trainer.sft_trainer import SFTTrainer

    class CountingTrainer(SFTTrainer):
        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
            tokens = real_tokens(inputs)
            if self.args.world_size > 1:
                # Every process counts its own share; the run's count is the sum (on every rank, so a
                # checkpoint saved by rank 0 holds the total).
                import torch

                total = self.accelerator.gather(torch.tensor([tokens], device=self.args.device)).sum()
                tokens = int(total.item())
            self.state.num_input_tokens_seen = int(self.state.num_input_tokens_seen or 0) + tokens
            return super().training_step(model, inputs, num_items_in_batch)

        # Sharded (FSDP): the adapter is saved and restored by sharded_adapter, not by accelerate's
        # state-dict path, which wrote adapters without their LoRA weights (see that module).

        def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
            if not self.is_fsdp_enabled:
                super().save_model(output_dir, _internal_call)
                return
            target = Path(output_dir or str(self.args.output_dir))
            unwrapped = self.accelerator.unwrap_model(self.model)
            save_sharded_adapter(self.model_wrapped, unwrapped, target, is_main=self.args.should_save)
            if self.args.should_save and self.processing_class is not None:
                self.processing_class.save_pretrained(str(target))

        def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
            if not self.is_fsdp_enabled:
                super()._save_optimizer_and_scheduler(output_dir)
                return
            # transformers also saves the model through accelerate here: a full state dict gathered on rank
            # 0's host (every base weight, 6.7 s per checkpoint for a 7B model on the H200 run; a 70B one
            # would need 35 GB of host memory), which peft then filters down to nothing. The adapter saved
            # by save_model is the checkpoint's model; only the optimiser, scheduler and RNG states remain.
            import transformers.trainer as hf_trainer

            original = getattr(hf_trainer, "save_fsdp_model", None)
            if original is not None:
                hf_trainer.save_fsdp_model = _no_model_copy  # type: ignore[attr-defined]
            try:
                super()._save_optimizer_and_scheduler(output_dir)
            finally:
                if original is not None:
                    hf_trainer.save_fsdp_model = original  # type: ignore[attr-defined]
            if self.args.should_save:
                (Path(output_dir) / FSDP_MODEL_FILE).unlink(missing_ok=True)

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            if not self.is_fsdp_enabled:
                super()._load_from_checkpoint(resume_from_checkpoint, model)
                return
            load_sharded_adapter(model or self.model_wrapped, Path(resume_from_checkpoint))

        def _load_best_model(self) -> None:
            if not self.is_fsdp_enabled:
                super()._load_best_model()
                return
            load_sharded_adapter(self.model_wrapped, Path(str(self.state.best_model_checkpoint)))

    return CountingTrainer


def sequence_lengths(dataset: Any) -> list[int]:
    """Token count of every row of a tokenized dataset (read from its Arrow column, without decoding)."""
    import pyarrow.compute as pc  # type: ignore[import-untyped]

    column = dataset.data.column("input_ids")
    return [int(n) for n in pc.list_value_length(column).to_pylist()]


def _conversations(path: Path) -> Iterator[list[dict[str, str]]]:
    with path.open() as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)["messages"]


def tokenized_rows(
    path: Path, tokenizer: Any, *, max_length: int, loss_on: str, content_sha256: str = ""
) -> Iterator[dict[str, list[int]]]:
    del content_sha256  # only part of the datasets cache key: a changed file must not hit a stale cache
    for messages in _conversations(path):
        chat = tokenize_chat(
            tokenizer,
            messages,
            loss_on="assistant" if loss_on == "assistant" else "all",
            max_length=max_length,
        )
        yield {"input_ids": chat.input_ids, "assistant_masks": chat.assistant_masks}


def build_dataset(path: Path, tokenizer: Any, *, max_length: int, loss_on: str, cache_dir: Path) -> Any:
    """A pre-tokenized, memory-mapped dataset (input_ids, assistant_masks) from a cleaned JSONL file.

    Rows are written to Arrow on disk in batches as they are tokenized: memory stays flat however large
    the file (a list of Python ints would take ~30 bytes per token).
    """
    from datasets import Dataset, Features, Sequence, Value

    features = Features({"input_ids": Sequence(Value("int32")), "assistant_masks": Sequence(Value("int8"))})
    return Dataset.from_generator(
        tokenized_rows,
        features=features,
        cache_dir=str(cache_dir),
        gen_kwargs={
            "path": path,
            "tokenizer": tokenizer,
            "max_length": max_length,
            "loss_on": loss_on,
            "content_sha256": sha256_file(path),
        },
    )
