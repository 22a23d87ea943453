"""Several GPUs: the model replicated on each (DDP) or sharded across them (FSDP), chosen from its size.

DDP keeps the whole model (for QLoRA the 4-bit base) on every GPU and averages the adapters' gradients: no
traffic inside a step, so it is the fastest while the model fits. FSDP keeps on each GPU only its share of
every weight (the 4-bit base stored as bf16, so it can be cut like any bf16 tensor; the adapters and their
optimiser state) and gathers a decoder layer's weights just before that layer runs, forward and backward.
It is what lets a model train on GPUs that could not hold it replicated next to its activations.

`choose_strategy` is pure; the caller measures the loaded model and the GPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigInvalid
from .memory import GIB

StrategyName = Literal["single", "ddp", "fsdp"]


@dataclass(frozen=True)
class Strategy:
    """How the processes of the run share the model, and why."""

    name: StrategyName
    reason: str
    sharded_bytes: int = 0
    """Bytes of weights FSDP cuts into `world_size` shares (0 without FSDP)."""
    world_size: int = 1

    @property
    def sharded(self) -> bool:
        return self.name == "fsdp"

    def bytes_saved_per_gpu(self) -> int:
        """What sharding takes off each GPU once the model is wrapped (the loaded weights minus its share)."""
        if not self.sharded or self.world_size <= 1:
            return 0
        return self.sharded_bytes - self.sharded_bytes // self.world_size

    def label(self, method: str) -> str:
        """The manifest's `resolved.distributed.strategy`."""
        if self.name == "fsdp":
            what = "4-bit base" if method == "qlora" else "base"
            return f"fsdp ({what}, adapters and optimiser state sharded across {self.world_size} GPUs)"
        if self.name == "ddp":
            return "ddp" if method == "lora" else "ddp (4-bit base replicated per GPU)"
        return "single"


def choose_strategy(
    *,
    requested: str,
    world_size: int,
    cuda: bool,
    replicated_peak: int | None,
    sharded_bytes: int,
    budget: int | None,
) -> Strategy:
    """DDP, or FSDP when asked or when a replicated model cannot fit.

    `replicated_peak`: bytes a GPU would allocate with the whole model on it, at the least memory the
    trainer can train with (micro-batch 1, every layer recomputed); `sharded_bytes`: the loaded weights
    FSDP would shard; `budget`: what a GPU may allocate (its free memory less a margin, or the spec's
    gpuMemoryLimitGib). None for either: not measured (no GPU), so nothing can be said to not fit."""
    if world_size <= 1:
        return Strategy("single", "one process")
    if requested == "fsdp":
        if not cuda:
            raise ConfigInvalid(
                "resources.distributedStrategy is fsdp but no CUDA device is visible: FSDP shards over NCCL "
                "on GPUs; use ddp or auto to train on CPUs"
            )
        return _fsdp("resources.distributedStrategy: fsdp", sharded_bytes, world_size)
    if requested == "ddp":
        return Strategy("ddp", "resources.distributedStrategy: ddp", world_size=world_size)
    if not cuda:
        return Strategy("ddp", "no CUDA device: DDP over gloo (FSDP needs GPUs)", world_size=world_size)
    if replicated_peak is None or budget is None:
        return Strategy("ddp", "GPU memory not measured: DDP", world_size=world_size)
    if replicated_peak <= budget:
        return Strategy(
            "ddp",
            f"the replicated model fits: {replicated_peak / GIB:.1f} GiB at micro-batch 1 with every layer "
            f"recomputed, of {budget / GIB:.1f} GiB",
            world_size=world_size,
        )
    sharded_peak = replicated_peak - (sharded_bytes - sharded_bytes // world_size)
    verdict = "fits" if sharded_peak <= budget else "is still over, the least of the two"
    return _fsdp(
        f"a replicated model needs {replicated_peak / GIB:.1f} GiB at least, over the "
        f"{budget / GIB:.1f} GiB budget; sharded across {world_size} GPUs {sharded_peak / GIB:.1f} GiB "
        f"{verdict}",
        sharded_bytes,
        world_size,
    )


def _fsdp(reason: str, sharded_bytes: int, world_size: int) -> Strategy:
    return Strategy("fsdp", reason, sharded_bytes=sharded_bytes, world_size=world_size)


def fsdp_config(layer_classes: Sequence[str]) -> dict[str, Any]:
    """transformers' `fsdp_config` for sharding a (4-bit) base with LoRA adapters (pure).

    FSDP1 (transformers 5.17 and 5.23 both run it, with a deprecation warning): bitsandbytes' 4-bit layers
    recover their quantisation state from the module after FSDP1 has replaced the weight with a view of its
    flat parameter, and the adapter is saved and restored unit by unit (sharded_adapter.py), which FSDP2's
    per-parameter sharding would need done otherwise. Each decoder layer is one unit (its weights all frozen,
    all bf16); transformers then adds peft's policy that wraps every adapter on its own (trainable, fp32),
    since a flat parameter needs one dtype and one requires_grad."""
    return {
        "version": 1,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": list(layer_classes),
        "cpu_ram_efficient_loading": False,
        "state_dict_type": "FULL_STATE_DICT",
        "reshard_after_forward": "full_shard",
        "use_orig_params": False,
        "sync_module_states": True,
        "backward_prefetch": "BACKWARD_PRE",
        "forward_prefetch": False,
        "limit_all_gathers": True,
    }


def decoder_layer_classes(model: Any) -> list[str]:
    """Class names of the model's decoder layers (FSDP's units): the model's own `_no_split_modules`, else
    the classes transformers marks as checkpointable layers."""
    names = list(getattr(_base(model), "_no_split_modules", None) or [])
    if names:
        return names
    from transformers.modeling_layers import GradientCheckpointingLayer

    return sorted({type(m).__name__ for m in model.modules() if isinstance(m, GradientCheckpointingLayer)})


def weight_bytes(parameters: Iterable[Any]) -> int:
    """Bytes the parameters hold (4-bit weights count their packed storage)."""
    return sum(int(p.numel()) * int(p.element_size()) for p in parameters)


def lora_parameter_count(model: Any, target_modules: Sequence[str], r: int, all_linear: str) -> int:
    """Parameters LoRA of rank `r` will add to the base model's linear layers named by `target_modules`
    (their last name part, as peft matches them; `all_linear`: every linear layer but the output head)."""
    import torch

    head = getattr(_base(model), "get_output_embeddings", lambda: None)()
    count = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is head:
            continue
        if target_modules != [all_linear] and name.rsplit(".", 1)[-1] not in target_modules:
            continue
        count += r * (int(module.in_features) + int(module.out_features))
    return count


def _base(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model
