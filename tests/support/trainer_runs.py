"""Run `ftjob-train` as the pod would: a separate process configured only by its environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftjob import contract
from ftjob.contract import TerminationSummary, parse_latest_progress

TRAINER = [sys.executable, "-m", "ftjob_trainer.cli"]


def torchrun(processes: int = 2) -> list[str]:
    """The trainer as several processes on this machine: `ftjob-train launch` (torchrun, with the trainer's
    exit code), gloo on a CPU."""
    return [*TRAINER, "launch", "--standalone", f"--nproc-per-node={processes}"]


HOOKS = Path(__file__).parent / "trainer_hooks"


def with_hooks(env: dict[str, str], **variables: str) -> dict[str, str]:
    """`env` with the test-only trainer hooks (trainer_hooks/sitecustomize.py) on and configured."""
    path = os.pathsep.join(p for p in (str(HOOKS), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path, **variables}


def small_spec(bucket: str, endpoint: str, **overrides: Any) -> dict[str, Any]:
    """A spec that trains the tiny model for a few steps: seconds on a CPU."""
    spec: dict[str, Any] = {
        "baseModel": {"uri": f"s3://{bucket}/models/tiny/"},
        "data": {"trainUri": f"s3://{bucket}/data/orders.jsonl", "cleaning": {"outputFormat": "json"}},
        "output": {"uri": f"s3://{bucket}/runs/job/"},
        "storage": {"endpointUrl": endpoint, "region": "us-east-1", "pathStyle": True},
        "peft": {"r": 4, "alpha": 8},
        "training": {
            "maxSteps": 6,
            "perDeviceBatchSize": 4,
            "gradientAccumulationSteps": 1,
            "maxSeqLength": 128,
            "loggingSteps": 2,
        },
        "checkpointing": {"everySteps": 3},
        "evaluation": {"maxSamples": 4, "maxNewTokens": 12},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


@dataclass
class TrainerResult:
    code: int
    log: str
    summary: TerminationSummary | None
    termination_text: str = field(repr=False, default="")
    stop_seconds: float | None = None
    """run_trainer_until: seconds from SIGTERM to the trainer's exit (its checkpoint is uploaded by then)."""

    def progress_stages(self) -> list[str]:
        stages: list[str] = []
        for line in self.log.splitlines():
            record = parse_latest_progress(line)
            if record is not None:
                stages.append(record.stage)
        return stages


def trainer_env(spec: dict[str, Any], workdir: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FTJOB_"))}
    env.update(extra)
    env.update(
        {
            contract.ENV_SPEC: json.dumps(spec),
            contract.ENV_NAME: "job",
            contract.ENV_NAMESPACE: "tests",
            contract.ENV_UID: "0000-test",
            contract.ENV_WORKDIR: str(workdir / "work"),
            contract.ENV_TERMINATION_LOG: str(workdir / "termination-log"),
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def run_trainer(
    env: dict[str, str],
    workdir: Path,
    timeout: float = 600,
    args: tuple[str, ...] = (),
    command: Sequence[str] = TRAINER,
) -> TrainerResult:
    proc = subprocess.run(
        [*command, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=workdir
    )
    return _result(proc.returncode, proc.stdout + proc.stderr, Path(env[contract.ENV_TERMINATION_LOG]))


def run_trainer_until(
    env: dict[str, str],
    workdir: Path,
    marker: str,
    timeout: float = 600,
    command: Sequence[str] = TRAINER,
) -> TrainerResult:
    """Start the trainer, send SIGTERM once `marker` appears in its output, and wait for it to exit."""
    log_path = workdir / "trainer.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(list(command), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        deadline = time.monotonic() + timeout
        while marker not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"{marker!r} never appeared:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = proc.wait(timeout=timeout)
        stop_seconds = time.monotonic() - sent
    result = _result(code, log_path.read_text(), Path(env[contract.ENV_TERMINATION_LOG]))
    result.stop_seconds = stop_seconds
    return result


def _result(code: int, log: str, termination_log: Path) -> TrainerResult:
    text = termination_log.read_text() if termination_log.exists() else ""
    return TrainerResult(code=code, log=log, summary=TerminationSummary.parse(text), termination_text=text)
