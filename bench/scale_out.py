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
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train_speed import _project_step, _stream, build_assets, loss_agreement, manifest_figures  # noqa: E402

RUNS: dict[str, dict[str, Any]] = {
    "1-gpu": {"processes": 1},
    "2-gpu": {"processes": 2, "strategy": "ddp"},
    "2-gpu-fsdp": {"processes": 2, "strategy": "fsdp"},
    # autoTune on, the spec's strategy left to the trainer, and a memory limit under what a replicated
    # 4-bit 7B needs at the least: the trainer must pick FSDP by itself.
    "2-gpu-auto-capped": {"processes": 2, "strategy": "auto", "autoTune": True, "limitGiB": 4.5},
    # Starts from 2-gpu-fsdp's checkpoint at half the steps (a copy of its checkpoints under a new output
    # prefix, onExisting: Resume): its losses after the checkpoint must be the uninterrupted run's.
    "2-gpu-fsdp-resumed": {"processes": 2, "strategy": "fsdp", "resumeFrom": "2-gpu-fsdp"},
}


def spec(
    paths: dict[str, Path],
    root: Path,
    name: str,
    steps: int,
    gpus: int,
    accumulation: int,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    options = options or {}
    training: dict[str, Any] = {
        "maxSteps": steps,
        "loggingSteps": 1,
        "perDeviceBatchSize": 4,
        "gradientAccumulationSteps": accumulation,
        "autoTune": bool(options.get("autoTune", False)),
        "gradientCheckpointing": True,
    }
    if options.get("limitGiB"):
        training["gpuMemoryLimitGib"] = options["limitGiB"]
    resources: dict[str, Any] = {"gpus": gpus}
    output: dict[str, Any] = {"uri": f"file://{root / name / 'out'}/"}
    if options.get("resumeFrom"):
        output["onExisting"] = "Resume"
    if options.get("strategy") and gpus > 1:
        resources["distributedStrategy"] = options["strategy"]
    return {
        "baseModel": {"uri": str(paths["model"])},
        "data": {"trainUri": f"file://{paths['train']}", "validationUri": f"file://{paths['validation']}"},
        "output": output,
        "resources": resources,
        "training": training,
        "checkpointing": {"everySteps": max(1, steps // 2)},
        "evaluation": {"maxSamples": 1, "maxNewTokens": 4, "compareWithBase": False},
    }


def run(paths: dict[str, Path], root: Path, name: str, args: argparse.Namespace) -> dict[str, Any]:
    from ftjob import contract

    options = RUNS[name]
    processes = int(options["processes"])
    if options.get("resumeFrom"):
        copy_checkpoints(root / options["resumeFrom"] / "out", root / name / "out", args.steps // 2)
    accumulation = 4 // processes
    env = dict(os.environ)
    env.update(
        {
            contract.ENV_SPEC: json.dumps(
                spec(paths, root, name, args.steps, processes, accumulation, options)
            ),
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
    manifest = json.loads(manifest_path.read_text())
    result.update(manifest_figures(manifest, root / name))
    distributed = manifest.get("resolved", {}).get("distributed") or {}
    result["strategy"] = distributed.get("strategy", "single")
    result["strategyReason"] = distributed.get("strategyReason")
    return result


def copy_checkpoints(source: Path, target: Path, upto: int) -> None:
    """The source run's owner record and checkpoints up to step `upto`, as a preempted run leaves them."""
    if target.exists():
        shutil.rmtree(target)
    (target / "checkpoints").mkdir(parents=True)
    shutil.copy(source / "run.json", target / "run.json")
    for entry in (source / "checkpoints").iterdir():
        step = entry.name.removeprefix("checkpoint-")
        if step.isdigit() and int(step) > upto:
            continue
        copy = shutil.copytree if entry.is_dir() else shutil.copy
        copy(entry, target / "checkpoints" / entry.name)


def resume_agreement(results: dict[str, Any], steps: int) -> dict[str, Any]:
    """Losses of the resumed run after its checkpoint against the uninterrupted run's at the same steps."""
    out: dict[str, Any] = {}
    for name, options in RUNS.items():
        source = options.get("resumeFrom")
        if name in results["runs"] and source in results["runs"]:
            after = steps // 2
            out[f"{source} vs {name}, steps {after + 1}-{steps}"] = loss_agreement(
                results["runs"][source].get("losses", [])[after:],
                results["runs"][name].get("losses", [])[after:],
            )
    return out


def table(results: dict[str, Any]) -> str:
    one = results["runs"].get("1-gpu", {})
    two = results["runs"].get("2-gpu", {})
    rows = [
        "| run | processes | strategy | non-pad tokens/s (all GPUs) | per GPU | vs first run | peak GiB per GPU | s/step | first step (s) | tokens trained |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    first = next(iter(results["runs"].values()), {})
    base = first.get("nonPadTokensPerSecond")
    for name, r in results["runs"].items():
        rate = r.get("nonPadTokensPerSecond")
        per = round(rate / r["processes"], 1) if rate else None
        ratio = f"{rate / base:.2f}x" if rate and base else "-"
        if r.get("exitCode"):
            rows.append(f"| {name} | {r['processes']} | | FAILED (exit {r['exitCode']}) | | | | | | |")
            continue
        rows.append(
            f"| {name} | {r['processes']} | {r.get('strategy')} | {rate} | {per} | {ratio} | "
            f"{r.get('peakAllocatedGiB')} | "
            f"{r.get('secondsPerStep')} | {r.get('timeToFirstStepSeconds')} | {r.get('tokensTrained')} |"
        )
    lines = [
        f"Device: {results['device']}; model: {results['model']}; {results['steps']} optimiser steps.",
        "",
    ]
    lines += rows
    if one.get("nonPadTokensPerSecond") and two.get("nonPadTokensPerSecond"):
        efficiency = two["nonPadTokensPerSecond"] / (2 * one["nonPadTokensPerSecond"])
        lines += ["", f"Scaling efficiency: {efficiency:.2f} (2-GPU rate / twice the 1-GPU rate)."]
    for name, r in results["runs"].items():
        if r.get("strategyReason"):
            lines += ["", f"{name}: strategy {r['strategy']}: {r['strategyReason']}"]
    for pair, agreement in results.get("lossAgreement", {}).items():
        lines += ["", f"Loss agreement per optimiser step, {pair}: {json.dumps(agreement)}"]
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], first_name: str, args: argparse.Namespace, root: Path) -> str:
    first_run = results["runs"][first_name]
    results["lossAgreement"] = {
        f"{first_name} vs {name}": loss_agreement(first_run.get("losses", []), r.get("losses", []))
        for name, r in results["runs"].items()
        if name != first_name
    }
    results["lossAgreement"].update(resume_agreement(results, args.steps))
    text = table(results)
    for folder in {root, args.results} - {None}:
        assert folder is not None
        (folder / "results.json").write_text(json.dumps(results, indent=2))
        (folder / "results.md").write_text(text)
    return text


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
    parser.add_argument("--keep-going", action="store_true", help="run the rest after a failed run")
    parser.add_argument(
        "--runs", default="1-gpu,2-gpu", help=f"comma-separated, in order, of: {', '.join(RUNS)}"
    )
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
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    if not names:
        parser.error("--runs names no run")
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown runs {unknown}; known: {list(RUNS)}")
    for name in names:
        started = time.monotonic()
        results["runs"][name] = run(paths, root, name, args)
        print(f"{name}: {time.monotonic() - started:.0f}s", flush=True)
        # After every run: a command cut short by the device's time limit keeps the runs that finished.
        text = write_results(results, names[0], args, root)
        if results["runs"][name].get("exitCode") and not args.keep_going:
            print(f"{name} failed: the remaining runs are skipped (--keep-going runs them)", flush=True)
            break
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
