"""Test-only hooks for a trainer subprocess: put this folder on PYTHONPATH and set

- FTJOB_TEST_MICROBATCH_SECONDS: every micro-batch (one `training_step` call) sleeps this long first and
  prints `FTJOB_TEST micro-batch <n> (step <global_step>)`, so a SIGTERM can land mid optimiser step;
- FTJOB_TEST_OOM_AT_MICROBATCH: that micro-batch raises torch.OutOfMemoryError, as CUDA would.

The trainer itself knows nothing of this: the hook patches trl's SFTTrainer when the trainer imports it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import time
from types import ModuleType
from typing import Any

_TARGET = "trl.trainer.sft_trainer"


def _patch(module: ModuleType) -> None:
    seconds = float(os.environ.get("FTJOB_TEST_MICROBATCH_SECONDS", "0"))
    oom_at = int(os.environ.get("FTJOB_TEST_OOM_AT_MICROBATCH", "0"))
    cls = module.SFTTrainer
    original = cls.training_step
    calls = [0]

    def training_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        print(f"FTJOB_TEST micro-batch {calls[0]} (step {self.state.global_step})", flush=True)
        if oom_at and calls[0] == oom_at:
            import torch

            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (test hook)")
        if seconds:
            time.sleep(seconds)
        return original(self, *args, **kwargs)

    cls.training_step = training_step


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:  # get_source & co., for tracebacks
        return getattr(self.inner, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        _patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Any, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            import importlib.util

            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _Loader(spec.loader)
        return spec


if os.environ.get("FTJOB_TEST_MICROBATCH_SECONDS") or os.environ.get("FTJOB_TEST_OOM_AT_MICROBATCH"):
    sys.meta_path.insert(0, _Finder())
