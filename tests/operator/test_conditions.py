"""ConditionSet: metav1.Condition semantics."""

from __future__ import annotations

from datetime import timedelta

from ftjob_operator.conditions import ConditionSet, parse_time, timestamp

from .factories import T0, ts


def test_new_condition_gets_now_and_generation() -> None:
    conditions = ConditionSet([], generation=3, now=T0)
    conditions.set("Running", "True", "Training", "go")
    assert conditions.as_list() == [
        {
            "type": "Running",
            "status": "True",
            "reason": "Training",
            "message": "go",
            "lastTransitionTime": ts(0),
            "observedGeneration": 3,
        }
    ]


def test_same_status_keeps_time_other_status_moves_it() -> None:
    previous = [
        {"type": "Running", "status": "True", "reason": "Training", "lastTransitionTime": ts(0)},
        {"type": "Admitted", "status": "True", "reason": "NoQueue", "lastTransitionTime": ts(0)},
    ]
    conditions = ConditionSet(previous, generation=2, now=T0 + timedelta(seconds=60))
    conditions.set("Admitted", "True", "Admitted", "reason changed, status did not")
    conditions.set("Running", "False", "Retrying")
    times = {c["type"]: c["lastTransitionTime"] for c in conditions.as_list()}
    assert times == {"Admitted": ts(0), "Running": ts(60)}


def test_only_conditions_set_or_kept_survive_in_documented_order() -> None:
    previous = [
        {"type": "Suspended", "status": "False", "reason": "Resumed", "lastTransitionTime": ts(0)},
        {"type": "Running", "status": "True", "reason": "Training", "lastTransitionTime": ts(0)},
    ]
    conditions = ConditionSet(previous, generation=None, now=T0)
    conditions.set("Failed", "True", "JobDeleted")
    conditions.keep("Suspended")
    conditions.set("Validated", "True", "SpecValid")
    assert [c["type"] for c in conditions.as_list()] == ["Validated", "Suspended", "Failed"]
    assert "observedGeneration" not in conditions.as_list()[0]


def test_timestamps() -> None:
    assert timestamp(T0) == "2026-03-01T12:00:00Z"
    assert parse_time("2026-03-01T12:00:00Z") == T0
    assert parse_time("2026-03-01T12:00:00.123456Z") == T0 + timedelta(microseconds=123456)
    assert parse_time("not a time") is None
    assert parse_time(None) is None
