"""One autograd function for a LoRA-wrapped linear layer in training: base matmul, dropout and the adapter.

peft runs a LoRA layer as a dozen separate operations (a copy of the base output, casts of the input and
output to the adapter's fp32, dropout, two matmuls, a scaling and an add), each with its own kernel launch,
its own activation tensor and its own autograd node. On the H200 profile of a 7B QLoRA step (issue 15) those
copies and elementwise kernels took about 40% of the GPU time, and with small micro-batches the launches left
the GPU waiting on Python. Here the same arithmetic runs as:

    forward:  y = x W^T + s * (dropout(x) A^T) B^T       (W dequantised from 4 bits when it is quantised)
    backward: dx = dy W + mask/(1-p) * (s * dy B) A,  dA = (s * dy B)^T dropout(x),  dB = s * dy^T (dropout(x) A^T)

in the compute dtype (bf16 on GPUs), with the adapter's fp32 weights cast down for the matmuls and their
gradients returned in fp32 (what autocast would do). It keeps the layer input (shared by the q/k/v or gate/up
layers that read it), the dropout mask (one byte per element) and the small `dropout(x) A^T`, so it holds
less than peft's path, which keeps fp32 copies. The dropout mask comes from the same RNG in the same order,
so recomputation under gradient checkpointing reproduces it.

Only training uses it: in eval mode, without gradients, with adapters disabled or merged, or with several
adapters, the layer runs peft's own forward. FSDP wraps each LoRA layer as a unit whose weights are gathered
by its forward hook, so sharded training keeps peft's path too (`install` is not called there).
"""

from __future__ import annotations

import contextvars
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

_masked_scale: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] = (
    torch.ops.aten.native_dropout_backward
)
"""aten's dropout backward, `t * mask * scale` in one kernel with the bool mask read as is (a product with
the mask would cast it first: a kernel and a tensor of its own)."""


def _is_4bit(base: torch.nn.Module) -> bool:
    return getattr(getattr(base, "weight", None), "quant_state", None) is not None


