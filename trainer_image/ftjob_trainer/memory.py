"""CUDA out-of-memory: a user error with the numbers and what to change, never a blind retry.

The same spec on the same GPU runs out of memory at the same place every time, so the trainer exits with
`ExitCode.OUT_OF_MEMORY` (the Job fails at once) instead of 1 (retried until `backoffLimit`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal

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


# --- Choosing the micro-batch and the recomputed layers from the memory the GPU has -------------------------


@dataclass(frozen=True)
class ActivationProfile:
    """What one decoder layer keeps for its backward pass, per token, for one way of running its layers."""

    per_unit: tuple[float, float]
    """bf16 tensors (2 bytes an element) per (hidden unit, MLP unit) kept by a layer that is not recomputed."""
    rebuilt_fraction: float
    """Of a recomputed layer's activations, what is alive at once while its backward pass runs: the rebuilt
    activations, the gradients flowing through them and the dequantised weights."""


PEFT_LAYERS = ActivationProfile(per_unit=(14, 6), rebuilt_fraction=1.9)
"""peft's LoRA layers (the sharded path). Calibrated on an H200 (bench/results/train-speed-h200-2026-11-30)
with float32 activations (peft's 4-bit preparation upcasts embeddings and norms): a Mistral-7B-shaped model
(hidden 4096, MLP 14336, 32 layers) peaked at 83.0 GiB with no layer recomputed and 9,066 tokens in its
largest micro-batch, about 287 KB per token and layer once the ~4.6 GiB of weights are taken off, which
(14, 6) gives; with every layer recomputed and micro-batch 4 (about 6,000 tokens) it peaked at 9.13 GiB,
which a rebuilt fraction of 1.9 accounts for even if those steps never met the data's largest micro-batch.
(The plain trl recipe, SDPA and no Liger, rebuilds less: its 7.6 GiB peak at 5,988 tokens puts it near
0.7.) With the sharded path's bf16 activations these overstate, which errs towards recomputing more."""

FUSED_LAYERS = ActivationProfile(per_unit=(10.5, 3.5), rebuilt_fraction=1.0)
"""fused_lora's layers with bf16 activations, counted tensor by tensor (Liger RMSNorm, FlexAttention,
Liger SwiGLU): per token and layer the two norms' inputs and outputs (4 hidden), the attention's q, k, v,
output and o_proj's contiguous input (2.5 + 1 hidden, GQA 4:1), the dropout masks at one byte (3 + 1 + 2
hidden-sized for q/k/v, o and gate/up: 3 units), SwiGLU's gate and up (2 MLP) and its output (1 MLP), the
down projection's mask (0.5 MLP). The same count with float32 activations gives 281 KB per token and layer
against 282 KB measured on the H200 (80.77 GiB at 9,066 tokens, no layer recomputed,
bench/results/train-speed-h200-2026-11-30-fused/2-fused-fp32), and in bf16, 186 KB counted against about
183 KB measured (53.32 GiB at the same 9,066 tokens, `3-fused-bf16`). The rebuilt fraction: the fused
float32 runs peaked at 7.17 and 8.95 GiB with every layer recomputed at micro-batches 2 and 4, a difference
that puts it near 0.3 if both met the data's largest micro-batches; 1.0 leaves room for the steps that did
not (the bf16 run at micro-batch 4, every layer recomputed: 7.16 GiB estimated, 6.64 GiB measured)."""

FREE_MEMORY_MARGIN = (GIB // 2, 0.08)
"""Of the GPU's free memory, kept free (bytes, fraction): the allocator's fragmentation and caches,
cuBLAS/Triton workspaces. A `gpuMemoryLimitGib` counts allocated bytes, like the peak the manifest records,
so it keeps only `LIMIT_MARGIN` for the estimate's error."""

LIMIT_MARGIN = 0.03


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    intermediate: int
    vocab: int

    activations: ActivationProfile = PEFT_LAYERS

    @classmethod
    def of(cls, config: Any, activations: ActivationProfile = PEFT_LAYERS) -> ModelShape:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        hidden = int(text.hidden_size)
        return cls(
            layers=int(text.num_hidden_layers),
            hidden=hidden,
            intermediate=int(getattr(text, "intermediate_size", None) or 4 * hidden),
            vocab=int(text.vocab_size),
            activations=activations,
        )

    def layer_bytes(self, tokens: int) -> int:
        """Activations one layer keeps for the backward pass when it is not recomputed."""
        per_hidden, per_mlp = self.activations.per_unit
        return int(2 * tokens * (per_hidden * self.hidden + per_mlp * self.intermediate))

    def checkpoint_bytes(self, tokens: int) -> int:
        """What a recomputed layer keeps: its input, in bf16."""
        return 2 * tokens * self.hidden


@dataclass(frozen=True)
class MemoryPlan:
    """How one optimiser step is cut into micro-batches and which decoder layers are recomputed."""

    micro_batch: int
    accumulation: int
    recomputed_layers: int
    """Decoder layers whose activations are recomputed in the backward pass (the first ones)."""
    layers: int
    estimated_peak: int | None
    """Bytes the plan is expected to allocate at most (None: not estimated, e.g. on CPUs)."""
    budget: int | None
    reason: str
    inputs_on_host: bool = False
    """The recomputed layers' inputs wait in pinned host memory (`offload.py`), not on the GPU."""
    host_bytes: int | None = None
    """Pinned host memory those inputs take at most (with inputs on the host)."""

    @property
    def checkpointing(self) -> Literal["full", "selective", "off"]:
        if self.recomputed_layers <= 0:
            return "off"
        return "full" if self.recomputed_layers >= self.layers else "selective"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "microBatchSize": self.micro_batch,
            "gradientAccumulationSteps": self.accumulation,
            "gradientCheckpointing": self.checkpointing,
            "recomputedLayers": self.recomputed_layers,
            "layers": self.layers,
            "reason": self.reason,
        }
        if self.recomputed_layers > 0:
            out["recomputedInputs"] = "host" if self.inputs_on_host else "gpu"
        if self.host_bytes is not None:
            out["hostGiB"] = round(self.host_bytes / GIB, 2)
        if self.estimated_peak is not None:
            out["estimatedPeakGiB"] = round(self.estimated_peak / GIB, 2)
        if self.budget is not None:
            out["budgetGiB"] = round(self.budget / GIB, 2)
        return out


def worst_micro_batch_tokens(lengths: list[int], micro_batch: int, *, padding_free: bool) -> int:
    """Tokens in the largest micro-batch the data can form: the longest sequences together, padded to the
    longest of them unless the batch is padding-free."""
    if not lengths:
        return 0
    longest = sorted(lengths, reverse=True)[:micro_batch]
    return sum(longest) if padding_free else len(longest) * longest[0]


def estimate_peak(
    shape: ModelShape,
    *,
    static: int,
    trainable: int,
    tokens: int,
    recomputed: int,
    inputs_on_host: bool = False,
) -> int:
    """Bytes a training step allocates at most: what is loaded (weights, adapters), the optimiser's states
    and gradients of the adapters, the activations kept between forward and backward, and one recomputed
    layer's activations rebuilt during the backward pass. Recomputed layers whose inputs wait in host memory
    keep two inputs on the GPU at most (one in use, one being copied)."""
    on_gpu = min(recomputed, 2) if inputs_on_host else recomputed
    kept = (shape.layers - recomputed) * shape.layer_bytes(tokens) + on_gpu * shape.checkpoint_bytes(tokens)
    rebuilt = int(shape.activations.rebuilt_fraction * shape.layer_bytes(tokens)) if recomputed else 0
    # Logits are computed in chunks by trl; the hidden states' gradient and the norms' fp32 copies remain.
    head = 2 * tokens * shape.hidden * 4
    # Per trainable parameter: its gradient and AdamW's two moments (fp32), and fused_lora's bf16 copy.
    return static + 14 * trainable + kept + rebuilt + head


def host_bytes(shape: ModelShape, *, tokens: int, recomputed: int) -> int:
    """Pinned host memory the recomputed layers' inputs take: twice their size, since the pinned-memory
    allocator rounds each block up to a power of two."""
    return 2 * recomputed * shape.checkpoint_bytes(tokens)


HOST_SHARE = 0.5
"""Of the host memory available to the trainer (its cgroup's limit less its use, or MemAvailable), the
share the layer inputs may take: the rest is for the data, the tokenizer and the checkpoint uploads."""


def host_memory_available(meminfo: str, cgroup_max: str | None, cgroup_current: str | None) -> int | None:
    """Bytes of host memory the trainer can still take (pure: the texts of /proc/meminfo and of the
    cgroup's memory.max and memory.current); None when /proc/meminfo does not say."""
    available: int | None = None
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1]) * 1024
    if available is None:
        return None
    if cgroup_max is not None and cgroup_current is not None and cgroup_max.strip() != "max":
        available = min(available, max(0, int(cgroup_max) - int(cgroup_current)))
    return available


