"""Benchmark-only: run the trainer (`ftjob_trainer.cli`) with a few micro-batches under torch.profiler.

    FTJOB_BENCH_PROFILE=DIR python bench/profiled_trainer.py      # instead of python -m ftjob_trainer.cli

Micro-batches FTJOB_BENCH_PROFILE_FROM (default 5) to FROM + FTJOB_BENCH_PROFILE_COUNT - 1 (default 2) are
profiled; DIR gets `ops.txt` (operators by their own GPU time), `cpu-ops.txt` (by their own CPU time) and
`ops-by-shape.txt` (the same, split by input shapes) and
`summary.json` (wall time of the profiled micro-batches against the time the GPU was busy); on a GPU,
`syncs.txt` lists where the micro-batch before them made the host wait for the GPU (torch's sync debug
mode, each call's Python stack). The trainer has
no profiling code: this wraps trl's SFTTrainer.training_step before the trainer starts.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class SyncRecorder:
    """Where the host waits for the GPU: torch's sync debug mode warns at every synchronising call; each
    warning's Python stack is counted, and the stacks go to `syncs.txt` (most frequent first)."""

    def __init__(self) -> None:
        self.stacks: collections.Counter[str] = collections.Counter()
        self._previous: Any = None

    def __enter__(self) -> SyncRecorder:
        import torch

        self._previous = warnings.showwarning
        warnings.simplefilter("always")

        def record(message: Any, category: Any, filename: str, lineno: int, *args: Any) -> None:
            if "synchroniz" not in str(message):
                return
            frames = [f for f in traceback.extract_stack()[:-2] if "warnings.py" not in f.filename]
            stack = "".join(traceback.format_list(frames[-12:]))
            self.stacks[f"{message}\n{stack}"] += 1

        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        torch.cuda.set_sync_debug_mode("default")
        warnings.showwarning = self._previous

    def write(self, path: Path) -> None:
        blocks = [f"=== {n} times\n{stack}" for stack, n in self.stacks.most_common()]
        path.write_text(f"{sum(self.stacks.values())} synchronising calls\n\n" + "\n".join(blocks))


def install(out: Path, first: int, count: int) -> None:
    from torch.profiler import ProfilerActivity, profile
    from trl.trainer.sft_trainer import SFTTrainer

    original = SFTTrainer.training_step
    state: dict[str, Any] = {"calls": 0, "prof": None, "t0": 0.0}
    syncs = SyncRecorder()

    def training_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        state["calls"] += 1
        n = state["calls"]
        if n == first - 1 and _cuda():
            # The micro-batch before the profiled ones: where the host waits for the GPU, without the
            # profiler's own overhead.
            syncs.__enter__()
        if n == first:
            if _cuda():
                syncs.__exit__()
                out.mkdir(parents=True, exist_ok=True)
                syncs.write(out / "syncs.txt")
            _sync()
            state["prof"] = profile(
                activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True
            )
            state["prof"].__enter__()
            state["t0"] = time.perf_counter()
        result = original(self, *args, **kwargs)  # type: ignore[no-untyped-call]
        if n == first + count - 1 and state["prof"] is not None:
            _sync()
            wall = time.perf_counter() - state["t0"]
            prof, state["prof"] = state["prof"], None
            prof.__exit__(None, None, None)
            write(out, prof.key_averages(), wall, count)
            shapes = prof.key_averages(group_by_input_shape=True)
            (out / "ops-by-shape.txt").write_text(
                shapes.table(sort_by="self_device_time_total", row_limit=50, max_name_column_width=40)
            )
        return result

    SFTTrainer.training_step = training_step  # type: ignore[method-assign]


def write(out: Path, averages: Any, wall: float, count: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "ops.txt").write_text(averages.table(sort_by="self_device_time_total", row_limit=60))
    (out / "cpu-ops.txt").write_text(averages.table(sort_by="self_cpu_time_total", row_limit=40))
    gpu_seconds = sum(e.self_device_time_total for e in averages) / 1e6
    summary = {
        "microBatches": count,
        "wallSeconds": round(wall, 3),
        "gpuBusySeconds": round(gpu_seconds, 3),
        "gpuBusyFraction": round(gpu_seconds / wall, 3) if wall else None,
        "kernelLaunches": sum(e.count for e in averages if e.self_device_time_total > 0),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"BENCH profile: {summary}", flush=True)


if __name__ == "__main__":
    install(
        Path(os.environ["FTJOB_BENCH_PROFILE"]),
        int(os.environ.get("FTJOB_BENCH_PROFILE_FROM", "5")),
        int(os.environ.get("FTJOB_BENCH_PROFILE_COUNT", "2")),
    )
    from ftjob_trainer.cli import main

    sys.exit(main())
