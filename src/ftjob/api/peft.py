"""Parameter-efficient fine-tuning: LoRA adapters, optionally on a 4-bit quantized base (QLoRA)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .meta import ApiModel

ALL_LINEAR = "all-linear"

ModuleName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.*-]+$")]


class QuantizationSpec(ApiModel):
    """How the frozen base model is quantized when `method` is `qlora`."""

    bits: Literal[4, 8] = 4
    """Bits per base-model weight. QLoRA needs 4."""
    quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type; nf4 (normal float) suits normally distributed weights."""
    double_quant: bool = True
    """Also quantize the quantization constants (saves about 0.4 bits per parameter)."""
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Dtype of the matrix products. `auto` takes bfloat16 where the GPU supports it, else float16."""


class PeftSpec(ApiModel):
    """Adapter settings."""

    method: Literal["qlora", "lora"] = "qlora"
    """`qlora` trains LoRA adapters on a 4-bit quantized base model (needs a CUDA GPU; without one the
    trainer falls back to plain LoRA and says so); `lora` keeps the base in 16/32-bit."""
    r: int = Field(default=16, ge=1, le=1024)
    """LoRA rank: capacity of the adapter (8-16 suits most tasks)."""
    alpha: int = Field(default=32, ge=1, le=4096)
    """LoRA scaling factor, usually twice the rank."""
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Dropout on the adapter input."""
    target_modules: list[ModuleName] = Field(
        default=[ALL_LINEAR], min_length=1, max_length=64, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Module names to adapt, or the single value `all-linear` (every linear layer except the output
    head)."""
    quantization: QuantizationSpec = Field(default_factory=QuantizationSpec)
    """Base-model quantization, used by `qlora`."""
