"""Where results and checkpoints go."""

from __future__ import annotations

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


class CheckpointingSpec(ApiModel):
    """Checkpoints go to `<output>/checkpoints/`; a restarted pod resumes from the latest one."""

    every_steps: int = Field(default=100, ge=1, le=10_000_000)
    """Optimiser steps between checkpoints."""
    keep_last: int = Field(default=2, ge=1, le=100)
    """Checkpoints kept in the output location; older ones are deleted."""
    resume: bool = True
    """Resume from the latest checkpoint of this job found in the output location."""
