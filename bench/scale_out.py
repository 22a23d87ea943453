"""Scale-out: the project's trainer on one GPU and on two GPUs of one host (torchrun, one process per GPU),
same random Mistral-7B-v0.3-shaped checkpoint, same chat rows, same effective batch, QLoRA.

    python bench/scale_out.py --out /tmp/scale --results $OUT      # on a machine with 2 GPUs
    python bench/scale_out.py --out /tmp/scale --tiny              # a 2-layer smoke run (gloo on a CPU)

The assets (tokenizer, checkpoint, rows) are bench/train_speed.py's. Each run is `ftjob-train` with a
spec, as in a pod; the two-GPU run is what the operator renders for `resources.gpus: 2`:
`ftjob-train launch --standalone --nnodes=1 --nproc-per-node=2` (torchrun, the trainer in each worker).

- `1-gpu`: micro-batch 4 x accumulation 4 (16 sequences per optimiser step).
- `2-gpu`: micro-batch 4 x accumulation 2 on each of 2 processes (16 sequences per step).

autoTune is off in both, so both run the same micro-batch and the same recomputation (every layer): the
comparison is about the second GPU, not about memory choices. Reported: non-pad tokens/s after the first
optimiser step for the whole run (both GPUs), per GPU, the scaling efficiency (2-GPU rate / (2 x 1-GPU
rate)), peak memory per GPU, and the per-step losses side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train_speed import _project_step, _stream, build_assets, loss_agreement, manifest_figures  # noqa: E402


def spec(
    paths: dict[str, Path], root: Path, name: str, steps: int, gpus: int, accumulation: int
) -> dict[str, Any]:
    return {
        "baseModel": {"uri": str(paths["model"])},
        "data": {"trainUri": f"file://{paths['train']}", "validationUri": f"file://{paths['validation']}"},
        "output": {"uri": f"file://{root / name / 'out'}/"},
        "resources": {"gpus": gpus},
        "training": {
            "maxSteps": steps,
            "loggingSteps": 1,
            "perDeviceBatchSize": 4,
            "gradientAccumulationSteps": accumulation,
            "autoTune": False,
            "gradientCheckpointing": True,
        },
        "checkpointing": {"everySteps": steps},
        "evaluation": {"maxSamples": 1, "maxNewTokens": 4, "compareWithBase": False},
    }


def run(
    paths: dict[str, Path], root: Path, name: str, args: argparse.Namespace, processes: int
) -> dict[str, Any]:
    from ftjob import contract

    accumulation = 4 // processes
    env = dict(os.environ)
    env.update(
        {
            contract.ENV_SPEC: json.dumps(spec(paths, root, name, args.steps, processes, accumulation)),
            contract.ENV_WORKDIR: str(root / name / "work"),
            contract.ENV_TERMINATION_LOG: str(root / name / "termination-log"),
            contract.ENV_NAME: f"bench-{name}",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if processes == 1:
        env["CUDA_VISIBLE_DEVICES"] = "0"
        command = [sys.executable, "-m", "ftjob_trainer.cli"]
    else:
        # What the operator renders for resources.gpus: 2 (render_distributed.launcher_command).
        command = [
            sys.executable,
            "-m",
            "ftjob_trainer.cli",
            "launch",
            "--standalone",
            "--nnodes=1",
            f"--nproc-per-node={processes}",
        ]
    log = root / f"{name}.log"
    code, first = _stream(command, env, log, args.timeout, _project_step)
    result: dict[str, Any] = {"exitCode": code, "timeToFirstStepSeconds": first, "processes": processes}
    manifest_path = root / name / "out" / "manifest.json"
    if code != 0 or not manifest_path.exists():
        result["logTail"] = log.read_text()[-4000:]
        return result
    result.update(manifest_figures(json.loads(manifest_path.read_text()), root / name))
    return result


def table(results: dict[str, Any]) -> str:
    one = results["runs"].get("1-gpu", {})
    two = results["runs"].get("2-gpu", {})
    rows = [
        "| run | processes | non-pad tokens/s (all GPUs) | per GPU | vs 1 GPU | peak GiB per GPU | s/step | first step (s) | tokens trained |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = one.get("nonPadTokensPerSecond")
    for name, r in results["runs"].items():
        rate = r.get("nonPadTokensPerSecond")
        per = round(rate / r["processes"], 1) if rate else None
        ratio = f"{rate / base:.2f}x" if rate and base else "-"
        if r.get("exitCode"):
            rows.append(f"| {name} | {r['processes']} | FAILED (exit {r['exitCode']}) | | | | | | |")
            continue
        rows.append(
            f"| {name} | {r['processes']} | {rate} | {per} | {ratio} | {r.get('peakAllocatedGiB')} | "
            f"{r.get('secondsPerStep')} | {r.get('timeToFirstStepSeconds')} | {r.get('tokensTrained')} |"
        )
    lines = [
        f"Device: {results['device']}; model: {results['model']}; {results['steps']} optimiser steps.",
        "",
    ]
    lines += rows
    if base and two.get("nonPadTokensPerSecond"):
        efficiency = two["nonPadTokensPerSecond"] / (2 * base)
        lines += ["", f"Scaling efficiency: {efficiency:.2f} (2-GPU rate / twice the 1-GPU rate)."]
    lines += ["", f"Loss agreement per optimiser step: {json.dumps(results.get('lossAgreement', {}))}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/scale-out"))
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--timeout", type=float, default=280.0)
    parser.add_argument("--results", type=Path)
    args = parser.parse_args()
    import torch

    root = args.out.resolve()
    root.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        args.layers = 2
    paths = build_assets(root, args)
    results: dict[str, Any] = {
        "device": f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
        if torch.cuda.is_available()
        else "cpu",
        "model": f"random Mistral-7B-v0.3 shape, {args.layers} layers",
        "steps": args.steps,
        "runs": {},
    }
    for name, processes in (("1-gpu", 1), ("2-gpu", 2)):
        started = time.monotonic()
        results["runs"][name] = run(paths, root, name, args, processes)
        print(f"{name}: {time.monotonic() - started:.0f}s", flush=True)
    one, two = results["runs"]["1-gpu"], results["runs"]["2-gpu"]
    results["lossAgreement"] = loss_agreement(one.get("losses", []), two.get("losses", []))
    text = table(results)
    print(text)
    for folder in {root, args.results} - {None}:
        assert folder is not None
        (folder / "results.json").write_text(json.dumps(results, indent=2))
        (folder / "results.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
