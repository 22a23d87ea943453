"""`manifest.json`: what went in, what ran, what came out - enough to reproduce or audit the run."""

from __future__ import annotations

import importlib.metadata
import platform
from typing import Any

from pydantic import Field

from ftjob.api.meta import ApiModel
from ftjob.api.status import Artifacts, Metrics

LIBRARIES = (
    "ftjob",
    "torch",
    "transformers",
    "peft",
    "trl",
    "datasets",
    "accelerate",
    "bitsandbytes",
    "boto3",
    "pydantic",
)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class InputFile(ApiModel):
    uri: str
    sha256: str


class Manifest(ApiModel):
    job: dict[str, str]
    """name, namespace and uid of the FineTuneJob."""
    started_at: str
    finished_at: str
    base_model: dict[str, Any]
    """uri, resolved revision, and sha256 of every model file."""
    data: list[InputFile]
    spec: dict[str, Any]
    """The spec as given, defaults resolved."""
    resolved: dict[str, Any]
    """What actually ran: method (after any fallback), precision, device, steps, warmup, effective batch;
    `speed`: attention implementation, padding-free batches, kernels, optimiser, micro-batch and gradient
    accumulation, gradient checkpointing (`full`, `selective` with the recomputed layers, or `off`) and why,
    packing; `throughput`: non-padding tokens per second after the warm-up steps, time of the first step."""
    seed: int
    resumed_from_step: int | None = None
    output: dict[str, Any] | None = None
    """Who owns the output prefix (the job's uid), the data digest, and what was found there: `new`, `sameRun`
    (an earlier attempt of this job), `overwrote` or `resumedOther` (another run's outputs, per
    spec.output.onExisting), with that run's record and notes on anything deleted or not resumed."""
    tokens_trained: int | None = None
    """Tokens the model was trained on, padding excluded (every micro-batch of every step)."""
    libraries: dict[str, str] = Field(default_factory=library_versions)
    metrics: Metrics
    artifacts: Artifacts
