"""Evaluation against the base model. It always runs; these settings only shape it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .gate import EvaluationGate
from .meta import ApiModel

Metric = Literal["exactMatch", "tokenF1", "rougeL", "jsonValid"]


class EvaluationSpec(ApiModel):
    """Held-out loss and perplexity are always computed; these settings shape the generation metrics."""

    metrics: list[Metric] = Field(
        default=["exactMatch", "tokenF1", "rougeL", "jsonValid"],
        min_length=1,
        max_length=8,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """Task metrics computed on generated answers: `exactMatch`, `tokenF1`, `rougeL`, `jsonValid`."""
    compare_with_base: bool = True
    """Also generate with the base model (adapter disabled) and report both side by side."""
    max_samples: int = Field(default=50, ge=1, le=100000)
    """Validation examples used for the generation metrics."""
    max_new_tokens: int | None = Field(default=None, ge=1, le=32768)
    """Generation limit per answer. Unset: derived from the evaluated references (the longest reference answer
    in tokens, plus a quarter and 16 tokens), so a base model that rambles stops soon after any right answer
    would have ended. Answers cut by the limit are counted and reported as truncated."""
    gate: EvaluationGate | None = None
    """What the tuned model must reach; a run that misses it fails with `EvaluationGateNotMet` (see gate.py)."""
