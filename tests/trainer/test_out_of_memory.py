"""CUDA out-of-memory: the message a user acts on (the end-to-end case is in test_trainer_run.py)."""

from __future__ import annotations

import torch

from ftjob.api import FineTuneJobSpec
from ftjob.contract import ExitCode
from ftjob_trainer.memory import GIB, GpuMemory, is_out_of_memory, out_of_memory_error

SPEC = FineTuneJobSpec.model_validate(
    {
        "baseModel": {"uri": "hf://org/model@main"},
        "data": {"trainUri": "s3://bucket/train.jsonl"},
        "output": {"uri": "s3://bucket/out/"},
        "training": {
            "perDeviceBatchSize": 16,
            "maxSeqLength": 4096,
            "gradientAccumulationSteps": 2,
            "gradientCheckpointing": False,
        },
    }
)


def test_message_has_the_numbers_and_what_to_change() -> None:
    memory = GpuMemory(device="NVIDIA H200", peak_allocated=int(138.2 * GIB), total=int(139.8 * GIB))
    error = out_of_memory_error(SPEC, memory, "training")
    assert error.exit_code == ExitCode.OUT_OF_MEMORY and error.reason == "OutOfMemory"
    message = str(error)
    assert message.startswith(
        "CUDA out of memory during training on NVIDIA H200: peak 138.2 GiB allocated of 139.8 GiB, with "
        "perDeviceBatchSize 16, maxSeqLength 4096, gradientAccumulationSteps 2, gradientCheckpointing off."
    ), message
    assert "lower spec.training.perDeviceBatchSize" in message
    assert "lower spec.training.maxSeqLength" in message
    assert "set spec.training.gradientCheckpointing: true" in message
    assert "spec.peft.method" not in message  # qlora already


def test_without_device_figures_the_spec_numbers_remain() -> None:
    spec = SPEC.model_copy(deep=True)
    spec.training.gradient_checkpointing = True
    spec.peft.method = "lora"
    message = str(out_of_memory_error(spec, None, None))
    assert "device memory figures unavailable" in message and "perDeviceBatchSize 16" in message
    assert "gradientCheckpointing: true" not in message and "set spec.peft.method: qlora" in message


def test_only_torch_out_of_memory_counts() -> None:
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not is_out_of_memory(RuntimeError("CUDA error: an illegal memory access"))
    assert not is_out_of_memory(MemoryError())
