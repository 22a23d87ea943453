"""Whether the tuned model meets `spec.evaluation.gate` (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from ftjob.api.gate import EvaluationGate

from .evaluation.report import EvalResults


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    metric: str
    tuned: float | None
    base: float | None
    message: str

    def to_manifest(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "metric": self.metric,
            "tuned": self.tuned,
            "base": self.base,
            "message": self.message,
        }


def judge(gate: EvaluationGate, results: EvalResults) -> GateVerdict:
    if gate.metric == "evalLoss":
        tuned, base = results.eval_loss, results.base_eval_loss
    else:
        tuned, base = results.tuned.get(gate.metric), results.base.get(gate.metric)
    shown = f"{gate.metric} {_fmt(tuned)} (base {_fmt(base)})"
    if tuned is None:
        return GateVerdict(
            False, gate.metric, tuned, base, f"evaluation gate not met: {gate.metric} was not measured"
        )
    misses: list[str] = []
    if gate.threshold is not None:
        if gate.lower_is_better and tuned > gate.threshold:
            misses.append(f"is above the threshold {gate.threshold:g}")
        if not gate.lower_is_better and tuned < gate.threshold:
            misses.append(f"is below the threshold {gate.threshold:g}")
    if gate.min_improvement is not None:
        if base is None:
            misses.append("has no base-model value to improve on")
        else:
            gain = base - tuned if gate.lower_is_better else tuned - base
            if gain < gate.min_improvement:
                misses.append(
                    f"improves on the base model by {gain:.4g}, less than minImprovement {gate.min_improvement:g}"
                )
    if misses:
        return GateVerdict(
            False, gate.metric, tuned, base, f"evaluation gate not met: {shown} " + " and ".join(misses)
        )
    return GateVerdict(True, gate.metric, tuned, base, f"evaluation gate met: {shown}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
