"""The adapter's weights in and out of a sharded (FSDP) model, and a check of every saved adapter.

Under FSDP no process holds the adapter whole. transformers saves it through accelerate's state dict and
peft's filter, and peft 0.21 picks the adapter's entries by the names of its tuner layers, which FSDP1
prefixes with `_fsdp_wrapped_module` (peft strips only a leading one): it picks none. On the GPU run of
2026-11-30 (transformers 5.17, accelerate 1.15, peft 0.21) that wrote an adapter without a single LoRA
weight in a run that exited 0 (reloading it warned about 448 missing keys and left every adapter at its
initial value), and checkpoints a resumed run would have started from fresh adapters. So the trainer does
it itself: every process joins FSDP's `summon_full_params` (each unit's weights gathered whole), rank 0
copies the LoRA tensors out and writes them in peft's format, and a resumed run copies them back in on
every process. `verify_adapter` then reads the saved file back, whatever the
strategy: an adapter missing a weight fails the run instead of publishing a no-op.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import TrainerError

log = logging.getLogger("ftjob.trainer")

ADAPTER_WEIGHTS = "adapter_model.safetensors"
LORA_MARK = "lora_"


def saved_name(parameter_name: str, adapter_name: str = "default") -> str:
    """A parameter's key in a saved adapter: peft drops the adapter's name (`...lora_A.default.weight` is
    saved as `...lora_A.weight`)."""
    return parameter_name.replace(f".{adapter_name}.", ".")


def expected_adapter_keys(
    named_parameters: Iterable[tuple[str, Any]], adapter_name: str = "default"
) -> set[str]:
    """Keys the saved adapter must hold: one per trainable LoRA tensor, named as peft saves them."""
    return {
        saved_name(name, adapter_name)
        for name, parameter in named_parameters
        if parameter.requires_grad and LORA_MARK in name
    }


def verify_adapter(adapter_dir: Path, expected: set[str]) -> int:
    """The saved adapter holds every expected LoRA tensor, each with values; returns the tensor count.
    Raises TrainerError naming what is missing (a run that published it would serve a no-op adapter)."""
    from safetensors import safe_open

    path = adapter_dir / ADAPTER_WEIGHTS
    if not path.is_file():
        raise TrainerError(f"the adapter was not saved: {path} does not exist")
    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
        empty = sorted(k for k in keys & expected if handle.get_slice(k).get_shape() in ([], [0]))
    missing = sorted(expected - keys)
    if missing or empty:
        what = f"{len(missing)} of {len(expected)} LoRA tensors missing" if missing else ""
        if empty:
            what = "; ".join(filter(None, [what, f"{len(empty)} empty"]))
        example = (missing or empty)[0]
        raise TrainerError(f"the saved adapter is incomplete ({what}, e.g. {example}); not publishing it")
    return len(keys)


FSDP_PREFIX = "_fsdp_wrapped_module."


def adapter_units(wrapped: Any) -> list[tuple[str, Any]]:
    """The FSDP units that hold the adapter's weights (peft's wrap policy gives every LoRA layer its own),
    each with its name as the unwrapped model names it. Gathering these alone moves megabytes, where
    gathering the whole model would copy every base weight to rank 0's host memory at each checkpoint."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    return [
        (name.replace(FSDP_PREFIX, ""), module)
        for name, module in wrapped.named_modules()
        if isinstance(module, FullyShardedDataParallel) and LORA_MARK in name
    ]


def _lora_parameters(wrapped: Any, *, rank0_only: bool, offload: bool) -> Iterator[tuple[str, Any]]:
    """Every LoRA parameter, whole, named as in the unwrapped model: unit by unit, each gathered while it
    is visited (collective: every process must consume the iterator to the end). Only after the first
    forward pass, which initialises FSDP's root."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    units = adapter_units(wrapped)
    if not units:  # not wrapped (yet): the parameters are whole already
        yield from ((n, p) for n, p in wrapped.named_parameters() if LORA_MARK in n)
        return
    for unit_name, unit in units:
        with FullyShardedDataParallel.summon_full_params(
            unit, recurse=False, writeback=False, rank0_only=rank0_only, offload_to_cpu=offload
        ):
            # Inside summon_full_params FSDP names the unit's parameters as its module does.
            for name, parameter in unit.named_parameters():
                yield f"{unit_name}.{name}", parameter


def save_sharded_adapter(wrapped: Any, peft_model: Any, adapter_dir: Path, *, is_main: bool) -> None:
    """Save the adapter of an FSDP-wrapped peft model. Every process must call it (the gathering is
    collective); rank 0 writes."""
    import torch

    state: dict[str, Any] = {}
    # On GPUs rank 0 alone gathers, into host memory. FSDP cannot offload parameters that live on the CPU
    # already (its unsharded views point at freed storage), so there every process gathers in place.
    on_gpu = torch.cuda.is_available()
    for name, parameter in _lora_parameters(wrapped, rank0_only=on_gpu, offload=on_gpu):
        if is_main:
            state[name] = parameter.detach().to("cpu", copy=True)
    if is_main:
        write_adapter(peft_model, adapter_dir, state)


def write_adapter(
    peft_model: Any, adapter_dir: Path, state: dict[str, Any], adapter_name: str = "default"
) -> None:
    """The adapter's files as peft writes them (weights without the adapter's name in their keys, and its
    config), from LoRA tensors named as the unwrapped model names them. peft's own save cannot be given
    them: it keeps only keys under the tuner layers' module names, which FSDP prefixes with
    `_fsdp_wrapped_module`, so it keeps none."""
    from safetensors.torch import save_file

    adapter_dir.mkdir(parents=True, exist_ok=True)
    tensors = {saved_name(name, adapter_name): tensor.contiguous() for name, tensor in state.items()}
    save_file(tensors, str(adapter_dir / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    config = copy.copy(peft_model.peft_config[adapter_name])
    config.inference_mode = True
    config.save_pretrained(str(adapter_dir))
    log.info("saved the sharded adapter: %d LoRA tensors to %s", len(tensors), adapter_dir)


def load_sharded_adapter(wrapped: Any, adapter_dir: Path, adapter_name: str = "default") -> int:
    """Copy a saved adapter's weights into an FSDP-wrapped peft model, on every process (collective);
    returns how many tensors were loaded. Every LoRA tensor of the model must be in the file."""
    import torch
    from safetensors.torch import load_file
    from torch.distributed.fsdp import FullyShardedDataParallel

    saved = load_file(str(adapter_dir / ADAPTER_WEIGHTS), device="cpu")
    loaded = 0
    missing: list[str] = []
    # The whole model, gathered once: a resumed run loads before its first forward pass, and gathering a
    # unit before FSDP has initialised the root makes that unit a root (its optimiser state then fails
    # to load). The model was loaded whole on each GPU before it was sharded, so it fits once more.
    with torch.no_grad(), FullyShardedDataParallel.summon_full_params(wrapped, writeback=True):
        for name, parameter in wrapped.named_parameters():
            if LORA_MARK not in name:
                continue
            tensor = saved.get(saved_name(name, adapter_name))
            if tensor is None:
                missing.append(name)
                continue
            parameter.copy_(tensor.to(device=parameter.device, dtype=parameter.dtype))
            loaded += 1
    if missing:
        raise TrainerError(
            f"the checkpoint's adapter lacks {len(missing)} LoRA tensors (e.g. {missing[0]}): cannot resume"
        )
    log.info("restored %d LoRA tensors from %s", loaded, adapter_dir)
    return loaded
