"""The evaluation gate: what the tuned model must reach for the run to count as a success.

Without it, a run that trained but learned nothing still ends `Succeeded`, and automation that retrains on a
schedule (GitOps) would promote whatever came out. With it, a run that misses the gate ends `Failed` with
reason `EvaluationGateNotMet`, its adapter is written under `rejected/` instead of `adapter/`, and the status
shows the tuned and base numbers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from .meta import ApiModel

GateMetric = Literal["evalLoss", "exactMatch", "tokenF1", "rougeL", "jsonValid"]


class EvaluationGate(ApiModel):
    """Set `minImprovement`, `threshold` or both; the run must meet every one that is set."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.minImprovement) || has(self.threshold)",
                    "message": "set minImprovement, threshold or both",
                }
            ]
        }
    )

    metric: GateMetric
    """`evalLoss` (validation loss, lower is better) or one of `spec.evaluation.metrics` (higher is better)."""
    min_improvement: float | None = Field(default=None, ge=0, le=1_000_000)
    """The tuned model must beat the base model by at least this much, in the metric's better direction (a
    score: tuned - base; evalLoss: base - tuned). 0 means "at least as good as the base model"."""
    threshold: float | None = Field(default=None, ge=0, le=1_000_000)
    """An absolute bar: a score at least this high, or an evalLoss at most this high."""

    @model_validator(mode="after")
    def _one_bar_at_least(self) -> EvaluationGate:
        if self.min_improvement is None and self.threshold is None:
            raise ValueError("set minImprovement, threshold or both")
        return self

    @property
    def lower_is_better(self) -> bool:
        return self.metric == "evalLoss"
