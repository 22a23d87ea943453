"""Recomputed layers whose inputs wait in host memory (offload.py): the same gradients as keeping every
activation, dropout masks included, and the plan that chooses it."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import MistralConfig, MistralForCausalLM

from ftjob_trainer import fused_lora
from ftjob_trainer.callbacks import apply_selective_recompute, offload_recomputed_inputs
from ftjob_trainer.memory import (
    FUSED_LAYERS,
    GIB,
    ModelShape,
    host_bytes,
    host_memory_available,
    plan_memory,
)
from ftjob_trainer.offload import HostOffload, offloaded_checkpoint

LAYERS = 3


def tiny_lora_model(dropout: float) -> Any:
    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = get_peft_model(
        MistralForCausalLM(config),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear"),
    )
    for name, param in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero, which would hide A's gradients
            torch.nn.init.normal_(param, std=0.1)
    assert fused_lora.install(model) > 0
    model.train()
    return model


def gradients(model: Any, seed: int, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


IDS = torch.randint(0, 96, (2, 24), generator=torch.Generator().manual_seed(1))


def offloaded(model: Any) -> HostOffload:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    apply_selective_recompute(model, LAYERS)
    offload = HostOffload()
    assert offload_recomputed_inputs(model, offload) == LAYERS
    # Never wrapped twice (a resumed train() calls the callback again).
    assert offload_recomputed_inputs(model, offload) == 0
    return offload


def test_offloaded_layers_give_the_gradients_of_keeping_every_activation() -> None:
    model = tiny_lora_model(dropout=0.2)
    reference = gradients(model, seed=5, ids=IDS)
    other_masks = gradients(model, seed=6, ids=IDS)
    offload = offloaded(model)
    got = gradients(model, seed=5, ids=IDS)

    lora = [n for n in reference if "lora_" in n]
    assert len(lora) == 2 * 7 * LAYERS and set(got) == set(reference)
    # Every layer's adapters learn, the first layer's too (its input comes from frozen embeddings).
    assert all(got[n].abs().sum() > 0 for n in lora)
    for name in reference:
        torch.testing.assert_close(got[name], reference[name], rtol=1e-5, atol=1e-6)
    # Control: the dropout masks matter at this size, so matching them is what the replay achieves.
    assert max((reference[n] - other_masks[n]).abs().max().item() for n in lora) > 1e-3
    # The inputs really went through the host copies, one per layer, and none is left behind.
    hidden_bytes = IDS.numel() * 32 * 4
    assert offload.saved_bytes == LAYERS * hidden_bytes
    assert not [ref for ref in offload._pending if ref() is not None]


def test_the_rng_goes_on_as_without_recomputation() -> None:
    """The rebuild replays the forward pass's RNG state and restores it afterwards: the next micro-batch
    draws the masks it would have drawn without recomputation."""
    model = tiny_lora_model(dropout=0.2)
    torch.manual_seed(9)
    model(input_ids=IDS, labels=IDS).loss.backward()
    plain_next = torch.rand(4)
    offloaded(model)
    torch.manual_seed(9)
    model(input_ids=IDS, labels=IDS).loss.backward()
    assert torch.equal(torch.rand(4), plain_next)


def test_calls_it_cannot_serve_go_to_the_usual_checkpoint() -> None:
    calls: list[str] = []

    def fallback(run: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append("fallback")
        return run(*args, **kwargs)

    checkpoint = offloaded_checkpoint(HostOffload(), fallback)
    x = torch.randn(2, 3, requires_grad=True)
    weight = torch.randn(3, 3, requires_grad=True)

    def layer(h: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        out = h @ weight
        return out * scale if scale is not None else out

    checkpoint(partial(layer, scale=torch.ones(3, requires_grad=True)), x)  # a keyword that needs grad
    checkpoint(layer, x, torch.ones(3))  # two positional inputs
    with torch.no_grad():
        checkpoint(layer, x)
    assert calls == ["fallback"] * 3
    out = checkpoint(layer, x)
    assert calls == ["fallback"] * 3 and out.grad_fn is not None
    out.sum().backward()
    assert x.grad is not None and weight.grad is not None
    torch.testing.assert_close(x.grad, weight.sum(dim=1).expand(2, 3))


# --- The plan ------------------------------------------------------------------------------------------------

SHAPE = replace(ModelShape(layers=32, hidden=4096, intermediate=14336, vocab=32768), activations=FUSED_LAYERS)
LENGTHS = [300 + (i * 37) % 1200 for i in range(2000)]


def plan(**overrides: Any) -> Any:
    kwargs: dict[str, Any] = {
        "shape": SHAPE,
        "static": int(4.0 * GIB),
        "trainable": 41_943_040,
        "lengths": LENGTHS,
        "padding_free": True,
        "per_device_batch": 4,
        "accumulation": 4,
        "checkpointing_allowed": True,
        "free": 130 * GIB,
        "limit": int(7.61 * GIB),
        "auto": True,
        "host_free": 64 * GIB,
    }
    return plan_memory(**{**kwargs, **overrides})


def test_under_a_cap_host_memory_buys_a_larger_micro_batch() -> None:
    on_host = plan()
    assert (on_host.micro_batch, on_host.accumulation, on_host.checkpointing) == (8, 2, "full")
    assert on_host.inputs_on_host and on_host.describe()["recomputedInputs"] == "host"
    assert on_host.estimated_peak <= int(7.61 * GIB) and "host memory" in on_host.reason
    assert on_host.host_bytes == host_bytes(SHAPE, tokens=sum(sorted(LENGTHS)[-8:]), recomputed=32)
    # Without host memory to use (several processes, a CPU), or with almost none: the inputs stay.
    for host_free in (None, 0):
        on_gpu = plan(host_free=host_free)
        assert (on_gpu.micro_batch, on_gpu.inputs_on_host, on_gpu.host_bytes) == (4, False, None)
        assert on_gpu.describe()["recomputedInputs"] == "gpu"
    # Host memory for micro-batch 4's inputs but not 8's: micro-batch 4, and the GPU memory the inputs
    # leave spares a layer its recomputation.
    between = plan(host_free=on_host.host_bytes - 1)
    assert (between.micro_batch, between.inputs_on_host) == (4, True)
    assert between.recomputed_layers < 32 and between.host_bytes < on_host.host_bytes


def test_host_memory_is_never_used_where_the_gpu_holds_everything() -> None:
    free = plan(limit=None)
    assert (free.recomputed_layers, free.inputs_on_host) == (0, False)
    assert "recomputedInputs" not in free.describe()
    # Some layers recomputed with their inputs on the GPU: the step stays as the GPU plan has it.
    middle = plan(limit=int(30 * GIB))
    assert 0 < middle.recomputed_layers < 32 and not middle.inputs_on_host
    # gradientCheckpointing: false is never overridden.
    assert not plan(checkpointing_allowed=False).inputs_on_host


def test_host_memory_available_reads_meminfo_and_the_cgroup() -> None:
    meminfo = "MemTotal:       65536000 kB\nMemAvailable:   32000000 kB\n"
    assert host_memory_available(meminfo, None, None) == 32000000 * 1024
    assert host_memory_available(meminfo, "max\n", "100\n") == 32000000 * 1024
    assert host_memory_available(meminfo, str(8 * GIB), str(6 * GIB)) == 2 * GIB
    assert host_memory_available(meminfo, str(GIB), str(2 * GIB)) == 0
    assert host_memory_available("MemTotal: 1 kB\n", None, None) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_a_gpu_the_inputs_leave_it() -> None:
    model = tiny_lora_model(dropout=0.1).cuda()
    ids = IDS.cuda()
    reference = gradients(model, seed=5, ids=ids)
    offload = offloaded(model)
    got = gradients(model, seed=5, ids=ids)
    for name in reference:
        torch.testing.assert_close(got[name], reference[name], rtol=1e-4, atol=1e-5)
    assert offload.saved_bytes == LAYERS * ids.numel() * 32 * 4
