"""plan_actions: what to do to the Job, given the status just derived."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from ftjob_operator.derive import derive_status
from ftjob_operator.observe import CollectorRun
from ftjob_operator.plan import (
    Action,
    CreateCollector,
    CreateJob,
    DeleteCollector,
    DeleteJob,
    SetJobSuspend,
    plan_actions,
)
from ftjob_operator.settings import OperatorSettings

from . import factories as f

KUEUE = {"scheduling": {"queueName": "gpus"}}
RUNNING = {
    "phase": "Running",
    "jobName": "demo-train",
    "conditions": [
        {"type": "Running", "status": "True", "reason": "Training", "lastTransitionTime": f.ts(0)}
    ],
}
SUSPENDED = {
    "phase": "Suspended",
    "jobName": "demo-train",
    "conditions": [
        {"type": "Suspended", "status": "True", "reason": "SuspendRequested", "lastTransitionTime": f.ts(0)}
    ],
}


@pytest.mark.parametrize(
    ("spec", "status", "job", "pods", "at", "expected"),
    [
        pytest.param({}, None, None, [], 0, [CreateJob()], id="create"),
        pytest.param(
            {"suspend": True}, None, None, [], 0, [CreateJob()], id="create-suspended-without-queue"
        ),
        pytest.param({**KUEUE, "suspend": True}, None, None, [], 0, [], id="kueue-suspended-never-created"),
        pytest.param({}, None, f.job(), [], 0, [], id="exists-nothing-to-do"),
        pytest.param({"peft": {"r": 0}}, None, None, [], 0, [], id="invalid-spec-no-job"),
        pytest.param({}, RUNNING, None, [], 0, [], id="job-deleted-not-recreated"),
        pytest.param({}, SUSPENDED, None, [], 0, [CreateJob()], id="resume-recreates-after-suspension"),
        pytest.param({"suspend": True}, SUSPENDED, None, [], 0, [], id="suspended-without-job-waits"),
        pytest.param({}, None, f.job(owner={}), [], 0, [], id="foreign-job-untouched"),
        pytest.param({"suspend": True}, None, f.job(owner={}), [], 0, [], id="foreign-job-never-suspended"),
        pytest.param(
            {"suspend": True}, RUNNING, f.job(active=1), [f.running()], 0, [SetJobSuspend(True)], id="suspend"
        ),
        pytest.param({}, SUSPENDED, f.job(suspend=True), [], 0, [SetJobSuspend(False)], id="resume"),
        pytest.param(KUEUE, None, f.job(suspend=True), [], 0, [], id="kueue-suspend-is-kueues"),
        pytest.param(
            {**KUEUE, "suspend": True},
            RUNNING,
            f.job(active=1),
            [f.running()],
            0,
            [DeleteJob("Foreground", "spec.suspend of a Kueue-managed job")],
            id="kueue-suspend-deletes-job",
        ),
        pytest.param(
            {**KUEUE, "suspend": True},
            RUNNING,
            f.job(deleting=True),
            [],
            0,
            [],
            id="kueue-deletion-in-progress",
        ),
        pytest.param({}, SUSPENDED, f.job(deleting=True), [], 0, [], id="resume-waits-for-deletion"),
        pytest.param(
            {"suspend": True},
            RUNNING,
            f.job(conditions=[f.job_cond("Complete", "CompletionsReached")]),
            [f.terminated(0)],
            0,
            [],
            id="finished-job-not-suspended",
        ),
        pytest.param(
            {},
            None,
            f.job(active=1),
            [f.waiting("ErrImagePull", "not found")],
            400,
            [DeleteJob("Background", "ImagePullFailed: the pod cannot start")],
            id="image-pull-failed-deletes-job",
        ),
        pytest.param(
            {},
            None,
            f.job(active=1),
            [f.waiting("CreateContainerConfigError", 'secret "s" not found')],
            400,
            [DeleteJob("Background", "InputUnavailable: the pod cannot start")],
            id="missing-secret-deletes-job",
        ),
        pytest.param(
            {},
            None,
            f.job(conditions=[f.job_cond("Failed", "BackoffLimitExceeded")]),
            [f.terminated(1)],
            0,
            [],
            id="failed-job-left-alone",
        ),
    ],
)
def test_plan_actions(
    spec: dict[str, Any],
    status: dict[str, Any] | None,
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    at: float,
    expected: list[Action],
) -> None:
    obj = f.ftj(spec, status=status)
    derived = derive_status(obj, job, pods, None, f.T0 + timedelta(seconds=at), OperatorSettings())
    assert plan_actions(obj, derived, job) == expected


def test_a_job_completed_without_its_pod_gets_one_collector_then_it_is_deleted() -> None:
    obj = f.ftj({}, status=RUNNING)
    job = f.job(succeeded=1, conditions=[f.job_cond("Complete", "CompletionsReached")])
    at = f.T0 + timedelta(seconds=120)
    collecting = derive_status(obj, job, [], None, at, OperatorSettings())
    assert plan_actions(obj, collecting, job, None) == [CreateCollector()]
    collector_job = f.job(conditions=[])
    running = CollectorRun(job=collector_job)
    waiting = derive_status(obj, job, [], None, at, OperatorSettings(), running)
    assert plan_actions(obj, waiting, job, collector_job) == []  # never a second one
    done = CollectorRun(job=f.job(conditions=[f.job_cond("Complete", "CompletionsReached")]))
    final = derive_status(obj, job, [], None, at, OperatorSettings(), done)
    assert final["phase"] == "Succeeded"
    assert plan_actions(obj, final, job, collector_job) == [DeleteCollector()]


def test_a_job_held_by_the_gpu_hour_budget_gets_no_job() -> None:
    obj = f.ftj({})
    held = derive_status(
        obj,
        None,
        [],
        None,
        f.T0,
        OperatorSettings(),
        quota_block="The namespace used 10.00 of its 10 GPU-hours",
    )
    assert held["phase"] == "Queued"
    assert plan_actions(obj, held, None) == []
    free = derive_status(obj, None, [], None, f.T0, OperatorSettings())
    assert plan_actions(obj, free, None) == [CreateJob()]
