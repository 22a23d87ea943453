"""Choosing how to train (QLoRA or LoRA, which precision) and loading the model and tokenizer.

The choices are pure functions of the spec and the hardware, unit tested without a GPU; loading imports
torch/transformers/peft lazily so the CLI starts instantly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ftjob.api.peft import ALL_LINEAR, PeftSpec

from .errors import ConfigInvalid

log = logging.getLogger("ftjob.trainer")

DType = Literal["bfloat16", "float16", "float32"]


@dataclass(frozen=True)
class Hardware:
    cuda: bool
    bf16: bool
    device_name: str
    capability: tuple[int, int] = (0, 0)
    """CUDA compute capability ((9, 0) for an H100/H200); (0, 0) without CUDA."""

    @classmethod
    def detect(cls) -> Hardware:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return cls(
                cuda=True,
                bf16=torch.cuda.is_bf16_supported(),
                device_name=torch.cuda.get_device_name(0),
                capability=(int(major), int(minor)),
            )
        return cls(cuda=False, bf16=False, device_name="cpu")


@dataclass(frozen=True)
class TrainingPlan:
    """What will actually run, and why, when it differs from what the spec asked."""

    method: Literal["qlora", "lora"]
    dtype: DType
    """Dtype of the trainable computation (bf16/fp16 mixed precision on GPUs, fp32 on CPUs)."""
    notes: tuple[str, ...]

    @property
    def bf16(self) -> bool:
        return self.dtype == "bfloat16"

    @property
    def fp16(self) -> bool:
        return self.dtype == "float16"


def plan_training(peft: PeftSpec, hardware: Hardware) -> TrainingPlan:
    notes: list[str] = []
    method = peft.method
    if method == "qlora" and not hardware.cuda:
        method = "lora"
        notes.append(
            "no CUDA device: QLoRA needs a GPU for 4-bit kernels, training plain LoRA in float32 instead"
        )
    requested = peft.quantization.compute_dtype
    dtype: DType
    if not hardware.cuda:
        # CPUs here have no native bf16: trl's bf16 default would make every step ~15x slower.
        dtype = "float32"
    elif requested == "auto":
        dtype = "bfloat16" if hardware.bf16 else "float16"
    elif requested == "bfloat16" and not hardware.bf16:
        dtype = "float16"
        notes.append(f"{hardware.device_name} has no bfloat16 support: computing in float16")
    else:
        dtype = requested
    return TrainingPlan(method=method, dtype=dtype, notes=tuple(notes))


@dataclass(frozen=True)
class SpeedPlan:
    """How the forward and backward passes run (what the manifest records under `resolved.speed`)."""

    attention: Literal["flex_attention", "sdpa"]
    padding_free: bool
    """Each micro-batch is one row of its sequences end to end, with position ids restarting per sequence
    and attention confined to each sequence: no padding is computed, the batches stay the same."""
    liger: bool
    """Liger's Triton kernels for RMSNorm, SwiGLU and RoPE."""
    optimizer: str
    notes: tuple[str, ...]
    fused_lora: bool = False
    """Each LoRA layer trains as one autograd node (fused_lora); set once the adapters are in place."""

    def describe(self) -> dict[str, Any]:
        kernels = ["liger:rms_norm", "liger:swiglu", "liger:rope"] if self.liger else []
        if self.fused_lora:
            kernels.append("ftjob:fused-lora")
        return {
            "attention": self.attention,
            "paddingFree": self.padding_free,
            "kernels": kernels,
            "optimizer": self.optimizer,
        }


FLEX_MIN_CAPABILITY = (8, 0)
"""FlexAttention's Triton kernels: Ampere and later. It has no backward pass on CPUs."""


def liger_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None


def flex_attention_importable() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None
    except ModuleNotFoundError:
        return False


def plan_speed(
    hardware: Hardware,
    *,
    trust_remote_code: bool,
    liger_available: bool,
    flex_available: bool,
) -> SpeedPlan:
    """Attention, padding-free batches, kernels and optimiser for this hardware (pure).

    Padding-free batches need a per-sequence attention kernel (FlexAttention here) and a model whose attention
    masks follow `position_ids` (every transformers model built on its masking utilities); remote code may
    not, so it keeps padded batches, as SDPA does."""
    notes: list[str] = []
    flex = hardware.cuda and flex_available and hardware.capability >= FLEX_MIN_CAPABILITY
    if hardware.cuda and not flex:
        notes.append(f"FlexAttention unavailable on {hardware.device_name}: using PyTorch SDPA")
    elif not hardware.cuda:
        notes.append("no CUDA device: SDPA attention (FlexAttention has no backward pass on CPUs)")
    padding_free = flex and not trust_remote_code
    if flex and trust_remote_code:
        notes.append("remote model code: padded batches (its attention may ignore position ids)")
    elif not flex:
        # A padding-free row reaches SDPA as one dense block-diagonal mask over all its tokens: attention work
        # quadratic in the micro-batch's tokens rather than in each sequence's (issue 15 counted 15.8x the
        # pairs a per-sequence kernel needs at micro-batch 4).
        notes.append("SDPA attention: padded batches (padding-free needs a per-sequence kernel)")
    liger = hardware.cuda and liger_available
    if not hardware.cuda:
        notes.append("no CUDA device: Liger kernels (Triton) off, stock PyTorch layers")
    elif not liger_available:
        notes.append("liger-kernel is not installed: stock PyTorch RMSNorm/SwiGLU/RoPE")
    return SpeedPlan(
        attention="flex_attention" if flex else "sdpa",
        padding_free=padding_free,
        liger=liger,
        optimizer="adamw_torch_fused" if hardware.cuda else "adamw_torch",
        notes=tuple(notes),
    )


