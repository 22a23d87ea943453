"""From the spec and the cleaned data to a configured trl SFTTrainer."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftjob.api import FineTuneJobSpec

from .base_model import sha256_file
from .chat_masks import tokenize_chat
from .modeling import TrainingPlan


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
    # transformers 5 has no warmup_ratio; the spec's ratio becomes steps here.
    return math.ceil(steps * spec.training.warmup_ratio)


def sft_config_kwargs(
    spec: FineTuneJobSpec, plan: TrainingPlan, output_dir: Path, *, use_cpu: bool
) -> dict[str, Any]:
    """Arguments of trl.SFTConfig (pure). The datasets passed to the trainer are already tokenized, with
    an `assistant_masks` column that is all ones when the loss covers every token."""
    training = spec.training
    schedule = plan_schedule(spec)
    kwargs: dict[str, Any] = {
        "output_dir": str(output_dir),
        "num_train_epochs": training.epochs,
        "max_steps": training.max_steps or -1,
        "per_device_train_batch_size": training.per_device_batch_size,
        "per_device_eval_batch_size": training.per_device_batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "learning_rate": training.learning_rate,
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
        "gradient_checkpointing": training.gradient_checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False}
        if training.gradient_checkpointing
        else None,
        "packing": training.packing,
        "max_length": training.max_seq_length,
        # The datasets are pre-tokenized with an `assistant_masks` column, which trl folds into the labels on
        # its own; its `assistant_only_loss` flag is for conversational datasets it tokenizes itself.
        "assistant_only_loss": False,
        "include_num_input_tokens_seen": True,
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    return kwargs


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
