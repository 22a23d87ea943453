"""Real QLoRA on a CUDA GPU (skipped without one; CI has none). Runs the trainer on SmolLM2-135M-Instruct
with 4-bit nf4 weights and checks that QLoRA really ran, the loss went down and the tuned model beats the
base model on the task. Run on the lent GPU with: pytest -m gpu --noconftest tests/trainer/test_gpu_qlora.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftjob import contract
from ftjob_cli.demo.orders import write_dataset

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_qlora_trains_in_4bit_and_beats_the_base_model(tmp_path: Path) -> None:
    from ftjob_cli.demo.models import smollm2_dir

    model = smollm2_dir()  # $FTJOB_TEST_CACHE or ~/.cache/ftjob-tests
    write_dataset(tmp_path / "orders.jsonl", count=400)
    spec = {
        "baseModel": {"uri": str(model)},
        "data": {"trainUri": f"file://{tmp_path}/orders.jsonl", "cleaning": {"outputFormat": "json"}},
        "output": {"uri": f"file://{tmp_path}/out/"},
        "training": {
            "maxSteps": 40,
            "learningRate": 0.0005,
            "perDeviceBatchSize": 8,
            "gradientAccumulationSteps": 1,
            "loggingSteps": 5,
        },
        "evaluation": {"maxSamples": 32, "maxNewTokens": 64},
    }
    env = {
        **os.environ,
        contract.ENV_SPEC: json.dumps(spec),
        contract.ENV_WORKDIR: str(tmp_path / "work"),
        contract.ENV_TERMINATION_LOG: str(tmp_path / "termination-log"),
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "ftjob_trainer.cli"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["resolved"]["method"] == "qlora"
    assert manifest["resolved"]["precision"] in ("bfloat16", "float16")
    assert manifest["resolved"]["peakGpuMemoryGiB"] > 0
    evaluation = json.loads((tmp_path / "out" / "eval" / "eval.json").read_text())
    losses = [p["trainLoss"] for p in evaluation["history"] if p.get("trainLoss") is not None]
    assert losses[-1] < losses[0]
    assert evaluation["evalLoss"] < evaluation["baseEvalLoss"]
    assert evaluation["tuned"]["exactMatch"] > evaluation["base"]["exactMatch"]
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").stat().st_size > 0
