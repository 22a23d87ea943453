"""Several GPUs: DDP or FSDP, chosen from the model's size and the GPU's memory; the FSDP configuration that
transformers receives; the spec's rules for `resources.distributedStrategy`.

FSDP itself needs CUDA (accelerate shards only on GPUs; on CPUs it runs DDP over gloo), so the sharded run
is measured on GPUs by bench/scale_out.py; here the choice, the arguments and their acceptance by the
installed transformers are checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from ftjob.api import FineTuneJobSpec
from ftjob.api.peft import ALL_LINEAR
from ftjob_trainer.errors import ConfigInvalid
from ftjob_trainer.memory import GIB, ModelShape, estimate_peak, memory_budget
from ftjob_trainer.modeling import Hardware, plan_training
from ftjob_trainer.parallelism import (
    Strategy,
    choose_strategy,
    decoder_layer_classes,
    fsdp_config,
    lora_parameter_count,
    weight_bytes,
)
from ftjob_trainer.training import sft_config_kwargs
from tests.support.models import tiny_llama_config

MISTRAL_7B = ModelShape(layers=32, hidden=4096, intermediate=14336, vocab=32768)
STATIC_7B_4BIT = int(4.6 * GIB)
"""What the random Mistral-7B-shaped checkpoint holds on an H200 once loaded in 4 bits (bench runs)."""
LORA_7B = 41_943_040  # r=16 on the seven projections of 32 layers


def spec(**resources: Any) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate(
        {
            "baseModel": {"uri": "s3://models/base/"},
            "data": {"trainUri": "s3://data/train.jsonl"},
            "output": {"uri": "s3://out/run/"},
            "resources": resources,
        }
    )


def replicated_7b(longest: int = 1500) -> int:
    return estimate_peak(
        MISTRAL_7B, static=STATIC_7B_4BIT, trainable=LORA_7B, tokens=longest, recomputed=MISTRAL_7B.layers
    )


def choose(requested: str = "auto", *, world: int = 2, cuda: bool = True, budget: int | None) -> Strategy:
    return choose_strategy(
        requested=requested,
        world_size=world,
        cuda=cuda,
        replicated_peak=replicated_7b() if cuda else None,
        sharded_bytes=STATIC_7B_4BIT,
        budget=budget,
    )


def test_one_process_has_nothing_to_choose() -> None:
    assert choose(world=1, budget=GIB).name == "single"


def test_auto_replicates_a_model_that_fits_and_shards_one_that_does_not() -> None:
    roomy, _ = memory_budget(static=STATIC_7B_4BIT, free=130 * GIB, limit=None)
    ddp = choose(budget=roomy)
    assert ddp.name == "ddp" and ddp.bytes_saved_per_gpu() == 0
    assert "fits" in ddp.reason and f"{roomy / GIB:.1f} GiB" in ddp.reason

    capped, source = memory_budget(static=STATIC_7B_4BIT, free=130 * GIB, limit=int(4.5 * GIB))
    assert source == "the 4.5 GiB limit"
    assert replicated_7b() > capped  # the whole 4-bit base alone is over the limit
    fsdp = choose(budget=capped)
    assert fsdp.name == "fsdp" and fsdp.sharded
    # Each of 2 GPUs keeps half the weights: the other half comes off its static memory.
    assert fsdp.bytes_saved_per_gpu() == STATIC_7B_4BIT - STATIC_7B_4BIT // 2
    assert replicated_7b() - fsdp.bytes_saved_per_gpu() <= capped
    assert "sharded across 2 GPUs" in fsdp.reason and "fits" in fsdp.reason
    assert fsdp.label("qlora").startswith("fsdp (4-bit base, adapters and optimiser state sharded across 2")

    hopeless = choose(budget=GIB)
    assert hopeless.name == "fsdp" and "still over" in hopeless.reason


def test_the_spec_s_strategy_wins_and_fsdp_needs_cuda() -> None:
    assert choose("ddp", budget=GIB).name == "ddp"
    assert choose("fsdp", budget=200 * GIB).name == "fsdp"
    assert choose(cuda=False, budget=None).name == "ddp"
    assert "gloo" in choose(cuda=False, budget=None).reason
    with pytest.raises(ConfigInvalid, match=r"distributedStrategy is fsdp but no CUDA device"):
        choose("fsdp", cuda=False, budget=None)


def test_fsdp_config_is_accepted_by_the_installed_transformers(tmp_path: Path) -> None:
    from trl.trainer.sft_config import SFTConfig

    job = spec(gpus=2, distributedStrategy="fsdp")
    plan = plan_training(job.peft, Hardware(cuda=False, bf16=False, device_name="cpu"))
    config = fsdp_config(["MistralDecoderLayer"])
    kwargs = sft_config_kwargs(job, plan, tmp_path, use_cpu=True, ddp_timeout=60, fsdp=config)
    assert kwargs["fsdp"] is True and kwargs["fsdp_config"] is config
    plugin = SFTConfig(**kwargs).fsdp_plugin_args
    assert plugin is not None
    assert plugin["fsdp_version"] == 1
    assert plugin["transformer_cls_names_to_wrap"] == "MistralDecoderLayer"
    assert plugin["use_orig_params"] is False and plugin["sync_module_states"] is True
    assert plugin["state_dict_type"] == "FULL_STATE_DICT"
    assert plugin["reshard_after_forward"] == "full_shard"

    assert "fsdp" not in sft_config_kwargs(job, plan, tmp_path, use_cpu=True, ddp_timeout=60)


@pytest.mark.parametrize("targets", [[ALL_LINEAR], ["q_proj", "v_proj"]])
def test_the_lora_estimate_counts_what_peft_adds(targets: list[str]) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    config = tiny_llama_config()
    base = LlamaForCausalLM(config)
    assert decoder_layer_classes(base) == ["LlamaDecoderLayer"]
    assert weight_bytes(base.parameters()) == 4 * sum(p.numel() for p in base.parameters())
    estimate = lora_parameter_count(base, targets, 8, ALL_LINEAR)
    target_modules: Any = ALL_LINEAR if targets == [ALL_LINEAR] else targets
    model = get_peft_model(base, LoraConfig(r=8, target_modules=target_modules, task_type="CAUSAL_LM"))
    assert estimate == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    assert decoder_layer_classes(model) == ["LlamaDecoderLayer"]


def test_the_spec_refuses_fsdp_where_nothing_can_be_sharded() -> None:
    assert spec().resources.distributed_strategy == "auto"
    assert spec(gpus=1, nodes=2, distributedStrategy="fsdp").resources.distributed_strategy == "fsdp"
    assert spec(gpus=2, distributedStrategy="ddp").resources.distributed_strategy == "ddp"
    with pytest.raises(ValidationError, match=r"fsdp needs GPUs"):
        spec(gpus=0, distributedStrategy="fsdp")
    with pytest.raises(ValidationError, match=r"set gpus x nodes to 2 or more"):
        spec(gpus=1, distributedStrategy="fsdp")
    with pytest.raises(ValidationError, match=r"distributedStrategy"):
        spec(gpus=2, distributedStrategy="zero3")
