"""The adapter of a sharded (FSDP) model: saved whole, checked, and restored on every process.

peft 0.21 cannot pick the adapter out of an FSDP1 model's state dict (the control below): the trainer's
own save and load replace that path, and every saved adapter is read back before it is published.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

from ftjob_trainer.errors import TrainerError
from ftjob_trainer.sharded_adapter import (
    ADAPTER_WEIGHTS,
    expected_adapter_keys,
    saved_name,
    verify_adapter,
)
from tests.support.models import tiny_llama_config

WORKER = Path(__file__).resolve().parents[1] / "support" / "fsdp_adapter_worker.py"
ROOT = Path(__file__).resolve().parents[2]


def test_two_fsdp_processes_save_a_whole_adapter_and_restore_it(tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "trainer_image"), str(ROOT / "src"), str(ROOT)]),
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    done = subprocess.run(
        [*command, str(WORKER), str(out), str(tmp_path / "adapter")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(out.read_text())
    # The control: the full state dict holds all 28 LoRA tensors, and peft's filter keeps none of them.
    assert seen["fullStateDictLoraKeys"] == seen["expected"] == 28
    assert seen["peftFilterKeys"] == 0
    # The trainer's save: every tensor, the trained values, loadable by peft.
    assert seen["verified"] == 28
    assert seen["trainedLoraBSum"] > 0
    assert seen["reloadedMatches"] is True
    # Restored on both processes, each from the whole file.
    assert seen["restoredOnEveryRank"] is True
    assert seen["loadedPerRank"] == [28, 28]
    # A resumed run's order: adapter before the first forward pass, optimiser state, a step.
    assert seen["resumedBeforeFirstForward"] is True


def saved_adapter(tmp_path: Path) -> tuple[Path, set[str]]:
    config = tiny_llama_config(layers=1, hidden=32, vocab=128)
    model = get_peft_model(
        LlamaForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    model.save_pretrained(str(tmp_path))
    return tmp_path, expected_adapter_keys(model.named_parameters())


def test_an_adapter_saved_by_peft_passes_and_names_match(tmp_path: Path) -> None:
    folder, expected = saved_adapter(tmp_path)
    assert verify_adapter(folder, expected) == 4
    assert saved_name("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight") == (
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    )
    assert expected == set(load_file(str(folder / ADAPTER_WEIGHTS)))


def test_an_incomplete_adapter_is_refused_with_what_is_missing(tmp_path: Path) -> None:
    folder, expected = saved_adapter(tmp_path)
    tensors = load_file(str(folder / ADAPTER_WEIGHTS))
    dropped = sorted(tensors)[0]
    save_file({k: v for k, v in tensors.items() if k != dropped}, str(folder / ADAPTER_WEIGHTS))
    with pytest.raises(TrainerError, match=rf"1 of 4 LoRA tensors missing, e\.g\. {dropped}"):
        verify_adapter(folder, expected)

    save_file({k: torch.empty(0) for k in tensors}, str(folder / ADAPTER_WEIGHTS))
    with pytest.raises(TrainerError, match="4 empty"):
        verify_adapter(folder, expected)

    (folder / ADAPTER_WEIGHTS).unlink()
    with pytest.raises(TrainerError, match="the adapter was not saved"):
        verify_adapter(folder, expected)


def test_a_sharded_run_s_trainer_saves_and_restores_through_the_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trainer's overrides for a sharded run, against the installed transformers: a checkpoint's model is
    the adapter (accelerate's model copy is neither made nor kept), the optimiser, scheduler and RNG states
    are saved as usual, and a resume or the best checkpoint restores the adapter. accelerate shards only on
    GPUs, so `is_fsdp_enabled` is set by hand on a CPU trainer: the FSDP gathering itself is the worker
    test's above."""
    import transformers.trainer as hf_trainer
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from trl.trainer.sft_config import SFTConfig

    from ftjob_trainer.training import FSDP_MODEL_FILE, counting_trainer_class

    words = ["<pad>", "<eos>"] + [f"w{i}" for i in range(126)]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")
    config = tiny_llama_config(layers=1, hidden=32, vocab=128)
    torch.manual_seed(0)
    model = get_peft_model(
        LlamaForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    expected = expected_adapter_keys(model.named_parameters())
    rows = Dataset.from_list([{"input_ids": list(range(2, 2 + n))} for n in (5, 9, 7, 6)])
    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=1,
        per_device_train_batch_size=2,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        learning_rate=0.5,
    )
    trainer = counting_trainer_class()(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
    trainer.train()
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    assert all(float(t.abs().sum()) > 0 for t in trained.values())

    model_copies: list[str] = []
    optimizer_saves: list[str] = []

    def copy_model(*args: Any, **kwargs: Any) -> None:
        model_copies.append(args[3])

    monkeypatch.setattr(hf_trainer, "save_fsdp_model", copy_model)
    monkeypatch.setattr(hf_trainer, "save_fsdp_optimizer", lambda *a, **k: optimizer_saves.append(a[4]))
    trainer.is_fsdp_enabled = True
    monkeypatch.setattr(trainer.accelerator.state, "fsdp_plugin", object(), raising=False)
    checkpoint = tmp_path / "out" / "checkpoint-1"
    trainer._save_checkpoint(trainer.model, trial=None)

    assert model_copies == [] and optimizer_saves == [str(checkpoint)]
    # accelerate's model save was stood in for during the checkpoint only, then put back.
    assert vars(hf_trainer)["save_fsdp_model"] is copy_model and not (checkpoint / FSDP_MODEL_FILE).exists()
    assert (checkpoint / "scheduler.pt").is_file() and (checkpoint / "trainer_state.json").is_file()
    assert verify_adapter(checkpoint, expected) == 4

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.zero_()
    trainer._load_from_checkpoint(str(checkpoint))
    assert all(torch.equal(p, trained[n]) for n, p in model.named_parameters() if n in trained)

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.zero_()
    trainer.state.best_model_checkpoint = str(checkpoint)
    trainer._load_best_model()
    assert all(torch.equal(p, trained[n]) for n, p in model.named_parameters() if n in trained)
