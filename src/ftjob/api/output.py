"""Where results and checkpoints go."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .meta import ApiModel
from .uris import OutputUri


class OutputSpec(ApiModel):
    """Everything the job produces lands under one prefix: `adapter/`, `eval/`, `data-report.json`,
    `manifest.json` and `checkpoints/`."""

    uri: OutputUri
    """Output prefix, `s3://bucket/prefix/`; `file:///path/` only with `ftjob local` (the operator refuses it:
    a trainer pod has only temporary volumes)."""
    merge_adapter: bool = False
    """Also save the base model with the adapter merged in (`merged/`), ready for serving."""
    on_existing: Literal["Refuse", "Overwrite", "Resume"] = "Refuse"
    """What to do when the prefix holds the outputs (checkpoints, adapter, evaluation, manifest) of another run,
    i.e. another FineTuneJob uid, as recorded in `<output>/run.json`. `Refuse`: fail with `OutputPrefixInUse`
    before any training, naming that run. `Overwrite`: delete that run's outputs under the prefix (and nothing
    else there) and train from scratch. `Resume`: continue from that run's newest checkpoint, which must have
    been made for the same training configuration and data. A retry of this same job (same uid) always
    resumes its own checkpoints, whatever this says."""


class CheckpointingSpec(ApiModel):
    """Checkpoints go to `<output>/checkpoints/`; a restarted pod resumes from the latest one."""

    every_steps: int = Field(default=100, ge=1, le=10_000_000)
    """Optimiser steps between checkpoints."""
    keep_last: int = Field(default=2, ge=1, le=100)
    """Checkpoints kept in the output location; older ones are deleted."""
    resume: bool = True
    """Resume from the latest checkpoint of this job found in the output location."""
    termination_grace_period_seconds: int | None = Field(default=None, ge=30, le=3600)
    """Seconds between SIGTERM (suspend, preemption, node drain) and SIGKILL of the trainer pod: the trainer
    stops after the current micro-batch, then saves and uploads a checkpoint in this time. Unset: the
    operator's `--termination-grace-period` (120 s by default). Raise it for adapters or optimiser states
    that take longer to upload, or micro-batches that take longer to finish."""
