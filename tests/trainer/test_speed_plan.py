"""How the trainer chooses to run fast: attention, padding-free batches, kernels, micro-batch and
recomputation (pure decisions), and how it counts the tokens it reports."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from ftjob.api import FineTuneJobSpec
from ftjob.contract import ProgressRecord
from ftjob_trainer.callbacks import ProgressCallback, apply_selective_recompute
from ftjob_trainer.memory import (
    FUSED_LAYERS,
    GIB,
    ModelShape,
    plan_memory,
    worst_micro_batch_tokens,
)
from ftjob_trainer.modeling import Hardware, plan_speed, plan_training
from ftjob_trainer.training import real_tokens, sft_config_kwargs

CPU = Hardware(cuda=False, bf16=False, device_name="cpu")
H200 = Hardware(cuda=True, bf16=True, device_name="NVIDIA H200", capability=(9, 0))
T4 = Hardware(cuda=True, bf16=False, device_name="Tesla T4", capability=(7, 5))
MISTRAL_7B = ModelShape(layers=32, hidden=4096, intermediate=14336, vocab=32768)
LENGTHS = [300 + (i * 37) % 1200 for i in range(2000)]  # 300-1,499 tokens, like the benchmark's rows


def spec(**training: Any) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate(
        {
            "baseModel": {"uri": "s3://models/base/"},
            "data": {"trainUri": "s3://data/train.jsonl"},
            "output": {"uri": "s3://out/run/"},
            "training": training,
        }
    )


def test_a_gpu_gets_flex_attention_liger_and_padding_free_batches() -> None:
    plan = plan_speed(H200, trust_remote_code=False, liger_available=True, flex_available=True)
    assert (plan.attention, plan.padding_free, plan.liger, plan.optimizer) == (
        "flex_attention",
        True,
        True,
        "adamw_torch_fused",
    )
    assert plan.notes == ()
    assert plan.describe()["kernels"] == ["liger:rms_norm", "liger:swiglu", "liger:rope"]
    # The fused LoRA layers are installed after the plan, once the adapters exist; the manifest says so.
    fused = replace(plan, fused_lora=True).describe()["kernels"]
    assert fused == ["liger:rms_norm", "liger:swiglu", "liger:rope", "ftjob:fused-lora"]


@pytest.mark.parametrize(
    ("hardware", "liger", "flex", "remote", "attention", "padding_free", "uses_liger", "note"),
    [
        pytest.param(CPU, True, True, False, "sdpa", False, False, "no CUDA device", id="cpu-falls-back"),
        pytest.param(
            T4, True, True, False, "sdpa", False, True, "FlexAttention unavailable", id="pre-ampere"
        ),
        pytest.param(
            CPU, False, False, False, "sdpa", False, False, "SDPA attention: padded", id="sdpa-padded"
        ),
        pytest.param(
            H200, False, True, False, "flex_attention", True, False, "liger-kernel is not", id="no-liger"
        ),
        pytest.param(
            H200, True, True, True, "flex_attention", False, True, "remote model code", id="remote-code"
        ),
    ],
)
def test_kernels_and_attention_fall_back_and_say_so(
    hardware: Hardware,
    liger: bool,
    flex: bool,
    remote: bool,
    attention: str,
    padding_free: bool,
    uses_liger: bool,
    note: str,
) -> None:
    plan = plan_speed(hardware, trust_remote_code=remote, liger_available=liger, flex_available=flex)
    assert (plan.attention, plan.padding_free, plan.liger) == (attention, padding_free, uses_liger)
    assert any(note in n for n in plan.notes)


def plan_7b(**overrides: Any) -> Any:
    kwargs: dict[str, Any] = {
        "shape": MISTRAL_7B,
        "static": int(4.9 * GIB),
        "trainable": 41_943_040,
        "lengths": LENGTHS,
        "padding_free": True,
        "per_device_batch": 4,
        "accumulation": 4,
        "checkpointing_allowed": True,
        "free": 134 * GIB,
        "limit": None,
        "auto": True,
    }
    return plan_memory(**{**kwargs, **overrides})


def test_a_gpu_with_room_recomputes_nothing_and_takes_a_larger_micro_batch() -> None:
    plan = plan_7b()
    assert plan.checkpointing == "off" and plan.recomputed_layers == 0
    assert plan.micro_batch > 4 and plan.micro_batch * plan.accumulation == 16
    assert plan.estimated_peak is not None and plan.budget is not None
    assert plan.estimated_peak <= plan.budget


def test_a_memory_limit_keeps_recomputation_and_the_spec_micro_batch() -> None:
    plan = plan_7b(limit=int(10.53 * GIB))
    assert (plan.micro_batch, plan.accumulation) == (4, 4)
    assert plan.checkpointing in {"full", "selective"}
    assert "10.5 GiB limit" in plan.reason


def test_a_middle_budget_recomputes_some_layers() -> None:
    plan = plan_7b(limit=30 * GIB)
    assert plan.checkpointing == "selective"
    assert 0 < plan.recomputed_layers < 32
    assert plan.estimated_peak is not None and plan.estimated_peak <= 30 * GIB
    assert plan.describe()["recomputedLayers"] == plan.recomputed_layers


def test_the_spec_wins_without_auto_tune_or_without_a_gpu() -> None:
    assert plan_7b(auto=False).describe()["reason"] == "as the spec says (autoTune off)"
    assert plan_7b(auto=False).checkpointing == "full"
    cpu = plan_7b(free=None, checkpointing_allowed=False)
    assert (cpu.micro_batch, cpu.accumulation, cpu.checkpointing) == (4, 4, "off")


def test_checkpointing_false_is_never_overridden() -> None:
    plan = plan_7b(limit=int(10.53 * GIB), checkpointing_allowed=False)
    assert plan.checkpointing == "off" and "gradientCheckpointing is false" in plan.reason
    # It takes a smaller micro-batch instead: one that fits, or the smallest, saying that it does not fit.
    assert (plan.micro_batch, plan.accumulation) == (1, 16) and "exceeds the 10.5 GiB limit" in plan.reason
    roomier = plan_7b(limit=40 * GIB, checkpointing_allowed=False)
    assert (roomier.micro_batch, roomier.accumulation, roomier.checkpointing) == (2, 8, "off")
    assert roomier.estimated_peak is not None and roomier.estimated_peak <= 40 * GIB


def test_a_limit_below_every_recomputed_layer_takes_a_smaller_micro_batch() -> None:
    """The recipe's own peak on the benchmark's batches (7.61 GiB): micro-batch 4 does not fit even with
    every layer recomputed, so the step's 16 sequences go in smaller micro-batches, each with as few layers
    recomputed as fit; the estimate stays under the limit."""
    for limit in (7.61, 9.13):
        plan = plan_7b(limit=int(limit * GIB))
        assert plan.micro_batch < 4 and plan.micro_batch * plan.accumulation == 16, plan
        assert plan.estimated_peak is not None and plan.estimated_peak <= int(limit * GIB), plan
        assert "micro-batch 4 does not fit it" in plan.reason
        # No larger micro-batch fits, whatever is recomputed.
        assert plan_7b(limit=int(limit * GIB), per_device_batch=plan.micro_batch * 2).micro_batch < (
            plan.micro_batch * 2
        )
    larger = plan_7b(limit=int(9.13 * GIB))
    smaller = plan_7b(limit=int(7.61 * GIB))
    assert (larger.micro_batch, -larger.recomputed_layers) >= (
        smaller.micro_batch,
        -smaller.recomputed_layers,
    )


def test_fused_layers_fit_the_recipes_micro_batch_under_its_peak() -> None:
    """fused_lora's layers with bf16 activations keep about two thirds of what peft's keep with fp32 ones,
    and the 4-bit model holds its embeddings and LM head in bf16 (about 4.0 GiB for the 7B shape, not 4.5):
    under the recipe's own 7.61 GiB the spec's micro-batch 4 fits with every layer recomputed, where peft's
    layers had to go down to micro-batch 2."""
    fused = replace(MISTRAL_7B, activations=FUSED_LAYERS)
    assert fused.layer_bytes(1000) < 0.7 * MISTRAL_7B.layer_bytes(1000)
    plan = plan_7b(shape=fused, static=int(4.0 * GIB), limit=int(7.61 * GIB))
    assert (plan.micro_batch, plan.accumulation, plan.checkpointing) == (4, 4, "full"), plan
    assert plan.estimated_peak is not None and plan.estimated_peak <= int(7.61 * GIB)
    peft = plan_7b(static=int(4.5 * GIB), limit=int(7.61 * GIB))
    assert peft.micro_batch < 4
    # With the GPU to itself, no recomputation, and the larger micro-batch estimated at less memory.
    free = plan_7b(shape=fused, static=int(4.0 * GIB))
    assert (free.micro_batch, free.checkpointing) == (8, "off")
    assert free.estimated_peak is not None and free.estimated_peak < 0.75 * (plan_7b().estimated_peak or 0)


def test_a_limit_nothing_fits_runs_the_smallest_plan_and_says_so() -> None:
    plan = plan_7b(limit=int(5 * GIB))
    assert (plan.micro_batch, plan.accumulation, plan.checkpointing) == (1, 16, "full")
    assert "the estimate exceeds the 5.0 GiB limit at every micro-batch" in plan.reason
    assert plan.estimated_peak is not None and plan.estimated_peak > 5 * GIB


def test_worst_micro_batch() -> None:
    assert worst_micro_batch_tokens([5, 9, 3, 7], 2, padding_free=True) == 16
    assert worst_micro_batch_tokens([5, 9, 3, 7], 2, padding_free=False) == 18
    assert worst_micro_batch_tokens([], 4, padding_free=True) == 0


def test_sft_arguments_follow_the_speed_and_memory_plans(tmp_path: Path) -> None:
    job = spec()
    training = plan_training(job.peft, H200)
    speed = plan_speed(H200, trust_remote_code=False, liger_available=True, flex_available=True)
    memory = plan_7b()
    kwargs = sft_config_kwargs(job, training, tmp_path, use_cpu=False, speed=speed, memory=memory)
    assert kwargs["padding_free"] is True and kwargs["max_length"] is None
    assert kwargs["use_liger_kernel"] is True and kwargs["optim"] == "adamw_torch_fused"
    assert kwargs["per_device_train_batch_size"] == memory.micro_batch
    assert kwargs["gradient_accumulation_steps"] == memory.accumulation
    assert kwargs["gradient_checkpointing"] is False
    assert kwargs["include_num_input_tokens_seen"] == "no"
    assert kwargs["accelerator_config"] == {"non_blocking": True} and kwargs["dataloader_pin_memory"]

    packed = sft_config_kwargs(
        spec(packing=True), training, tmp_path, use_cpu=False, speed=speed, memory=memory
    )
    assert "padding_free" not in packed and packed["max_length"] == 2048 and packed["packing"] is True

    plain = sft_config_kwargs(job, plan_training(job.peft, CPU), tmp_path, use_cpu=True)
    assert "padding_free" not in plain and plain["per_device_train_batch_size"] == 4
    assert "accelerator_config" not in plain


def test_only_tokens_that_are_not_padding_count() -> None:
    padded = {
        "input_ids": torch.ones(2, 5, dtype=torch.long),
        "attention_mask": torch.tensor([[1] * 5, [1, 1, 0, 0, 0]]),
    }
    assert real_tokens(padded) == 7
    flat = {
        "input_ids": torch.ones(1, 7, dtype=torch.long),
        "position_ids": torch.tensor([[0, 1, 2, 3, 4, 0, 1]]),
    }
    assert real_tokens(flat) == 7


class Reporter:
    def __init__(self) -> None:
        self.records: list[ProgressRecord] = []

    def report(self, record: ProgressRecord) -> None:
        self.records.append(record)


def test_tokens_per_second_leave_out_the_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 0.0, 60.0, 60.0, 60.0, 62.0, 62.0, 64.0, 64.0] + [64.0] * 20)
    monkeypatch.setattr("ftjob_trainer.callbacks.time.monotonic", lambda: next(clock))
    reporter = Reporter()
    callback = ProgressCallback(reporter, heartbeat_seconds=1e9)
    args, control, state = TrainingArguments(output_dir="/tmp/unused"), TrainerControl(), TrainerState()
    state.max_steps = 10
    callback.on_train_begin(args, state, control)
    for step, seen in ((1, 1000), (2, 3000), (3, 5000)):  # step 1 took 60 s (compilation), then 2 s each
        state.global_step, state.num_input_tokens_seen = step, seen
        callback.on_step_end(args, state, control)
    measured = callback.throughput()
    assert measured["nonPadTokensPerSecond"] == 1000.0  # 4,000 tokens in 4 s; not 5,000 in 64 s
    assert measured["measuredSteps"] == 2 and measured["firstStepSeconds"] == 60.0
    assert callback.record(state).tokens_per_second == pytest.approx(1000.0)


def test_selective_recompute_switches_layers_one_by_one() -> None:
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    model = MistralForCausalLM(config)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert apply_selective_recompute(model, 1) == 4
    assert [layer.gradient_checkpointing for layer in model.model.layers] == [True, False, False, False]
    apply_selective_recompute(model, 0)
    assert not any(layer.gradient_checkpointing for layer in model.model.layers)


def test_a_limit_counts_allocated_bytes_and_free_memory_keeps_a_margin() -> None:
    from ftjob_trainer.memory import LIMIT_MARGIN

    limited = plan_7b(limit=40 * GIB)
    assert limited.budget == int(40 * GIB * (1 - LIMIT_MARGIN))
    assert "40.0 GiB limit" in limited.reason
    # A limit above what the GPU has free changes nothing: free memory (less a margin) bounds the plan.
    roomy = plan_7b(limit=1000 * GIB)
    assert roomy.budget is not None and roomy.budget < (134 + 4.9) * GIB
    assert "free GPU memory" in roomy.reason


def word_tokenizer(vocab: int) -> Any:
    """A word-level tokenizer of `vocab` ids: <pad>, <eos>, then w0, w1, ..."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<eos>"] + [f"w{i}" for i in range(vocab - 2)]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")


