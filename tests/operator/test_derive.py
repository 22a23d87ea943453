"""derive_status: (FineTuneJob, Job, pods, progress, now) -> status, one named case per story."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from ftjob.api import FineTuneJobStatus
from ftjob.api.status import Artifacts, DatasetStats, Metrics
from ftjob.contract import ProgressRecord, TerminationSummary
from ftjob_operator.derive import derive_status
from ftjob_operator.observe import CollectorRun
from ftjob_operator.settings import OperatorSettings

from . import factories as f

SETTINGS = OperatorSettings(image_pull_grace_seconds=300)
KUEUE = {"scheduling": {"queueName": "gpus"}}

SUCCESS = TerminationSummary(
    outcome="Succeeded",
    reason="TrainingSucceeded",
    message="Adapter written to s3://results/demo/adapter/.",
    metrics=Metrics(
        train_loss=1.2, eval_loss=0.91, perplexity=2.48, base_eval_loss=1.7, tuned={"exactMatch": 0.8}
    ),
    dataset=DatasetStats(total_lines=120, train_examples=100, validation_examples=10, dropped=10),
    artifacts=Artifacts(adapter="s3://results/demo/adapter/", manifest="s3://results/demo/manifest.json"),
)
DATA_INVALID = TerminationSummary(
    outcome="Failed",
    reason="DataInvalid",
    message="Only 3 usable examples after cleaning (minExamples 10).",
    dataset=DatasetStats(total_lines=40, train_examples=3, dropped=37, dropped_by_reason={"duplicate": 37}),
)
OUT_OF_MEMORY = TerminationSummary(
    outcome="Failed",
    reason="OutOfMemory",
    message="CUDA out of memory during training on NVIDIA H200: peak 138.2 GiB allocated of 139.8 GiB, with "
    "perDeviceBatchSize 16, maxSeqLength 8192, ...",
)
OUTPUT_PREFIX_IN_USE = TerminationSummary(
    outcome="Failed",
    reason="OutputPrefixInUse",
    message="s3://bucket/runs/job/ holds the outputs of another run, team/job (uid 1234) (adapter, checkpoints, "
    "manifest.json); this job is team/job (uid 5678). Use another spec.output.uri, or set spec.output.onExisting "
    "to Overwrite (delete them and train from scratch) or Resume (continue from its newest checkpoint)",
)
CRASHED = TerminationSummary(
    outcome="Failed", reason="TrainerFailed", message="CUDA error: an illegal memory access"
)

RUNNING_STATUS: dict[str, Any] = {
    "phase": "Running",
    "jobName": "demo-train",
    "startTime": f.ts(10),
    "attempts": 1,
    "conditions": [
        {
            "type": "Validated",
            "status": "True",
            "reason": "SpecValid",
            "lastTransitionTime": f.ts(0),
            "observedGeneration": 1,
        },
        {
            "type": "Running",
            "status": "True",
            "reason": "Training",
            "lastTransitionTime": f.ts(10),
            "observedGeneration": 1,
        },
    ],
}
SUSPENDED_STATUS: dict[str, Any] = {
    "phase": "Suspended",
    "jobName": "demo-train",
    "startTime": f.ts(10),
    "conditions": [
        {"type": "Suspended", "status": "True", "reason": "SuspendRequested", "lastTransitionTime": f.ts(50)},
    ],
}


def record(step: int, total: int, at: float, **extra: Any) -> ProgressRecord:
    return ProgressRecord(
        stage="training", step=step, total_steps=total, epoch=step / 100, time=f.ts(at), **extra
    )


@dataclass
class Case:
    spec: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] | None = None
    job: dict[str, Any] | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)
    progress: ProgressRecord | None = None
    collector: CollectorRun | None = None
    quota_block: str | None = None
    at: float = 120
    # expectations
    phase: str = ""
    conditions: dict[str, tuple[str, str]] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    message: str = ""


CASES = [
    pytest.param(
        Case(
            spec={"peft": {"quantization": {"bits": 8}}},
            phase="Failed",
            conditions={"Validated": ("False", "InvalidSpec"), "Failed": ("True", "InvalidSpec")},
            message="spec.peft.quantization.bits: qlora requires 4-bit quantization (got 8)",
        ),
        id="invalid-spec-cross-field-rule",
    ),
    pytest.param(
        Case(
            spec={"peft": {"r": 0}},
            phase="Failed",
            conditions={"Validated": ("False", "InvalidSpec"), "Failed": ("True", "InvalidSpec")},
            message="spec.peft.r: must be >= 1 (got 0)",
            fields={"completionTime": f.ts(120)},
        ),
        id="invalid-spec-field-rule-names-path-and-value",
    ),
    pytest.param(
        Case(
            phase="Pending",
            conditions={"Validated": ("True", "SpecValid"), "Admitted": ("True", "NoQueue")},
            message="Creating the trainer Job",
        ),
        id="no-job-yet",
    ),
    pytest.param(
        Case(
            spec=KUEUE,
            phase="Pending",
            conditions={"Validated": ("True", "SpecValid"), "Admitted": ("False", "Queued")},
        ),
        id="no-job-yet-kueue",
    ),
    pytest.param(
        Case(
            job=f.job(),
            phase="Pending",
            conditions={
                "Validated": ("True", "SpecValid"),
                "Admitted": ("True", "NoQueue"),
                "Running": ("False", "JobCreated"),
            },
            fields={"jobName": "demo-train"},
        ),
        id="job-created-no-pod",
    ),
    pytest.param(
        Case(
            job=f.job(active=1),
            pods=[
                f.pod(
                    conditions=[
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": "0/3 nodes have nvidia.com/gpu",
                        }
                    ]
                )
            ],
            phase="Pending",
            conditions={"Running": ("False", "PodPending")},
            message="Unschedulable: 0/3 nodes have nvidia.com/gpu",
        ),
        id="pod-unschedulable",
    ),
    pytest.param(
        Case(
            job=f.job(active=1),
            pods=[f.running(started=10)],
            phase="Running",
            conditions={"Running": ("True", "Training"), "Admitted": ("True", "NoQueue")},
            fields={"startTime": f.ts(10), "attempts": 1},
            message="Training.",
        ),
        id="pod-running",
    ),
    pytest.param(
        Case(
            spec={"resources": {"gpus": 1, "nodes": 2, "memory": "24Gi"}},
            job=f.job(active=2),
            pods=[
                f.running(name="demo-train-0-aaaaa", started=10),
                f.running(name="demo-train-1-bbbbb", started=11),
            ],
            phase="Running",
            conditions={"Running": ("True", "Training")},
            fields={"startTime": f.ts(10), "attempts": 1},
            message="Training.",
        ),
        id="two-nodes-one-attempt",
    ),
    pytest.param(
        Case(
            job=f.job(active=1),
            pods=[f.running()],
            progress=record(50, 200, at=100, loss=1.234, eta_seconds=600, tokens_per_second=900.0),
            phase="Running",
            conditions={"Running": ("True", "Training")},
            fields={
                "progress": {
                    "step": 50,
                    "totalSteps": 200,
                    "epoch": 0.5,
                    "percent": 25,
                    "etaSeconds": 600,
                    "loss": 1.234,
                    "tokensPerSecond": 900.0,
                    "stage": "training",
                    "updatedAt": f.ts(100),
                }
            },
            message="step 50/200 (25%), loss 1.234, ETA 10m00s",
        ),
        id="running-with-progress",
    ),
    pytest.param(
        Case(
            status={
                **RUNNING_STATUS,
                "progress": {"step": 150, "totalSteps": 200, "percent": 75, "loss": 0.9},
            },
            job=f.job(
                succeeded=1,
                conditions=[f.job_cond("Complete", "CompletionsReached")],
                completionTime=f.ts(100),
            ),
            pods=[f.terminated(0, SUCCESS)],
            phase="Succeeded",
            conditions={
                "Succeeded": ("True", "TrainingSucceeded"),
                "Running": ("False", "TrainingSucceeded"),
            },
            fields={
                "completionTime": f.ts(100),
                "metrics": {
                    "trainLoss": 1.2,
                    "evalLoss": 0.91,
                    "perplexity": 2.48,
                    "baseEvalLoss": 1.7,
                    "tuned": {"exactMatch": 0.8},
                    "base": {},
                },
                "artifacts": {
                    "adapter": "s3://results/demo/adapter/",
                    "manifest": "s3://results/demo/manifest.json",
                },
                "dataset.trainExamples": 100,
                "progress": {
                    "step": 200,
                    "totalSteps": 200,
                    "percent": 100,
                    "etaSeconds": 0,
                    "loss": 0.9,
                    "stage": "done",
                },
            },
            message="Adapter written to s3://results/demo/adapter/. (eval loss 0.91)",
        ),
        id="succeeded-with-metrics-and-artifacts",
    ),
    pytest.param(
        Case(
            job=f.job(succeeded=1, conditions=[f.job_cond("SuccessCriteriaMet", "CompletionsReached")]),
            pods=[f.terminated(0)],
            phase="Succeeded",
            conditions={"Succeeded": ("True", "TrainingSucceeded")},
            fields={"completionTime": f.ts(120)},
            message="left no summary",
        ),
        id="succeeded-without-summary-on-success-criteria-met",
    ),
    pytest.param(
        Case(
            status=RUNNING_STATUS,
            job=f.job(succeeded=1, conditions=[f.job_cond("Complete", "CompletionsReached")]),
            pods=[],
            phase="Running",
            conditions={"Running": ("False", "CollectingResults")},
            message="removed before the operator read the summary; re-reading it from s3://results/demo/summary.json",
        ),
        id="succeeded-but-the-pod-vanished-collects-the-summary",
    ),
    pytest.param(
        Case(
            quota_block="The namespace used 10.00 of its 10 GPU-hours for 2026-11",
            phase="Queued",
            conditions={"Validated": ("True", "SpecValid"), "Admitted": ("False", "QuotaExceeded")},
            message="used 10.00 of its 10 GPU-hours",
        ),
        id="held-by-the-namespace-gpu-hour-budget",
    ),
    pytest.param(
        Case(
            spec={"storage": {"endpointUrl": "http://127.0.0.1:9000"}},
            phase="Failed",
            conditions={"Validated": ("False", "LoopbackEndpoint"), "Failed": ("True", "LoopbackEndpoint")},
            message="spec.storage.endpointUrl: http://127.0.0.1:9000 must not be a loopback address",
        ),
        id="loopback-endpoint-refused-on-a-cluster",
    ),
    pytest.param(
        Case(
            status=RUNNING_STATUS,
            job=f.job(succeeded=1, conditions=[f.job_cond("Complete", "CompletionsReached")]),
            pods=[],
            collector=CollectorRun(job=f.job(succeeded=0, conditions=[])),
            phase="Running",
            conditions={"Running": ("False", "CollectingResults")},
        ),
        id="collector-still-running",
    ),
    pytest.param(
        Case(
            status=RUNNING_STATUS,
            job=f.job(succeeded=1, conditions=[f.job_cond("Complete", "CompletionsReached")]),
            pods=[],
            collector=CollectorRun(
                job=f.job(succeeded=1, conditions=[f.job_cond("Complete", "CompletionsReached")]),
                pods=(f.terminated(0, SUCCESS),),
            ),
            phase="Succeeded",
            conditions={"Succeeded": ("True", "TrainingSucceeded")},
            fields={"metrics.evalLoss": 0.91},
            message="(re-read from s3://results/demo/summary.json: the trainer pod was gone)",
        ),
        id="succeeded-re-read-by-the-collector",
    ),
    pytest.param(
        Case(
            status=RUNNING_STATUS,
            job=f.job(succeeded=1, conditions=[f.job_cond("Complete", "CompletionsReached")]),
            pods=[],
            collector=CollectorRun(
                job=None, rejected="the API server refused the Job demo-collect: 403 Forbidden"
            ),
            phase="Succeeded",
            conditions={"Succeeded": ("True", "TrainingSucceeded")},
            message="could not be re-read (the API server refused the Job demo-collect: 403 Forbidden), so the "
            "status has no metrics",
        ),
        id="succeeded-collector-refused-says-so",
    ),
    pytest.param(
        Case(
            status=RUNNING_STATUS,
            job=f.job(
                failed=1,
                conditions=[f.job_cond("Failed", "PodFailurePolicy", "Container trainer ... exit code 3")],
            ),
            pods=[f.terminated(3, DATA_INVALID)],
            phase="Failed",
            conditions={"Failed": ("True", "DataInvalid"), "Running": ("False", "DataInvalid")},
            fields={"dataset.droppedByReason": {"duplicate": 37}, "completionTime": f.ts(100)},
            message="Only 3 usable examples after cleaning (minExamples 10).",
        ),
        id="failed-data-invalid-from-summary",
    ),
    pytest.param(
        Case(
            status=RUNNING_STATUS,
            job=f.job(
                failed=1,
                conditions=[f.job_cond("Failed", "PodFailurePolicy", "Container trainer ... exit code 9")],
            ),
            pods=[
                f.terminated(
                    9,
                    TerminationSummary(
                        outcome="Failed",
                        reason="EvaluationGateNotMet",
                        message="evaluation gate not met: evalLoss 0.9100 (base 0.9200) improves on the base "
                        "model by 0.01, less than minImprovement 0.05",
                        metrics=Metrics(eval_loss=0.91, base_eval_loss=0.92),
                        artifacts=Artifacts(adapter="s3://results/demo/rejected/adapter/"),
                    ),
                )
            ],
            phase="Failed",
            conditions={"Failed": ("True", "EvaluationGateNotMet")},
            fields={
                "metrics.evalLoss": 0.91,
                "metrics.baseEvalLoss": 0.92,
                "artifacts.adapter": "s3://results/demo/rejected/adapter/",
            },
            message="less than minImprovement 0.05",
        ),
        id="failed-evaluation-gate-keeps-both-numbers",
    ),
    pytest.param(
        Case(
            job=f.job(
                failed=1,
                conditions=[
                    f.job_cond("Failed", "PodFailurePolicy", "Container trainer failed with exit code 2")
                ],
            ),
            pods=[f.terminated(2)],
            phase="Failed",
            conditions={"Failed": ("True", "ConfigInvalid")},
            message="Container trainer failed with exit code 2",
        ),
        id="failed-config-invalid-from-exit-code",
    ),
    pytest.param(
        Case(
            status=RUNNING_STATUS,
            job=f.job(
                failed=1,
                conditions=[f.job_cond("Failed", "PodFailurePolicy", "Container trainer ... exit code 7")],
            ),
            pods=[f.terminated(7, OUT_OF_MEMORY)],
            phase="Failed",
            conditions={"Failed": ("True", "OutOfMemory"), "Running": ("False", "OutOfMemory")},
            message=OUT_OF_MEMORY.message,
        ),
        id="failed-out-of-memory-from-summary-not-retried",
    ),
    pytest.param(
        Case(
            job=f.job(
                failed=1,
                conditions=[
                    f.job_cond("Failed", "PodFailurePolicy", "Container trainer failed with exit code 7")
                ],
            ),
            pods=[f.terminated(7)],
            phase="Failed",
            conditions={"Failed": ("True", "OutOfMemory")},
            message="Container trainer failed with exit code 7",
        ),
        id="failed-out-of-memory-from-exit-code",
    ),
    pytest.param(
        Case(
            status=RUNNING_STATUS,
            job=f.job(
                failed=1,
                conditions=[f.job_cond("Failed", "PodFailurePolicy", "Container trainer ... exit code 6")],
            ),
            pods=[f.terminated(6, OUTPUT_PREFIX_IN_USE)],
            phase="Failed",
            conditions={"Failed": ("True", "OutputPrefixInUse"), "Running": ("False", "OutputPrefixInUse")},
            message=OUTPUT_PREFIX_IN_USE.message,
        ),
        id="failed-output-prefix-in-use-from-summary-not-retried",
    ),
    pytest.param(
        Case(
            job=f.job(
                failed=1,
                conditions=[
                    f.job_cond("Failed", "PodFailurePolicy", "Container trainer failed with exit code 6")
                ],
            ),
            pods=[f.terminated(6)],
            phase="Failed",
            conditions={"Failed": ("True", "OutputPrefixInUse")},
            message="Container trainer failed with exit code 6",
        ),
        id="failed-output-prefix-in-use-from-exit-code",
    ),
    pytest.param(
        Case(
            job=f.job(failed=1, conditions=[f.job_cond("FailureTarget", "PodFailurePolicy")]),
            pods=[
                f.terminated(
                    4,
                    TerminationSummary(
                        outcome="Failed", reason="InputUnavailable", message="s3://data/train.jsonl: 403"
                    ),
                )
            ],
            phase="Failed",
            conditions={"Failed": ("True", "InputUnavailable")},
            message="s3://data/train.jsonl: 403",
        ),
        id="failed-input-unavailable-on-failure-target",
    ),
    pytest.param(
        Case(
            job=f.job(failed=3, conditions=[f.job_cond("Failed", "BackoffLimitExceeded")]),
            pods=[
                f.terminated(137, reason="OOMKilled", name="a", created=0),
                f.terminated(137, reason="OOMKilled", name="b", created=60),
            ],
            phase="Failed",
            conditions={"Failed": ("True", "OOMKilled")},
            fields={"attempts": 3},
            message="ran out of memory (limit 32Gi)",
        ),
        id="failed-oom-killed",
    ),
    pytest.param(
        Case(
            job=f.job(failed=3, conditions=[f.job_cond("Failed", "BackoffLimitExceeded")]),
            pods=[f.terminated(1, CRASHED)],
            phase="Failed",
            conditions={"Failed": ("True", "BackoffLimitExceeded")},
            message="backoffLimit (2) allows. Last attempt: CUDA error: an illegal memory access",
        ),
        id="failed-backoff-limit-exceeded-with-last-words",
    ),
    pytest.param(
        Case(
            spec={"activeDeadlineSeconds": 3600},
            job=f.job(
                conditions=[
                    f.job_cond("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
                ]
            ),
            pods=[f.terminated(143, name="x")],
            phase="Failed",
            conditions={"Failed": ("True", "DeadlineExceeded")},
            message="activeDeadlineSeconds (3600 s)",
        ),
        id="failed-deadline-exceeded",
    ),
    pytest.param(
        Case(
            job=f.job(active=1),
            pods=[f.waiting("ImagePullBackOff", "Back-off pulling image", started=0)],
            at=120,
            phase="Pending",
            conditions={"Running": ("False", "PodPending")},
            message="ImagePullBackOff: Back-off pulling image",
        ),
        id="image-pull-backoff-within-grace",
    ),
    pytest.param(
        Case(
            job=f.job(active=1),
            pods=[f.waiting("ImagePullBackOff", "Back-off pulling image", started=0)],
            at=301,
            phase="Failed",
            conditions={"Failed": ("True", "ImagePullFailed"), "Running": ("False", "ImagePullFailed")},
            message="could not be pulled (ImagePullBackOff: Back-off pulling image)",
        ),
        id="image-pull-failed-after-grace",
    ),
    pytest.param(
        Case(
            job=f.job(active=1),
            pods=[f.waiting("InvalidImageName", "couldn't parse image name", started=0)],
            at=1,
            phase="Failed",
            conditions={"Failed": ("True", "ImagePullFailed")},
        ),
        id="invalid-image-name-fails-at-once",
    ),
    pytest.param(
        Case(
            job=f.job(active=1),
            pods=[f.waiting("CreateContainerConfigError", 'secret "minio-creds" not found', started=0)],
            at=400,
            phase="Failed",
            conditions={"Failed": ("True", "InputUnavailable")},
            message='secret "minio-creds" not found',
        ),
        id="missing-secret-after-grace",
    ),
    pytest.param(
        Case(
            status=RUNNING_STATUS,
            job=f.job(active=1, failed=0),
            pods=[f.disrupted(name="a", created=0), f.pod(name="b", created=60)],
            phase="Running",
            conditions={"Running": ("False", "Preempted")},
            message="PreemptionByScheduler",
        ),
        id="preempted-job-retries",
    ),
    pytest.param(
        Case(
            status=RUNNING_STATUS,
            job=f.job(active=1, failed=1),
            pods=[f.terminated(137, reason="OOMKilled", name="a", created=0), f.pod(name="b", created=60)],
            phase="Running",
            conditions={"Running": ("False", "Retrying")},
            fields={"attempts": 2},
            message="OOMKilled",
        ),
        id="retrying-after-oom",
    ),
    pytest.param(
        Case(
            status=RUNNING_STATUS,
            job=f.job(succeeded=0, active=1),
            pods=[f.terminated(0, SUCCESS)],
            phase="Running",
            conditions={"Running": ("True", "Training")},
            message="waiting for the Job to complete",
        ),
        id="pod-succeeded-job-not-yet-complete",
    ),
    pytest.param(
        Case(
            status=RUNNING_STATUS,
            job=f.job(active=1),
            pods=[f.running(deleting=True)],
            phase="Running",
            conditions={"Running": ("False", "Retrying")},
            message="is being deleted",
        ),
        id="pod-deleted-under-the-job",
    ),
    pytest.param(
        Case(
            status=RUNNING_STATUS,
            phase="Failed",
            conditions={"Failed": ("True", "JobDeleted"), "Running": ("False", "JobDeleted")},
            message="not recreated",
        ),
        id="job-deleted-while-running",
    ),
    pytest.param(
        Case(
            job=f.job(owner={}),
            phase="Failed",
            conditions={"Validated": ("True", "SpecValid"), "Failed": ("True", "JobConflict")},
            message="not controlled by this FineTuneJob",
        ),
        id="job-conflict-no-owner",
    ),
    pytest.param(
        Case(
            job=f.job(owner=f.owner_ref(uid="other", name="someone-else")),
            phase="Failed",
            conditions={"Validated": ("True", "SpecValid"), "Failed": ("True", "JobConflict")},
        ),
        id="job-conflict-other-owner",
    ),
    pytest.param(
        Case(
            job=f.job(owner=f.owner_ref(uid="previous-incarnation")),
            phase="Pending",
            conditions={"Validated": ("True", "SpecValid")},
            message="garbage collector",
        ),
        id="job-of-a-deleted-namesake-waits-for-gc",
    ),
    pytest.param(
        Case(
            spec={"suspend": True},
            status=RUNNING_STATUS,
            job=f.job(suspend=True, active=0),
            pods=[f.running(deleting=True)],
            phase="Suspended",
            conditions={
                "Suspended": ("True", "SuspendRequested"),
                "Running": ("False", "SuspendRequested"),
                "Admitted": ("True", "NoQueue"),
            },
            message="saving a checkpoint",
        ),
        id="suspending-pod-still-stopping",
    ),
    pytest.param(
        Case(
            spec={"suspend": True},
            status=RUNNING_STATUS,
            job=f.job(suspend=True),
            phase="Suspended",
            conditions={"Suspended": ("True", "SuspendRequested"), "Running": ("False", "SuspendRequested")},
            message="set it to false to resume",
        ),
        id="suspended",
    ),
    pytest.param(
        Case(
            spec={**KUEUE, "suspend": True},
            status=RUNNING_STATUS,
            phase="Suspended",
            conditions={"Suspended": ("True", "SuspendRequested"), "Admitted": ("False", "SuspendRequested")},
            fields={"jobName": "demo-train"},
        ),
        id="kueue-suspended-job-deleted-is-not-job-deleted",
    ),
    pytest.param(
        Case(
            spec=KUEUE,
            status=SUSPENDED_STATUS,
            phase="Pending",
            conditions={"Suspended": ("False", "Resumed"), "Admitted": ("False", "Queued")},
        ),
        id="kueue-resume-before-job-recreated",
    ),
    pytest.param(
        Case(
            status=SUSPENDED_STATUS,
            job=f.job(suspend=False, active=1),
            pods=[f.running()],
            phase="Running",
            conditions={"Suspended": ("False", "Resumed"), "Running": ("True", "Training")},
        ),
        id="resumed-and-running",
    ),
    pytest.param(
        Case(
            spec=KUEUE,
            job=f.job(suspend=True),
            phase="Queued",
            conditions={"Admitted": ("False", "Queued"), "Running": ("False", "Queued")},
            message="LocalQueue gpus",
        ),
        id="kueue-waiting-for-admission",
    ),
    pytest.param(
        Case(
            spec=KUEUE,
            job=f.job(suspend=False, active=1),
            pods=[f.running()],
            phase="Running",
            conditions={"Admitted": ("True", "Admitted"), "Running": ("True", "Training")},
        ),
        id="kueue-admitted-running",
    ),
    pytest.param(
        Case(
            spec=KUEUE,
            status={
                **RUNNING_STATUS,
                "conditions": [
                    *RUNNING_STATUS["conditions"],
                    {
                        "type": "Admitted",
                        "status": "True",
                        "reason": "Admitted",
                        "lastTransitionTime": f.ts(5),
                    },
                ],
            },
            job=f.job(suspend=True),
            phase="Queued",
            conditions={"Admitted": ("False", "Queued"), "Running": ("False", "Preempted")},
            message="preempted or evicted",
        ),
        id="kueue-evicted-after-start",
    ),
    pytest.param(
        Case(
            spec=KUEUE,
            status={
                **SUSPENDED_STATUS,
                "conditions": [
                    *SUSPENDED_STATUS["conditions"],
                    {
                        "type": "Admitted",
                        "status": "False",
                        "reason": "SuspendRequested",
                        "lastTransitionTime": f.ts(50),
                    },
                ],
            },
            job=f.job(suspend=True),
            phase="Queued",
            conditions={
                "Admitted": ("False", "Queued"),
                "Running": ("False", "Queued"),
                "Suspended": ("False", "Resumed"),
            },
        ),
        id="kueue-resumed-queued-again",
    ),
]


def _dig(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


@pytest.mark.parametrize("case", CASES)
def test_derive_status(case: Case) -> None:
    obj = f.ftj(case.spec, status=case.status)
    status = derive_status(
        obj,
        case.job,
        case.pods,
        case.progress,
        f.T0 + timedelta(seconds=case.at),
        SETTINGS,
        case.collector,
        case.quota_block,
    )

    assert status["phase"] == case.phase, status.get("message")
    got = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    for type_, expected in case.conditions.items():
        assert got.get(type_) == expected, f"{type_}: {got}"
    # Absent types stay absent: no stray Failed on a live job, no Succeeded on a failed one.
    for type_ in ("Failed", "Succeeded", "Suspended"):
        if type_ not in case.conditions:
            assert type_ not in got or got[type_][0] != "True", got
    for path, expected in case.fields.items():
        assert _dig(status, path) == expected, path
    assert case.message in status["message"]
    assert status["observedGeneration"] == 1
    assert all(c["observedGeneration"] == 1 for c in status["conditions"] if c["type"] in case.conditions)
    # Only fields the CRD declares: the status model forbids anything else.
    FineTuneJobStatus.model_validate(status)


def test_last_transition_time_moves_only_on_transitions() -> None:
    obj = f.ftj()
    first = derive_status(obj, f.job(active=1), [f.running()], None, f.T0, SETTINGS)
    later = f.T0 + timedelta(minutes=5)
    again = derive_status(f.ftj(status=first), f.job(active=1), [f.running()], None, later, SETTINGS)
    assert again == first  # nothing changed: nothing to write

    stopped = derive_status(
        f.ftj(status=again),
        f.job(active=1, failed=1),
        [f.terminated(1, name="a"), f.pod(name="b", created=60)],
        None,
        later,
        SETTINGS,
    )
    times = {c["type"]: c["lastTransitionTime"] for c in stopped["conditions"]}
    assert times["Running"] == f.ts(300)  # True -> False
    assert times["Validated"] == times["Admitted"] == f.ts(0)  # unchanged since the first derivation


def test_reason_change_alone_keeps_the_transition_time() -> None:
    pending = derive_status(f.ftj(), f.job(), [], None, f.T0, SETTINGS)
    waiting = derive_status(
        f.ftj(status=pending), f.job(active=1), [f.pod()], None, f.T0 + timedelta(seconds=30), SETTINGS
    )
    running_cond = next(c for c in waiting["conditions"] if c["type"] == "Running")
    assert (running_cond["reason"], running_cond["lastTransitionTime"]) == ("PodPending", f.ts(0))


def test_observed_generation_follows_the_object_reconciled() -> None:
    first = derive_status(f.ftj(generation=1), f.job(active=1), [f.running()], None, f.T0, SETTINGS)
    bumped = f.ftj({"suspend": True}, status=first, generation=2)
    second = derive_status(
        bumped, f.job(active=1, suspend=True), [], None, f.T0 + timedelta(seconds=9), SETTINGS
    )
    assert second["observedGeneration"] == 2
    assert {c["type"]: c["observedGeneration"] for c in second["conditions"]} == {
        "Validated": 2,
        "Admitted": 2,
        "Running": 2,
        "Suspended": 2,
    }
    validated = next(c for c in second["conditions"] if c["type"] == "Validated")
    assert validated["lastTransitionTime"] == f.ts(0)


def test_terminal_status_is_final() -> None:
    done = derive_status(
        f.ftj(),
        f.job(conditions=[f.job_cond("Complete", "CompletionsReached")]),
        [f.terminated(0, SUCCESS)],
        None,
        f.T0,
        SETTINGS,
    )
    # The Job is gone (TTL) and the spec changed: nothing but observedGeneration moves.
    later = derive_status(
        f.ftj({"suspend": True}, status=done, generation=2),
        None,
        [],
        None,
        f.T0 + timedelta(days=1),
        SETTINGS,
    )
    assert later == {**done, "observedGeneration": 2}


def test_trainer_text_is_redacted() -> None:
    leaky = TerminationSummary(
        outcome="Failed",
        reason="TrainerFailed",
        message="boto3 failed: aws_secret_access_key=abcdEFGH12345678xyz",
    )
    status = derive_status(
        f.ftj(),
        f.job(conditions=[f.job_cond("Failed", "BackoffLimitExceeded")]),
        [f.terminated(1, leaky)],
        None,
        f.T0,
        SETTINGS,
    )
    assert "abcdEFGH12345678xyz" not in str(status)
    assert "[REDACTED]" in status["message"]


def test_unknown_fields_from_a_newer_crd_are_ignored() -> None:
    obj = f.ftj({"futureField": "x", "training": {"futureKnob": 1}}, dict(RUNNING_STATUS))
    job = f.job()
    st = derive_status(obj, job, [f.running()], None, f.T0 + timedelta(seconds=120), SETTINGS)
    assert st["phase"] == "Running"


def test_a_validated_generation_never_becomes_invalid_spec() -> None:
    # Generation 1 passed validation; a reader that cannot parse it now (a newer CRD changed a type) must
    # not fail the job: the status is kept, with a message saying why.
    obj = f.ftj({"peft": {"r": "sixteen"}}, dict(RUNNING_STATUS))
    st = derive_status(obj, f.job(), [f.running()], None, f.T0 + timedelta(seconds=120), SETTINGS)
    assert st["phase"] == "Running"
    assert st["conditions"] == RUNNING_STATUS["conditions"]
    assert "cannot read the spec it validated before" in st["message"]
    # A new generation is judged on its own.
    newer = f.ftj({"peft": {"r": "sixteen"}}, dict(RUNNING_STATUS), generation=2)
    st = derive_status(newer, f.job(), [f.running()], None, f.T0 + timedelta(seconds=120), SETTINGS)
    assert st["phase"] == "Failed"


def test_loopback_endpoints_are_accepted_where_pods_are_local_processes() -> None:
    obj = f.ftj({"storage": {"endpointUrl": "http://localhost:9000"}})
    allowed = OperatorSettings(allow_loopback_endpoints=True)
    status = derive_status(obj, None, [], None, f.T0, allowed)
    assert status["phase"] == "Pending", status["message"]
