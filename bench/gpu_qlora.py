"""GPU benchmark: QLoRA (and LoRA for comparison) on SmolLM2-135M-Instruct with the demo dataset, through
the real trainer (`python -m ftjob_trainer.cli`, file:// storage). Writes a JSON summary: throughput,
peak GPU memory, the loss curve's ends, and base-vs-tuned metrics.

    FTJOB_SMOLLM2_GGUF=/path/SmolLM2-135M-Instruct.Q4_1.gguf python bench/gpu_qlora.py --out results/

Results of the runs quoted in the README were produced on the lent H100 (see docs/gpu.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ftjob import contract
from ftjob_cli.demo.models import smollm2_dir
from ftjob_cli.demo.orders import write_dataset


def spec_for(method: str, root: Path, model: Path, steps: int, batch: int) -> dict[str, Any]:
    return {
        "baseModel": {"uri": str(model)},
        "data": {"trainUri": f"file://{root}/data/orders.jsonl", "cleaning": {"outputFormat": "json"}},
        "output": {"uri": f"file://{root}/{method}/out/"},
        "peft": {"method": method, "r": 16, "alpha": 32},
        "training": {
            "maxSteps": steps,
            "learningRate": 0.0005,
            "perDeviceBatchSize": batch,
            "gradientAccumulationSteps": 1,
            "maxSeqLength": 256,
            "loggingSteps": 5,
            "gradientCheckpointing": True,
        },
        "checkpointing": {"everySteps": max(1, steps // 2)},
        "evaluation": {"maxSamples": 64, "maxNewTokens": 64},
    }


def run(method: str, root: Path, model: Path, steps: int, batch: int) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(
        {
            contract.ENV_SPEC: json.dumps(spec_for(method, root, model, steps, batch)),
            contract.ENV_WORKDIR: str(root / method / "work"),
            contract.ENV_TERMINATION_LOG: str(root / method / "termination-log"),
            contract.ENV_NAME: f"bench-{method}",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "ftjob_trainer.cli"], env=env, capture_output=True, text=True, check=False
    )
    wall = time.monotonic() - started
    (root / f"{method}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        return {"method": method, "exitCode": proc.returncode, "logTail": (proc.stdout + proc.stderr)[-4000:]}
    out = root / method / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    evaluation = json.loads((out / "eval" / "eval.json").read_text())
    losses = [p["trainLoss"] for p in evaluation["history"] if p.get("trainLoss") is not None]
    progress = [
        json.loads(line.split(contract.PROGRESS_PREFIX, 1)[1])
        for line in proc.stdout.splitlines()
        if contract.PROGRESS_PREFIX in line
    ]
    rates = [p["tokensPerSecond"] for p in progress if p.get("tokensPerSecond")]
    return {
        "method": method,
        "exitCode": 0,
        "wallSeconds": round(wall, 1),
        "resolved": manifest["resolved"],
        "tokensTrained": manifest["tokensTrained"],
        "tokensPerSecond": round(rates[-1], 1) if rates else None,
        "trainLossFirst": losses[0] if losses else None,
        "trainLossLast": losses[-1] if losses else None,
        "evalLoss": evaluation["evalLoss"],
        "baseEvalLoss": evaluation["baseEvalLoss"],
        "tuned": evaluation["tuned"],
        "base": evaluation["base"],
        "adapterFiles": sorted(p.name for p in (out / "adapter").iterdir()),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--methods", default="qlora,lora")
    args = parser.parse_args()
    root = args.out.resolve()
    root.mkdir(parents=True, exist_ok=True)
    model = smollm2_dir(root / "models")
    write_dataset(root / "data" / "orders.jsonl", count=1200)
    results = [run(m, root, model, args.steps, args.batch) for m in args.methods.split(",")]
    summary = {"device": _device(), "steps": args.steps, "batch": args.batch, "runs": results}
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0 if all(r["exitCode"] == 0 for r in results) else 1


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    sys.exit(main())
