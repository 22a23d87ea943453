"""derive_events: which status transitions produce which Event; event_body: the Event object."""

from __future__ import annotations

from typing import Any

import pytest

from ftjob_operator.events import Event, derive_events, event_body

from . import factories as f


def status(*conditions: tuple[str, str, str], **fields: Any) -> dict[str, Any]:
    return {
        "conditions": [
            {"type": t, "status": s, "reason": r, "message": f"{t} {r}"} for t, s, r in conditions
        ],
        **fields,
    }


VALID = ("Validated", "True", "SpecValid")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            None,
            status(("Validated", "False", "InvalidSpec"), ("Failed", "True", "InvalidSpec")),
            [("Warning", "SpecInvalid")],
            id="invalid-spec-once-not-twice",
        ),
        pytest.param(
            status(VALID, ("Running", "False", "PodPending")),
            status(VALID, ("Running", "True", "Training"), attempts=1),
            [("Normal", "TrainingStarted")],
            id="training-started",
        ),
        pytest.param(
            status(VALID, ("Running", "True", "Training")),
            status(VALID, ("Running", "True", "Training")),
            [],
            id="no-change-no-event",
        ),
        pytest.param(
            status(VALID, ("Running", "True", "Training")),
            status(VALID, ("Running", "False", "Preempted")),
            [("Warning", "Preempted")],
            id="preempted",
        ),
        pytest.param(
            status(VALID, ("Running", "True", "Training")),
            status(VALID, ("Running", "False", "Retrying")),
            [("Warning", "TrainingRetrying")],
            id="retrying",
        ),
        pytest.param(
            status(VALID, ("Running", "True", "Training")),
            status(
                VALID, ("Running", "False", "TrainingSucceeded"), ("Succeeded", "True", "TrainingSucceeded")
            ),
            [("Normal", "TrainingSucceeded")],
            id="succeeded",
        ),
        pytest.param(
            status(VALID, ("Running", "True", "Training")),
            status(VALID, ("Running", "False", "OOMKilled"), ("Failed", "True", "OOMKilled")),
            [("Warning", "TrainingFailed")],
            id="failed-training",
        ),
        pytest.param(
            status(VALID),
            status(VALID, ("Failed", "True", "JobConflict")),
            [("Warning", "JobConflict")],
            id="job-conflict",
        ),
        pytest.param(
            status(VALID, ("Running", "True", "Training")),
            status(VALID, ("Running", "False", "JobDeleted"), ("Failed", "True", "JobDeleted")),
            [("Warning", "JobDeleted")],
            id="job-deleted",
        ),
        pytest.param(
            status(VALID, ("Admitted", "True", "NoQueue"), ("Running", "True", "Training")),
            status(
                VALID,
                ("Admitted", "True", "NoQueue"),
                ("Running", "False", "SuspendRequested"),
                ("Suspended", "True", "SuspendRequested"),
            ),
            [("Normal", "Suspended")],
            id="suspended",
        ),
        pytest.param(
            status(VALID, ("Suspended", "True", "SuspendRequested")),
            status(VALID, ("Suspended", "False", "Resumed")),
            [("Normal", "Resumed")],
            id="resumed",
        ),
        pytest.param(
            None,
            status(VALID, ("Admitted", "False", "Queued")),
            [("Normal", "Queued")],
            id="queued",
        ),
        pytest.param(
            status(VALID, ("Admitted", "False", "Queued")),
            status(VALID, ("Admitted", "True", "Admitted")),
            [("Normal", "Admitted")],
            id="admitted",
        ),
    ],
)
def test_derive_events(
    old: dict[str, Any] | None, new: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    assert [(e.type, e.reason) for e in derive_events(old, new)] == expected


def test_failure_event_names_the_condition_reason() -> None:
    new = status(VALID, ("Failed", "True", "DataInvalid"))
    assert derive_events(status(VALID), new) == [
        Event("Warning", "TrainingFailed", "DataInvalid: Failed DataInvalid")
    ]


def test_event_body() -> None:
    obj = f.ftj()
    body = event_body(
        obj, Event("Warning", "TrainingFailed", "x" * 2000 + " AKIAIOSFODNN7EXAMPLE"), f.T0, sequence=2
    )
    assert body["metadata"]["name"].startswith("demo.")
    assert body["metadata"]["name"] != event_body(obj, Event("Normal", "A", ""), f.T0)["metadata"]["name"]
    assert body["involvedObject"] == {
        "apiVersion": "ftjob.dev/v1alpha1",
        "kind": "FineTuneJob",
        "name": "demo",
        "namespace": "team-a",
        "uid": f.UID,
        "resourceVersion": "100",
    }
    assert (body["type"], body["reason"], body["source"]) == (
        "Warning",
        "TrainingFailed",
        {"component": "ftjob-operator"},
    )
    assert len(body["message"]) == 1024
    assert body["firstTimestamp"] == body["lastTimestamp"] == f.ts(0)