def memory_budget(*, static: int, free: int, limit: int | None) -> tuple[int, str]:
    """Bytes training may allocate on the GPU, and where the figure comes from: what is allocated plus what
    is free, less a margin, or the spec's limit where that is lower."""
    margin_bytes, margin_fraction = FREE_MEMORY_MARGIN
    available = static + free
    budget = int(available - margin_bytes - margin_fraction * available)
    if limit is not None and int(limit * (1 - LIMIT_MARGIN)) < budget:
        return int(limit * (1 - LIMIT_MARGIN)), f"the {limit / GIB:.1f} GiB limit"
    return budget, "free GPU memory"


def plan_memory(
    *,
    shape: ModelShape,
    static: int,
    trainable: int,
    lengths: list[int],
    padding_free: bool,
    per_device_batch: int,
    accumulation: int,
    checkpointing_allowed: bool,
    free: int | None,
    limit: int | None,
    auto: bool,
    host_free: int | None = None,
) -> MemoryPlan:
    """Pick the micro-batch and the recomputed layers (pure; the caller measures `static`, `free`).

    The optimiser step keeps its `per_device_batch x accumulation` sequences, so the loss curve does not
    depend on the choice. Recomputing every layer costs about a third of the step time (a second forward
    pass through the 4-bit weights), far more than a micro-batch of the spec's size loses against a larger
    one (about 5%), so: first recompute as few layers as fit, then, once none is recomputed, take the
    largest micro-batch that divides the step and fits. Only when the spec's micro-batch does not fit even
    with every layer recomputed does the micro-batch go below it. Without `auto`, or without
    a GPU to measure, the spec's values run as given.

    When every layer is recomputed anyway and `host_free` bytes of host memory may hold their inputs
    (single-process training), the inputs go to the host if that lets a larger micro-batch fit: with
    every layer run twice, small micro-batches leave the GPU waiting on kernel launches (on the H200,
    micro-batch 4 of a 7B model ran at about half the GPU's pace)."""
    layers = shape.layers
    given = MemoryPlan(
        micro_batch=per_device_batch,
        accumulation=accumulation,
        recomputed_layers=layers if checkpointing_allowed else 0,
        layers=layers,
        estimated_peak=None,
        budget=None,
        reason="as the spec says (autoTune off)" if not auto else "no GPU to measure: as the spec says",
    )
    if not auto or free is None:
        return given
    budget, source = memory_budget(static=static, free=free, limit=limit)

    def tokens(micro: int) -> int:
        return worst_micro_batch_tokens(lengths, micro, padding_free=padding_free)

    def peak(micro: int, recomputed: int, on_host: bool = False) -> int:
        return estimate_peak(
            shape,
            static=static,
            trainable=trainable,
            tokens=tokens(micro),
            recomputed=recomputed,
            inputs_on_host=on_host,
        )

    def plan(micro: int, recomputed: int, why: str, on_host: bool = False) -> MemoryPlan:
        return MemoryPlan(
            micro_batch=micro,
            accumulation=per_device_batch * accumulation // micro,
            recomputed_layers=recomputed,
            layers=layers,
            estimated_peak=peak(micro, recomputed, on_host),
            budget=budget,
            reason=why,
            inputs_on_host=on_host,
            host_bytes=host_bytes(shape, tokens=tokens(micro), recomputed=recomputed) if on_host else None,
        )

    step = per_device_batch * accumulation
    divisors = sorted((m for m in range(1, step + 1) if step % m == 0), reverse=True)

    def on_gpu() -> MemoryPlan:
        if peak(per_device_batch, 0) <= budget:
            larger = [m for m in divisors if m > per_device_batch and peak(m, 0) <= budget]
            micro = max(larger, default=per_device_batch)
            return plan(micro, 0, f"no recomputation and micro-batch {micro} fit {source}")
        fewest = range(1, layers + 1) if checkpointing_allowed else range(0)
        for recomputed in fewest:
            if peak(per_device_batch, recomputed) <= budget:
                return plan(
                    per_device_batch,
                    recomputed,
                    f"{recomputed} of {layers} layers recomputed to fit {source}",
                )
        # Not even every layer recomputed fits the spec's micro-batch: smaller micro-batches (the optimiser
        # step keeps its sequences, so the loss curve does not change), the largest that fits, with as few
        # layers recomputed as it allows.
        options = range(0, layers + 1) if checkpointing_allowed else range(1)
        spec_choice = "every layer recomputed" if checkpointing_allowed else "gradientCheckpointing is false"
        for micro in (m for m in divisors if m < per_device_batch):
            for recomputed in options:
                if peak(micro, recomputed) <= budget:
                    recomputes = (
                        f"{recomputed} of {layers} layers recomputed" if recomputed else "no recomputation"
                    )
                    return plan(
                        micro,
                        recomputed,
                        f"micro-batch {micro} and {recomputes} to fit {source} (micro-batch "
                        f"{per_device_batch} does not fit it, {spec_choice})",
                    )
        return plan(
            1,
            layers if checkpointing_allowed else 0,
            f"the estimate exceeds {source} at every micro-batch: micro-batch 1, {spec_choice}",
        )

    chosen = on_gpu()
    if host_free is None or not checkpointing_allowed or chosen.recomputed_layers < layers:
        return chosen
    for micro in divisors:
        for recomputed in range(1, layers + 1):
            if (micro, -recomputed) <= (chosen.micro_batch, -chosen.recomputed_layers):
                return chosen
            pinned = host_bytes(shape, tokens=tokens(micro), recomputed=recomputed)
            if pinned <= host_free and peak(micro, recomputed, True) <= budget:
                return plan(
                    micro,
                    recomputed,
                    f"micro-batch {micro} with {recomputed} of {layers} layers recomputed, their inputs "
                    f"in host memory (up to {pinned / GIB:.1f} GiB pinned), to fit {source}; with the "
                    f"inputs on the GPU: micro-batch {chosen.micro_batch}, every layer recomputed",
                    on_host=True,
                )
    return chosen
