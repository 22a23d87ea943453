"""Progress records from the trainer log -> status.progress (percent, ETA, loss)."""

from __future__ import annotations

from typing import Any

import pytest

from ftjob.contract import ProgressRecord, format_progress_line, parse_latest_progress
from ftjob_operator.progress import estimate_eta, finished_progress, percent, progress_status

from .factories import ts


def rec(step: int, total: int = 200, at: float = 0, **extra: Any) -> ProgressRecord:
    return ProgressRecord(
        stage=extra.pop("stage", "training"), step=step, total_steps=total, time=ts(at), **extra
    )


@pytest.mark.parametrize(
    ("step", "total", "expected"),
    [
        pytest.param(0, 200, 0, id="start"),
        pytest.param(1, 3, 33, id="rounds-down"),
        pytest.param(199, 200, 99, id="never-100-before-the-end"),
        pytest.param(200, 200, 100, id="done"),
        pytest.param(250, 200, 100, id="capped"),
        pytest.param(5, 0, 0, id="unknown-total"),
    ],
)
def test_percent(step: int, total: int, expected: int) -> None:
    assert percent(step, total) == expected


@pytest.mark.parametrize(
    ("record", "previous", "expected"),
    [
        pytest.param(rec(10, eta_seconds=321), None, 321, id="trainer-estimate-wins"),
        pytest.param(
            rec(100, at=100), {"step": 50, "updatedAt": ts(0)}, 200, id="rate-since-previous-record"
        ),
        pytest.param(rec(100, at=100), None, None, id="no-history-no-estimate"),
        pytest.param(rec(50, at=100), {"step": 50, "updatedAt": ts(0)}, None, id="no-progress-no-estimate"),
        pytest.param(rec(100, total=0, at=100), {"step": 50, "updatedAt": ts(0)}, None, id="unknown-total"),
        pytest.param(rec(100, at=0), {"step": 50, "updatedAt": ts(0)}, None, id="same-instant"),
    ],
)
def test_eta(record: ProgressRecord, previous: dict[str, Any] | None, expected: int | None) -> None:
    assert estimate_eta(record, previous) == expected


def test_progress_keeps_the_last_known_loss_and_ignores_a_repeated_record() -> None:
    first = progress_status(rec(40, at=10, loss=1.5), None)
    evaluating = progress_status(rec(40, at=20, stage="evaluating"), first)
    assert (evaluating["loss"], evaluating["stage"], evaluating["percent"]) == (1.5, "evaluating", 20)
    assert progress_status(rec(40, at=20, stage="evaluating"), evaluating) is evaluating


def test_progress_round_trips_through_the_log_line() -> None:
    log = "\n".join(
        [
            "loading model...",
            format_progress_line(rec(10, at=1, loss=2.0)),
            "FTJOB_PROGRESS {broken json",
            format_progress_line(rec(20, at=2, loss=1.8, eta_seconds=90)),
            "step 21 done",
        ]
    )
    latest = parse_latest_progress(log)
    assert latest is not None
    assert progress_status(latest, None) == {
        "step": 20,
        "totalSteps": 200,
        "epoch": 0.0,
        "percent": 10,
        "stage": "training",
        "updatedAt": ts(2),
        "etaSeconds": 90,
        "loss": 1.8,
    }


def test_finished_progress() -> None:
    assert finished_progress(
        {"step": 190, "totalSteps": 200, "percent": 95, "etaSeconds": 30, "loss": 0.7}
    ) == {
        "step": 200,
        "totalSteps": 200,
        "percent": 100,
        "etaSeconds": 0,
        "loss": 0.7,
        "stage": "done",
    }


def test_records_and_summaries_of_a_newer_trainer_are_read() -> None:
    # A trainer image newer than the operator (pinned through spec.image) adds fields: before, the whole
    # progress record (and the whole termination summary, metrics and artifacts) was dropped.
    from ftjob.contract import TerminationSummary

    line = format_progress_line(rec(5, 10)).rstrip("}") + ', "gpuUtilisation": 0.93}'
    parsed = parse_latest_progress(line + "\n")
    assert parsed is not None and parsed.step == 5
    summary = TerminationSummary.parse(
        '{"outcome": "Succeeded", "reason": "TrainingSucceeded", "message": "done", "carbonGrams": 12,'
        ' "metrics": {"evalLoss": 0.5, "newMetric": 1}}'
    )
    assert summary is not None and summary.metrics is not None and summary.metrics.eval_loss == 0.5