def test_the_trainer_counts_real_tokens_of_padding_free_batches_and_recomputes_chosen_layers(
    tmp_path: Path,
) -> None:
    """The real trl trainer, one step on CPU: the speed and memory plans reach it, the token count is the
    tokens of the examples (not a padded rectangle), and only the chosen layers are recomputed."""
    from datasets import Dataset
    from transformers import MistralConfig, MistralForCausalLM
    from trl.trainer.sft_config import SFTConfig

    from ftjob_trainer.callbacks import SelectiveRecomputeCallback
    from ftjob_trainer.memory import MemoryPlan
    from ftjob_trainer.modeling import SpeedPlan
    from ftjob_trainer.training import counting_trainer_class

    tokenizer = word_tokenizer(64)
    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        use_cache=False,
    )
    model = MistralForCausalLM(config)
    lengths = [5, 11, 3, 8]
    rows = Dataset.from_list(
        [{"input_ids": list(range(2, 2 + n)), "assistant_masks": [0] + [1] * (n - 1)} for n in lengths]
    )
    job = spec(maxSteps=1, perDeviceBatchSize=2, gradientAccumulationSteps=2)
    speed = SpeedPlan(attention="sdpa", padding_free=True, liger=False, optimizer="adamw_torch", notes=())
    memory = MemoryPlan(
        micro_batch=2,
        accumulation=2,
        recomputed_layers=1,
        layers=2,
        estimated_peak=None,
        budget=None,
        reason="test",
    )
    kwargs = sft_config_kwargs(
        job, plan_training(job.peft, CPU), tmp_path, use_cpu=True, speed=speed, memory=memory
    )
    kwargs.update(
        eval_strategy="no", save_strategy="no", load_best_model_at_end=False, metric_for_best_model=None
    )
    recompute = SelectiveRecomputeCallback(memory.recomputed_layers)
    trainer = counting_trainer_class()(
        model=model,
        args=SFTConfig(**kwargs),
        train_dataset=rows,
        processing_class=tokenizer,
        callbacks=[recompute],
    )
    trainer.train()
    assert trainer.state.num_input_tokens_seen == sum(lengths)  # padded micro-batches would count more
    assert recompute.layers == 2
    assert [layer.gradient_checkpointing for layer in model.model.layers] == [True, False]
