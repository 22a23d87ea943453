"""CUDA out-of-memory: a user error with the numbers and what to change, never a blind retry.

The same spec on the same GPU runs out of memory at the same place every time, so the trainer exits with
`ExitCode.OUT_OF_MEMORY` (the Job fails at once) instead of 1 (retried until `backoffLimit`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ftjob.api import FineTuneJobSpec

from .errors import OutOfMemory

GIB = 2**30


@dataclass(frozen=True)
class GpuMemory:
    device: str
    peak_allocated: int
    """Bytes: the most the run held at once (torch.cuda.max_memory_allocated), up to the failed request."""
    total: int
    """Bytes of device memory."""


def is_out_of_memory(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")  # never imported for this: an OOM can only come from a loaded torch
    if torch is None:
        return False
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)  # = torch._C.OutOfMemoryError
    return isinstance(oom, type) and isinstance(exc, oom)


def gpu_memory() -> GpuMemory | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    try:
        index = torch.cuda.current_device()
        return GpuMemory(
            device=str(torch.cuda.get_device_name(index)),
            peak_allocated=int(torch.cuda.max_memory_allocated(index)),
            total=int(torch.cuda.get_device_properties(index).total_memory),
        )
    except Exception:  # a broken CUDA context after the failure must not hide the message
        return None


def out_of_memory_error(spec: FineTuneJobSpec, memory: GpuMemory | None, stage: str | None) -> OutOfMemory:
    training = spec.training
    where = f" during {stage}" if stage else ""
    if memory is not None:
        used = (
            f"on {memory.device}: peak {memory.peak_allocated / GIB:.1f} GiB allocated of "
            f"{memory.total / GIB:.1f} GiB"
        )
    else:
        used = "(device memory figures unavailable)"
    advice = [
        "lower spec.training.perDeviceBatchSize (raise gradientAccumulationSteps to keep the effective "
        "batch size)",
        "lower spec.training.maxSeqLength",
    ]
    if not training.gradient_checkpointing:
        advice.append("set spec.training.gradientCheckpointing: true")
    if spec.peft.method != "qlora":
        advice.append("set spec.peft.method: qlora")
    advice.append("or request a GPU with more memory")
    return OutOfMemory(
        f"CUDA out of memory{where} {used}, with perDeviceBatchSize {training.per_device_batch_size}, "
        f"maxSeqLength {training.max_seq_length}, gradientAccumulationSteps "
        f"{training.gradient_accumulation_steps}, gradientCheckpointing "
        f"{'on' if training.gradient_checkpointing else 'off'}. Retrying the same spec on the same GPU "
        f"fails the same way: {'; '.join(advice)}."
    )