def _base_weight(base: torch.nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """The frozen base weight [out, in] in `dtype`, dequantised when it is stored in 4 bits."""
    weight: torch.Tensor = base.weight  # type: ignore[assignment]
    quant_state = getattr(weight, "quant_state", None)
    if quant_state is not None:
        from bitsandbytes.functional import dequantize_4bit

        weight = dequantize_4bit(weight.data, quant_state)
    return weight.to(dtype)


_updates = [0]
"""Optimiser steps taken in this process (any torch optimiser: a global step hook counts them)."""
_hook: list[Any] = []


def _count_updates() -> None:
    if not _hook:
        _hook.append(register_optimizer_step_post_hook(lambda *_: _updates.__setitem__(0, _updates[0] + 1)))


def _cast(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An adapter weight in the compute dtype, cast once per update of the weight rather than in every
    forward and backward pass (two to four casts per layer and micro-batch, each a kernel and a tensor).
    The cast is remade after every optimiser step (fused AdamW updates in place without advancing the
    weight's version counter), after any other in-place write (which does) and for a new storage."""
    _count_updates()
    if weight.dtype == dtype:
        return weight
    key = (_updates[0], weight._version, weight.data_ptr(), dtype)
    cached = getattr(weight, "_ftjob_cast", None)
    if cached is not None and cached[0] == key:
        cast: torch.Tensor = cached[1]
        return cast
    cast = weight.detach().to(dtype)
    weight._ftjob_cast = (key, cast)  # type: ignore[attr-defined]
    return cast


def compute_dtype(base: torch.nn.Module, x: torch.Tensor) -> torch.dtype:
    """The dtype the base layer computes in: bitsandbytes' compute dtype, else its weight's (pure)."""
    if _is_4bit(base):
        return getattr(base, "compute_dtype", None) or x.dtype
    weight: torch.Tensor = base.weight  # type: ignore[assignment]
    return weight.dtype


class LoraLinearFunction(torch.autograd.Function):
    """y = base(x) + scaling * lora_B(lora_A(dropout(x))), as one node (see the module's docstring)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        base: torch.nn.Module,
        scaling: float,
        dropout: float,
    ) -> torch.Tensor:
        dtype = compute_dtype(base, x)
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).to(dtype)
        weight = _base_weight(base, dtype)
        y = x2 @ weight.t()
        del weight
        bias = getattr(base, "bias", None)
        if bias is not None:
            y += bias.to(dtype)
        mask: torch.Tensor | None = None
        if dropout > 0:
            dropped, mask = torch.native_dropout(x2, dropout, True)
        else:
            dropped = x2
        a = dropped @ _cast(lora_a, dtype).t()
        del dropped
        # The adapter's product is added into the base output in place: no copy of the base output.
        y.addmm_(a, _cast(lora_b, dtype).t(), alpha=scaling)
        ctx.save_for_backward(x2, mask, a, lora_a, lora_b)
        ctx.base = base
        ctx.scaling = scaling
        ctx.dropout = dropout
        ctx.input_dtype = x.dtype
        ctx.input_shape = shape
        return y.reshape(*shape[:-1], y.shape[-1]).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x2, mask, a, lora_a, lora_b = ctx.saved_tensors
        dtype = x2.dtype
        scaling, dropout = ctx.scaling, ctx.dropout
        g = grad.reshape(-1, grad.shape[-1]).to(dtype)
        grad_x = grad_a = grad_b = None
        # dL/d(dropout(x) A^T), the adapter's inner activation: small (tokens x r).
        g_inner = (g @ _cast(lora_b, dtype)).mul_(scaling)
        if ctx.needs_input_grad[2]:
            grad_b = (g.t() @ a).mul_(scaling).to(lora_b.dtype)
        keep = 1.0 / (1.0 - dropout) if dropout > 0 else 1.0
        if ctx.needs_input_grad[1]:
            dropped = x2 if mask is None else _masked_scale(x2, mask, keep)
            grad_a = (g_inner.t() @ dropped).to(lora_a.dtype)
            del dropped
        if ctx.needs_input_grad[0]:
            grad_x = g @ _base_weight(ctx.base, dtype)
            if mask is None:
                grad_x.addmm_(g_inner, _cast(lora_a, dtype))
            else:
                grad_x += _masked_scale(g_inner @ _cast(lora_a, dtype), mask, keep)
            grad_x = grad_x.reshape(ctx.input_shape).to(ctx.input_dtype)
        return grad_x, grad_a, grad_b, None, None, None


def _training_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """The forward `install` gives a LoRA layer: fused in training, the class's own forward otherwise (looked
    up on the class, not kept from install time, so a copied model calls its own layers)."""
    if args or kwargs or not _takes_fused_path(self):
        out: torch.Tensor = type(self).forward(self, x, *args, **kwargs)
        return out
    (adapter,) = self.active_adapters
    dropout = self.lora_dropout[adapter]
    p = float(dropout.p) if isinstance(dropout, torch.nn.Dropout) else 0.0
    result: torch.Tensor = LoraLinearFunction.apply(
        x,
        self.lora_A[adapter].weight,
        self.lora_B[adapter].weight,
        self.get_base_layer(),
        float(self.scaling[adapter]),
        p,
    )
    return result


_WITHOUT_GRAD: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "ftjob_fused_without_grad", default=False
)


@contextmanager
def fused_without_grad() -> Iterator[None]:
    """Training layers take the fused path with gradients off too: the first forward pass of a recomputed
    layer (offload.py) must draw the dropout masks its rebuild draws, without building a graph."""
    token = _WITHOUT_GRAD.set(True)
    try:
        yield
    finally:
        _WITHOUT_GRAD.reset(token)


def _takes_fused_path(layer: Any) -> bool:
    """Training with one plain, unmerged adapter active; anything else is peft's own forward."""
    if not layer.training or layer.disable_adapters or layer.merged:
        return False
    if not torch.is_grad_enabled() and not _WITHOUT_GRAD.get():
        return False
    active = list(layer.active_adapters)
    if len(active) != 1 or active[0] not in layer.lora_A:
        return False
    dropout = layer.lora_dropout[active[0]]
    return isinstance(dropout, torch.nn.Dropout | torch.nn.Identity)


def eligible(layer: Any) -> bool:
    """A peft LoRA layer whose arithmetic is exactly the fused one: a plain or 4-bit linear base, no
    fan-in/fan-out transpose, no DoRA or other variant, no bias on the adapter."""
    from peft.tuners.lora import LoraLayer

    if not isinstance(layer, LoraLayer):
        return False
    base = layer.get_base_layer()
    if not isinstance(base, torch.nn.Linear) and not _is_4bit(base):
        return False
    if getattr(layer, "fan_in_fan_out", False) or getattr(layer, "lora_variant", None):
        return False
    if any(getattr(layer, "use_dora", {}).values()):
        return False
    return all(
        isinstance(m, torch.nn.Linear) and m.bias is None
        for m in [*layer.lora_A.values(), *layer.lora_B.values()]
    )


def install(model: torch.nn.Module) -> int:
    """Route every eligible LoRA layer's training forward through LoraLinearFunction; how many were."""
    count = 0
    for module in model.modules():
        if eligible(module) and not getattr(module, "_ftjob_fused", False):
            module.forward = types.MethodType(_training_forward, module)
            setattr(module, "_ftjob_fused", True)  # noqa: B010 (a module attribute, not a submodule)
            count += 1
    return count
