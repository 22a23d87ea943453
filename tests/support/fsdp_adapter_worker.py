"""One process of tests/trainer/test_sharded_adapter.py (run by torchrun, gloo on the CPU).

A tiny bf16 Llama with LoRA, wrapped in FSDP1 the way transformers wraps it for `distributedStrategy: fsdp`
(each decoder layer one unit, each adapter its own unit through peft's policy, flat parameters), trains
one step; then the adapter goes through peft's own filter (the control), `save_sharded_adapter`, a reload
with peft, and `load_sharded_adapter`. Rank 0 writes what it saw as JSON to argv[1].
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from peft.utils.other import fsdp_auto_wrap_policy
from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel, StateDictType
from transformers import LlamaForCausalLM

from ftjob_trainer.sharded_adapter import (
    expected_adapter_keys,
    load_sharded_adapter,
    save_sharded_adapter,
    verify_adapter,
)
from tests.support.models import tiny_llama_config

CONFIG = tiny_llama_config()


def adapted() -> PeftModel:
    torch.manual_seed(0)
    base = cast(Any, LlamaForCausalLM(CONFIG)).to(torch.bfloat16)
    return get_peft_model(base, LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM"))


def wrap_policy(model: PeftModel) -> Any:
    """transformers' policy for a peft model under FSDP: decoder layers, and every LoRA layer on its own."""
    return fsdp_auto_wrap_policy(model)  # type: ignore[no-untyped-call]


def lora_b(named: object) -> dict[str, float]:
    return {n: float(p.float().abs().sum()) for n, p in named if "lora_B" in n}  # type: ignore[attr-defined]


def main() -> None:
    out, adapter_dir = Path(sys.argv[1]), Path(sys.argv[2])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = adapted()
    expected = expected_adapter_keys(model.named_parameters())
    wrapped = FullyShardedDataParallel(
        model,
        auto_wrap_policy=wrap_policy(model),
        use_orig_params=False,
        device_id=torch.device("cpu"),
    )
    optimizer = torch.optim.SGD(wrapped.parameters(), lr=1.0)
    ids = torch.randint(0, CONFIG.vocab_size, (2, 16), generator=torch.Generator().manual_seed(rank))
    wrapped(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()  # lora_B leaves zero: a lost adapter cannot pass for a trained one

    with FullyShardedDataParallel.state_dict_type(
        wrapped, StateDictType.FULL_STATE_DICT, FullStateDictConfig(offload_to_cpu=False, rank0_only=False)
    ):
        full = wrapped.state_dict()
    with FullyShardedDataParallel.summon_full_params(wrapped, writeback=False):
        trained = lora_b(wrapped.named_parameters())

    save_sharded_adapter(wrapped, model, adapter_dir, is_main=rank == 0)
    dist.barrier()
    seen: dict[str, object] = {}
    if rank == 0:
        seen["fullStateDictLoraKeys"] = sum("lora_" in k for k in full)
        seen["peftFilterKeys"] = len(get_peft_model_state_dict(model, state_dict=full))
        seen["expected"] = len(expected)
        seen["verified"] = verify_adapter(adapter_dir, expected)
        reloaded = PeftModel.from_pretrained(
            cast(Any, LlamaForCausalLM(CONFIG)).to(torch.bfloat16), str(adapter_dir)
        )
        seen["reloadedMatches"] = lora_b(reloaded.named_parameters()) == trained
        seen["trainedLoraBSum"] = sum(trained.values())

    with torch.no_grad(), FullyShardedDataParallel.summon_full_params(wrapped, writeback=True):
        for name, parameter in wrapped.named_parameters():
            if "lora_" in name:
                parameter.zero_()
    loaded = load_sharded_adapter(wrapped, adapter_dir)
    with FullyShardedDataParallel.summon_full_params(wrapped, writeback=False):
        restored = lora_b(wrapped.named_parameters()) == trained
    flags = torch.tensor([int(restored), loaded])
    gathered = [torch.zeros_like(flags) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flags)
    if rank == 0:
        seen["restoredOnEveryRank"] = all(bool(g[0]) for g in gathered)
        seen["loadedPerRank"] = [int(g[1]) for g in gathered]

    # As a resumed run does: a fresh model, wrapped, takes the adapter before its first forward pass, then
    # the optimiser state (FSDP's full optimiser state dict, as accelerate saves and loads it), then trains.
    osd = FullyShardedDataParallel.optim_state_dict(wrapped, optimizer)
    fresh_model = adapted()
    fresh = FullyShardedDataParallel(
        fresh_model,
        auto_wrap_policy=wrap_policy(fresh_model),
        use_orig_params=False,
        device_id=torch.device("cpu"),
    )
    load_sharded_adapter(fresh, adapter_dir)
    fresh_optimizer = torch.optim.SGD(fresh.parameters(), lr=1.0)
    fresh_optimizer.load_state_dict(
        FullyShardedDataParallel.optim_state_dict_to_load(fresh, fresh_optimizer, osd)
    )
    fresh(input_ids=ids, labels=ids).loss.backward()
    with FullyShardedDataParallel.summon_full_params(fresh, writeback=False):
        resumed = lora_b(fresh.named_parameters()) == trained
    if rank == 0:
        seen["resumedBeforeFirstForward"] = resumed
        out.write_text(json.dumps(seen))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