def lora_config_kwargs(peft: PeftSpec) -> dict[str, Any]:
    """Arguments of peft.LoraConfig for the spec (pure)."""
    modules = peft.target_modules
    return {
        "r": peft.r,
        "lora_alpha": peft.alpha,
        "lora_dropout": peft.dropout,
        "target_modules": ALL_LINEAR if modules == [ALL_LINEAR] else list(modules),
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }


def quantization_kwargs(peft: PeftSpec, dtype: DType) -> dict[str, Any]:
    """Arguments of transformers.BitsAndBytesConfig for QLoRA (pure; dtype as a name)."""
    quant = peft.quantization
    return {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": quant.quant_type,
        "bnb_4bit_use_double_quant": quant.double_quant,
        "bnb_4bit_compute_dtype": dtype,
        # Keep the 4-bit weights' storage dtype equal to the compute dtype (needed for FSDP/merging too).
        "bnb_4bit_quant_storage": dtype,
    }


def load_tokenizer(model_dir: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ConfigInvalid(f"cannot load a tokenizer from the base model: {exc}") from exc
    if tokenizer.chat_template is None:
        raise ConfigInvalid("the base model's tokenizer has no chat template; use an instruct/chat model")
    if tokenizer.pad_token is None:
        # Padding tokens are masked out of the loss, so reusing EOS is safe.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(
    model_dir: Path,
    plan: TrainingPlan,
    peft: PeftSpec,
    *,
    trust_remote_code: bool,
    attention: str | None = None,
) -> Any:
    """The base model as training loads it (QLoRA: quantised to 4 bits on this process's GPU)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = getattr(torch, plan.dtype)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": dtype}
    if attention is not None:
        kwargs["attn_implementation"] = attention
    if plan.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(**quantization_kwargs(peft, plan.dtype))
        # The process's own GPU: with several processes (torchrun) that is LOCAL_RANK's, selected by
        # distributed.Distributed.init before anything touched CUDA. With FSDP each GPU keeps only its share
        # once the trainer wraps the model.
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    try:
        return AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigInvalid(f"cannot load the base model: {exc}") from exc


def add_adapters(model: Any, peft: PeftSpec, *, gradient_checkpointing: bool) -> Any:
    """The base model wrapped with fresh LoRA adapters, ready for training.

    The frozen weights that are not quantised (embeddings, norms, LM head) stay in the training dtype, so
    activations flow in bf16. peft's preparation for 4-bit training, which the guides' recipe uses, upcasts
    them to fp32, and everything downstream follows: the residual stream, the projections' outputs, SwiGLU
    and the logits are then computed and kept in fp32. On the H200 that was half again the activation
    memory (282 against 183 KB per token and layer for a 7B model), a cast before and after every 4-bit
    matmul (whose inputs and outputs are bf16 either way), and a fifth of the step time (issue 15;
    docs/gpu.md). FSDP needs it too: it cuts each decoder layer's weights as one flat tensor of
    one dtype."""
    from peft import LoraConfig, get_peft_model

    if gradient_checkpointing:
        # Recomputed layers whose inputs need no gradient would leave the adapters inside them untrained.
        model.enable_input_require_grads()
    model.config.use_cache = False  # incompatible with gradient checkpointing; re-enabled for generation
    return get_peft_model(model, LoraConfig(**lora_config_kwargs(peft)))


def load_tuned_model(
    model_dir: Path, adapter_dir: Path, plan: TrainingPlan, peft: PeftSpec, *, trust_remote_code: bool
) -> Any:
    """The base model as training loaded it, with the saved adapter: what rank 0 generates answers with
    when training sharded the model (no process alone holds it whole)."""
    from peft import PeftModel

    base = load_base_model(model_dir, plan, peft, trust_remote_code=trust_remote_code, attention="sdpa")
    return PeftModel.from_pretrained(base, str(adapter_dir)).eval()


def set_attention(model: Any, attention: str) -> bool:
    """Switch a loaded (possibly adapter-wrapped) model to another attention implementation."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    setter = getattr(base, "set_attn_implementation", None)
    if setter is None:
        return False
    try:
        setter(attention)
    except Exception as exc:  # only evaluation is slower for it: never fail the finished training
        log.warning("could not switch attention to %s: %s", attention, exc)
        return False
    log.info("attention switched to %s", attention)
    return True
