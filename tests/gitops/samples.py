"""FineTuneJobs as the API server returns them at each point of their life, with statuses shaped exactly as
the operator writes them (every status validates against FineTuneJobStatus, the model the CRD comes from)."""

from __future__ import annotations

import copy
from typing import Any, Final

from ftjob.api import FineTuneJobStatus
from ftjob.api.conditions import REASONS

JsonDict = dict[str, Any]

CREATED: Final = "2026-11-20T09:00:00Z"


def condition(type_: str, status: str, reason: str, message: str, at: str, generation: int = 1) -> JsonDict:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": at,
        "observedGeneration": generation,
    }


VALIDATED: Final = condition(
    "Validated", "True", "SpecValid", "The spec passed validation.", "2026-11-20T09:00:01Z"
)
NO_QUEUE: Final = condition(
    "Admitted",
    "True",
    "NoQueue",
    "No Kueue queue is set; the Job runs as soon as it is created.",
    "2026-11-20T09:00:01Z",
)


def finetunejob(status: JsonDict | None, generation: int = 1, name: str = "support-bot-qlora") -> JsonDict:
    obj: JsonDict = {
        "apiVersion": "ftjob.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {
            "name": name,
            "namespace": "ml-team",
            "uid": "0b6f7a52-8c1e-4d47-9a43-1d2b3c4d5e6f",
            "generation": generation,
            "resourceVersion": "48213",
            "creationTimestamp": CREATED,
            "annotations": {"ftjob.dev/last-handled-configuration": '{"spec":{}}'},
        },
        "spec": {
            "baseModel": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
            "data": {"trainUri": "s3://acme-ml-data/support/v3/train.jsonl"},
            "output": {"uri": "s3://acme-ml-models/support-bot/qlora-v3/"},
        },
    }
    if status is not None:
        obj["status"] = copy.deepcopy(status)
    return obj


RUNNING_MESSAGE: Final = "Training: step 420/1000 (42%), loss 1.284, ETA 31m12s."

