"""Recomputed layers whose inputs wait in host memory (offload.py): the same gradients as keeping every
activation, dropout masks included, and the plan that chooses it."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import MistralConfig, MistralForCausalLM

from ftjob_trainer import fused_lora
from ftjob_trainer.callbacks import apply_selective_recompute, offload_recomputed_inputs
from ftjob_trainer.memory import FUSED_LAYERS, GIB, host_bytes, host_memory_available
from ftjob_trainer.offload import HostOffload, offloaded_checkpoint
from tests.trainer.test_speed_plan import LENGTHS, MISTRAL_7B, plan_7b, word_tokenizer

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

SHAPE = replace(MISTRAL_7B, activations=FUSED_LAYERS)


def plan(**overrides: Any) -> Any:
    """The 7B plan of test_speed_plan with the fused layers' activations and 4-bit weights (4.0 GiB held),
    under the recipe's 7.61 GiB, with 64 GiB of host memory to spare."""
    kwargs: dict[str, Any] = {
        "shape": SHAPE,
        "static": int(4.0 * GIB),
        "free": 130 * GIB,
        "limit": int(7.61 * GIB),
        "host_free": 64 * GIB,
    }
    return plan_7b(**{**kwargs, **overrides})


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
    # cgroup v1 without a limit: a huge number, so the machine's figure stands.
    assert host_memory_available(meminfo, "9223372036854771712\n", "4096\n") == 32000000 * 1024


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


def test_the_trainer_trains_alike_with_inputs_on_the_host(tmp_path: Path) -> None:
    """The real trl trainer on CPU, two optimiser steps of two micro-batches, padding-free, dropout on:
    with every layer recomputed and the inputs on the host (the callback wires it at train start), the
    losses and the trained adapter equal those of keeping every activation."""
    from datasets import Dataset
    from trl.trainer.sft_config import SFTConfig

    from ftjob.api import FineTuneJobSpec
    from ftjob_trainer.callbacks import SelectiveRecomputeCallback
    from ftjob_trainer.memory import MemoryPlan
    from ftjob_trainer.modeling import Hardware, SpeedPlan, plan_training
    from ftjob_trainer.training import counting_trainer_class, sft_config_kwargs

    tokenizer = word_tokenizer(96)
    lengths = [9, 17, 5, 12, 14, 7, 10, 6]
    rows = Dataset.from_list(
        [
            {"input_ids": [2 + (3 * i + n) % 90 for i in range(n)], "assistant_masks": [0] + [1] * (n - 1)}
            for n in lengths
        ]
    )
    job = FineTuneJobSpec.model_validate(
        {
            "baseModel": {"uri": "s3://models/base/"},
            "data": {"trainUri": "s3://data/train.jsonl"},
            "output": {"uri": "s3://out/run/"},
            "training": {"maxSteps": 2, "perDeviceBatchSize": 2, "gradientAccumulationSteps": 2},
        }
    )
    speed = SpeedPlan(attention="sdpa", padding_free=True, liger=False, optimizer="adamw_torch", notes=())

    def train(recomputed: int, on_host: bool) -> tuple[list[float], dict[str, torch.Tensor], Any]:
        model = tiny_lora_model(dropout=0.1)
        memory = MemoryPlan(
            micro_batch=2,
            accumulation=2,
            recomputed_layers=recomputed,
            layers=LAYERS,
            estimated_peak=None,
            budget=None,
            reason="test",
            inputs_on_host=on_host,
        )
        cpu = Hardware(cuda=False, bf16=False, device_name="cpu")
        kwargs = sft_config_kwargs(
            job, plan_training(job.peft, cpu), tmp_path, use_cpu=True, speed=speed, memory=memory
        )
        kwargs.update(
            eval_strategy="no",
            save_strategy="no",
            load_best_model_at_end=False,
            metric_for_best_model=None,
            logging_steps=1,
        )
        callback = SelectiveRecomputeCallback(recomputed, inputs_on_host=on_host)
        trainer = counting_trainer_class()(
            model=model,
            args=SFTConfig(**kwargs),
            train_dataset=rows,
            processing_class=tokenizer,
            callbacks=[callback],
        )
        trainer.train()
        losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
        lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
        return losses, lora, callback

    kept_losses, kept, _ = train(0, on_host=False)
    host_losses, on_host, callback = train(LAYERS, on_host=True)
    assert callback.offload is not None and callback.offload.saved_bytes > 0
    assert len(host_losses) == 2
    torch.testing.assert_close(host_losses, kept_losses, rtol=1e-5, atol=1e-6)
    for name in kept:
        torch.testing.assert_close(on_host[name], kept[name], rtol=1e-5, atol=1e-6)
    # Control: training moved the adapters, so equal adapters are not equal initial ones.
    start = {n: p for n, p in tiny_lora_model(dropout=0.1).named_parameters() if "lora_" in n}
    assert max((kept[n] - start[n]).abs().max().item() for n in kept) > 1e-4
