"""Optimisation hyperparameters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .meta import ApiModel


class EarlyStoppingSpec(ApiModel):
    """Stop when the validation loss stops improving."""

    enabled: bool = False
    """Turn early stopping on (evaluation then runs every `evalEverySteps`, or every epoch)."""
    patience: int = Field(default=3, ge=1, le=1000)
    """Evaluations without improvement before training stops."""
    threshold: float = Field(default=0.0, ge=0.0, le=10.0)
    """Minimum decrease of the validation loss that counts as an improvement."""


class TrainingSpec(ApiModel):
    """How the adapter is optimised."""

    epochs: float = Field(default=3.0, gt=0.0, le=1000.0)
    """Passes over the training data (fractions allowed)."""
    max_steps: int | None = Field(default=None, ge=1, le=10_000_000)
    """Stop after this many optimiser steps, whatever `epochs` says."""
    learning_rate: float = Field(default=2e-4, gt=0.0, le=1.0)
    """Peak learning rate (1e-4 to 2e-4 is usual for LoRA)."""
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    """Learning-rate schedule after warmup."""
    warmup_ratio: float = Field(default=0.03, ge=0.0, le=0.5)
    """Fraction of the total steps spent warming up the learning rate."""
    weight_decay: float = Field(default=0.01, ge=0.0, le=1.0)
    """AdamW weight decay."""
    max_grad_norm: float = Field(default=1.0, gt=0.0, le=1000.0)
    """Gradient clipping norm."""
    per_device_batch_size: int = Field(default=4, ge=1, le=1024)
    """Sequences per GPU per forward pass."""
    gradient_accumulation_steps: int = Field(default=4, ge=1, le=1024)
    """Forward passes accumulated per optimiser step (effective batch = batch size x this x GPUs)."""
    max_seq_length: int = Field(default=2048, ge=16, le=262144)
    """Tokens per sequence; longer examples are truncated and counted in the data report."""
    packing: bool = False
    """Pack several short examples into one sequence (fewer padding tokens, faster)."""
    loss_on: Literal["assistant", "all"] = "assistant"
    """Compute the loss on assistant turns only (their end-of-turn token included), or on every token."""
    gradient_checkpointing: bool = True
    """Allow recomputing activations in the backward pass (less memory, slower). With `autoTune` the trainer
    recomputes only as many layers as the GPU's memory needs (none when it has room); false: never."""
    auto_tune: bool = True
    """Choose the micro-batch (keeping perDeviceBatchSize x gradientAccumulationSteps sequences per step) and
    which layers to recompute from the GPU's free memory and the model's size; false: run
    perDeviceBatchSize and gradientCheckpointing exactly as given."""
    gpu_memory_limit_gib: float | None = Field(default=None, gt=0.0, le=100_000.0)
    """Most GPU memory training may allocate, in GiB (with autoTune). Unset: what the GPU has free."""
    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    """Seed for the split, shuffling, adapter initialisation and dropout."""
    logging_steps: int = Field(default=10, ge=1, le=100000)
    """Optimiser steps between progress lines and progress records."""
    eval_every_steps: int | None = Field(default=None, ge=1, le=10_000_000)
    """Compute the validation loss every this many steps (default: once per epoch)."""
    early_stopping: EarlyStoppingSpec = Field(default_factory=EarlyStoppingSpec)
    """Stop when the validation loss stops improving."""
