"""Benchmark-only: profile a few micro-batches of a trainer subprocess. Put this folder on PYTHONPATH and set
FTJOB_BENCH_PROFILE to a folder; micro-batches FTJOB_BENCH_PROFILE_FROM (default 5) to
FTJOB_BENCH_PROFILE_FROM + FTJOB_BENCH_PROFILE_COUNT - 1 (default 2) run under torch.profiler, and the
folder gets `ops.txt` (operators by their own GPU time), `cpu-ops.txt` (by their own CPU time) and `summary.json` (wall time of the profiled micro-batches, GPU-busy time, CPU time).

The trainer knows nothing of this: the hook patches trl's SFTTrainer when the trainer imports it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

_TARGET = "trl.trainer.sft_trainer"


def _patch(module: ModuleType) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    out = Path(os.environ["FTJOB_BENCH_PROFILE"])
    first = int(os.environ.get("FTJOB_BENCH_PROFILE_FROM", "5"))
    count = int(os.environ.get("FTJOB_BENCH_PROFILE_COUNT", "2"))

    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    cls = module.SFTTrainer
    original = cls.training_step
    state: dict[str, Any] = {"calls": 0, "prof": None, "t0": 0.0}

    def training_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        state["calls"] += 1
        n = state["calls"]
        if n == first:
            _sync()
            state["prof"] = profile(
                activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
                with_stack=False,
                record_shapes=False,
            )
            state["prof"].__enter__()
            state["t0"] = time.perf_counter()
        result = original(self, *args, **kwargs)
        if n == first + count - 1 and state["prof"] is not None:
            _sync()
            wall = time.perf_counter() - state["t0"]
            prof = state["prof"]
            prof.__exit__(None, None, None)
            out.mkdir(parents=True, exist_ok=True)
            averages = prof.key_averages()
            (out / "ops.txt").write_text(averages.table(sort_by="self_device_time_total", row_limit=60))
            (out / "cpu-ops.txt").write_text(averages.table(sort_by="self_cpu_time_total", row_limit=40))
            gpu_us = sum(e.self_device_time_total for e in averages)
            summary = {
                "microBatches": count,
                "wallSeconds": round(wall, 3),
                "gpuBusySeconds": round(gpu_us / 1e6, 3),
                "gpuBusyFraction": round(gpu_us / 1e6 / wall, 3) if wall else None,
                "kernelLaunches": sum(e.count for e in averages if e.self_device_time_total > 0),
            }
            (out / "summary.json").write_text(json.dumps(summary, indent=2))
            print(f"BENCH profile: {summary}", flush=True)
            state["prof"] = None
        return result

    cls.training_step = training_step


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
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
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _Loader(spec.loader)
        return spec


if os.environ.get("FTJOB_BENCH_PROFILE"):
    sys.meta_path.insert(0, _Finder())
