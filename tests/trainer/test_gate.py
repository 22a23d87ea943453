"""The evaluation gate's verdict (pure): lower-is-better evalLoss, higher-is-better scores, both bars."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ftjob.api import FineTuneJobSpec
from ftjob.api.gate import EvaluationGate
from ftjob_trainer.evaluation.report import EvalResults
from ftjob_trainer.gate import judge

RESULTS = EvalResults(
    samples=10,
    validation_examples=10,
    eval_loss=0.40,
    base_eval_loss=0.60,
    tuned={"exactMatch": 0.70, "jsonValid": 0.95},
    base={"exactMatch": 0.10, "jsonValid": 0.97},
)


@pytest.mark.parametrize(
    ("gate", "passed", "says"),
    [
        (
            {"metric": "evalLoss", "minImprovement": 0.1},
            True,
            "evaluation gate met: evalLoss 0.4000 (base 0.6000)",
        ),
        ({"metric": "evalLoss", "minImprovement": 0.25}, False, "by 0.2, less than minImprovement 0.25"),
        ({"metric": "evalLoss", "threshold": 0.5}, True, "met"),
        ({"metric": "evalLoss", "threshold": 0.3}, False, "is above the threshold 0.3"),
        ({"metric": "exactMatch", "minImprovement": 0.5}, True, "exactMatch 0.7000 (base 0.1000)"),
        ({"metric": "exactMatch", "threshold": 0.8}, False, "is below the threshold 0.8"),
        # Worse than the base model: a minImprovement of 0 still fails it.
        ({"metric": "jsonValid", "minImprovement": 0}, False, "less than minImprovement 0"),
        (
            {"metric": "exactMatch", "minImprovement": 0.7, "threshold": 0.9},
            False,
            "is below the threshold 0.9 and improves on the base model by 0.6",
        ),
        ({"metric": "rougeL", "threshold": 0.1}, False, "rougeL was not measured"),
    ],
)
def test_judge(gate: dict[str, Any], passed: bool, says: str) -> None:
    verdict = judge(EvaluationGate.model_validate(gate), RESULTS)
    assert verdict.passed is passed
    assert says in verdict.message


def test_a_gate_needs_a_bar() -> None:
    with pytest.raises(ValidationError, match="set minImprovement, threshold or both"):
        EvaluationGate.model_validate({"metric": "evalLoss"})


def spec(evaluation: dict[str, Any]) -> dict[str, Any]:
    return {
        "baseModel": {"uri": "hf://org/model@main"},
        "data": {"trainUri": "s3://bucket/train.jsonl"},
        "output": {"uri": "s3://bucket/out/"},
        "evaluation": evaluation,
    }


@pytest.mark.parametrize(
    ("evaluation", "error"),
    [
        (
            {"metrics": ["exactMatch"], "gate": {"metric": "rougeL", "threshold": 0.5}},
            "evaluation.gate.metric: must be evalLoss or one of evaluation.metrics",
        ),
        (
            {"compareWithBase": False, "gate": {"metric": "tokenF1", "minImprovement": 0.1}},
            "evaluation.gate.minImprovement: needs evaluation.compareWithBase",
        ),
    ],
)
def test_gate_cross_field_rules(evaluation: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error.replace(".", r"\.")):
        FineTuneJobSpec.model_validate(spec(evaluation))
    # evalLoss always has a base value to improve on: the base model's validation loss.
    FineTuneJobSpec.model_validate(
        spec({"compareWithBase": False, "gate": {"metric": "evalLoss", "minImprovement": 0}})
    )