STATUSES: Final[dict[str, JsonDict]] = {
    "pending": {
        "observedGeneration": 1,
        "phase": "Pending",
        "conditions": [
            VALIDATED,
            NO_QUEUE,
            condition(
                "Running",
                "False",
                "JobCreated",
                "The Job was created; waiting for its pod.",
                "2026-11-20T09:00:02Z",
            ),
        ],
        "jobName": "support-bot-qlora-train",
        "message": "The Job was created; waiting for its pod.",
    },
    "queued": {
        "observedGeneration": 1,
        "phase": "Queued",
        "conditions": [
            VALIDATED,
            condition(
                "Admitted",
                "False",
                "Queued",
                "Waiting for Kueue to admit the Job (LocalQueue team-a-gpus).",
                "2026-11-20T09:00:02Z",
            ),
            condition(
                "Running",
                "False",
                "Queued",
                "Waiting for Kueue to admit the Job (LocalQueue team-a-gpus).",
                "2026-11-20T09:00:02Z",
            ),
        ],
        "jobName": "support-bot-qlora-train",
        "message": "Waiting for Kueue to admit the Job (LocalQueue team-a-gpus).",
    },
    "running": {
        "observedGeneration": 1,
        "phase": "Running",
        "conditions": [
            VALIDATED,
            condition(
                "Admitted",
                "True",
                "Admitted",
                "Kueue admitted the Job (LocalQueue team-a-gpus).",
                "2026-11-20T09:03:40Z",
            ),
            condition("Running", "True", "Training", RUNNING_MESSAGE, "2026-11-20T09:05:12Z"),
        ],
        "jobName": "support-bot-qlora-train",
        "startTime": "2026-11-20T09:04:55Z",
        "attempts": 1,
        "progress": {
            "step": 420,
            "totalSteps": 1000,
            "epoch": 1.26,
            "percent": 42,
            "etaSeconds": 1872,
            "loss": 1.284,
            "tokensPerSecond": 5210.4,
            "stage": "training",
            "updatedAt": "2026-11-20T09:31:40Z",
        },
        "message": RUNNING_MESSAGE,
    },
    "retrying": {
        "observedGeneration": 1,
        "phase": "Running",
        "conditions": [
            VALIDATED,
            NO_QUEUE,
            condition(
                "Running",
                "False",
                "Retrying",
                "Attempt 1 failed (StorageUnreachable: s3 endpoint did not answer); the Job retries (backoffLimit 3), resuming from the last checkpoint.",
                "2026-11-20T10:12:00Z",
            ),
        ],
        "jobName": "support-bot-qlora-train",
        "startTime": "2026-11-20T09:04:55Z",
        "attempts": 1,
        "message": "Attempt 1 failed (StorageUnreachable: s3 endpoint did not answer); the Job retries (backoffLimit 3), resuming from the last checkpoint.",
    },
    "suspended": {
        "observedGeneration": 2,
        "phase": "Suspended",
        "conditions": [
            VALIDATED,
            NO_QUEUE,
            condition(
                "Running",
                "False",
                "SuspendRequested",
                "Suspended (spec.suspend is true); set it to false to resume from the last checkpoint.",
                "2026-11-20T11:00:05Z",
                2,
            ),
            condition(
                "Suspended",
                "True",
                "SuspendRequested",
                "Suspended (spec.suspend is true); set it to false to resume from the last checkpoint.",
                "2026-11-20T11:00:05Z",
                2,
            ),
        ],
        "jobName": "support-bot-qlora-train",
        "startTime": "2026-11-20T09:04:55Z",
        "attempts": 1,
        "message": "Suspended (spec.suspend is true); set it to false to resume from the last checkpoint.",
    },
    "succeeded": {
        "observedGeneration": 1,
        "phase": "Succeeded",
        "conditions": [
            VALIDATED,
            NO_QUEUE,
            condition(
                "Running",
                "False",
                "TrainingSucceeded",
                "Adapter, evaluation and manifest written (eval loss 0.9312)",
                "2026-11-20T10:41:09Z",
            ),
            condition(
                "Succeeded",
                "True",
                "TrainingSucceeded",
                "Adapter, evaluation and manifest written (eval loss 0.9312)",
                "2026-11-20T10:41:09Z",
            ),
        ],
        "jobName": "support-bot-qlora-train",
        "startTime": "2026-11-20T09:04:55Z",
        "completionTime": "2026-11-20T10:41:09Z",
        "attempts": 1,
        "progress": {"step": 1000, "totalSteps": 1000, "epoch": 3.0, "percent": 100, "stage": "done"},
        "dataset": {"totalLines": 5400, "trainExamples": 5100, "validationExamples": 270, "dropped": 30},
        "metrics": {
            "trainLoss": 1.02,
            "evalLoss": 0.9312,
            "perplexity": 2.5376,
            "baseEvalLoss": 1.7431,
            "tuned": {"exactMatch": 0.61, "tokenF1": 0.83},
            "base": {"exactMatch": 0.12, "tokenF1": 0.47},
        },
        "artifacts": {
            "adapter": "s3://acme-ml-models/support-bot/qlora-v3/adapter/",
            "evalReport": "s3://acme-ml-models/support-bot/qlora-v3/eval/report.md",
            "manifest": "s3://acme-ml-models/support-bot/qlora-v3/manifest.json",
        },
        "message": "Adapter, evaluation and manifest written (eval loss 0.9312)",
    },
    "failed-backoff": {
        "observedGeneration": 1,
        "phase": "Failed",
        "conditions": [
            VALIDATED,
            NO_QUEUE,
            condition(
                "Running",
                "False",
                "BackoffLimitExceeded",
                "The trainer failed more often than backoffLimit (3) allows. Last attempt: exit code 1",
                "2026-11-20T12:30:00Z",
            ),
            condition(
                "Failed",
                "True",
                "BackoffLimitExceeded",
                "The trainer failed more often than backoffLimit (3) allows. Last attempt: exit code 1",
                "2026-11-20T12:30:00Z",
            ),
        ],
        "jobName": "support-bot-qlora-train",
        "startTime": "2026-11-20T09:04:55Z",
        "completionTime": "2026-11-20T12:30:00Z",
        "attempts": 4,
        "message": "The trainer failed more often than backoffLimit (3) allows. Last attempt: exit code 1",
    },
    "failed-data": {
        "observedGeneration": 1,
        "phase": "Failed",
        "conditions": [
            VALIDATED,
            NO_QUEUE,
            condition(
                "Running",
                "False",
                "DataInvalid",
                "Only 212 usable examples after cleaning; data.minExamples is 500 (see data-report.json).",
                "2026-11-20T09:07:31Z",
            ),
            condition(
                "Failed",
                "True",
                "DataInvalid",
                "Only 212 usable examples after cleaning; data.minExamples is 500 (see data-report.json).",
                "2026-11-20T09:07:31Z",
            ),
        ],
        "jobName": "support-bot-qlora-train",
        "startTime": "2026-11-20T09:04:55Z",
        "completionTime": "2026-11-20T09:07:31Z",
        "attempts": 1,
        "dataset": {
            "totalLines": 840,
            "trainExamples": 212,
            "dropped": 628,
            "droppedByReason": {"emptyAssistant": 600, "duplicate": 28},
        },
        "message": "Only 212 usable examples after cleaning; data.minExamples is 500 (see data-report.json).",
    },
    "failed-spec": {
        "observedGeneration": 1,
        "phase": "Failed",
        "conditions": [
            condition(
                "Validated",
                "False",
                "InvalidSpec",
                "Invalid spec: spec.peft.quantization.bits: qlora needs 4-bit quantization (got 8)",
                "2026-11-20T09:00:01Z",
            ),
            condition(
                "Failed",
                "True",
                "InvalidSpec",
                "Invalid spec: spec.peft.quantization.bits: qlora needs 4-bit quantization (got 8)",
                "2026-11-20T09:00:01Z",
            ),
        ],
        "completionTime": "2026-11-20T09:00:01Z",
        "message": "Invalid spec: spec.peft.quantization.bits: qlora needs 4-bit quantization (got 8)",
    },
}


def validated(status: JsonDict) -> JsonDict:
    """The status, after checking it is one the operator can write (every field declared, every reason known)."""
    FineTuneJobStatus.model_validate(status)
    for c in status.get("conditions") or []:
        assert c["reason"] in REASONS, f"undocumented reason {c['reason']}"
    return status
