"""Condition types, reasons and phases: the vocabulary of `status`, documented in one place."""

from __future__ import annotations

from typing import Final, Literal

# Condition types (metav1.Condition.type).
VALIDATED: Final = "Validated"
"""The spec passed the rules the schema cannot express."""
ADMITTED: Final = "Admitted"
"""The Job may run: False with reason `Queued` while Kueue holds it."""
RUNNING: Final = "Running"
"""A trainer pod is running."""
SUSPENDED: Final = "Suspended"
"""`spec.suspend` is true and no trainer pod runs."""
SUCCEEDED: Final = "Succeeded"
"""The adapter, evaluation and manifest were written."""
FAILED: Final = "Failed"
"""The job ended without a result; the reason says why."""

CONDITION_TYPES: Final = (VALIDATED, ADMITTED, RUNNING, SUSPENDED, SUCCEEDED, FAILED)

# Reasons (CamelCase, stable: automation may match on them).
REASONS: Final[dict[str, str]] = {
    "SpecValid": "The spec passed validation.",
    "InvalidSpec": "A cross-field rule failed; the message names the field path and the bad value.",
    "NoQueue": "No Kueue queue is set; the Job runs as soon as it is created.",
    "Queued": "Waiting for Kueue to admit the Job.",
    "Admitted": "Kueue admitted the Job (or no queue is used).",
    "QuotaExceeded": "The namespace used its GPU-hours for the month (FineTuneJobPolicy spec.gpuHoursPerMonth); "
    "the Job is created once the budget allows.",
    "JobCreated": "The trainer Job was created; no pod runs yet.",
    "PodPending": "The trainer pod is waiting to be scheduled or to start.",
    "Training": "The trainer pod is running.",
    "Retrying": "A trainer pod failed with a retriable error; the Job starts another one.",
    "Preempted": "The trainer pod was evicted or preempted; it resumes from the last checkpoint.",
    "SuspendRequested": "spec.suspend is true.",
    "Resumed": "spec.suspend went back to false.",
    "CollectingResults": "The Job completed but its pod was gone before the summary was read; a collector Job "
    "re-reads it from <output>/summary.json.",
    "TrainingSucceeded": "The trainer wrote the adapter, the evaluation and the manifest.",
    "DataInvalid": "Too little usable data after cleaning, or the data could not be parsed.",
    "ConfigInvalid": "The trainer refused the configuration (e.g. an unknown model architecture).",
    "InputUnavailable": "An input (model, data) does not exist or access to it is denied.",
    "OutputPrefixInUse": "spec.output.uri holds another run's outputs (another FineTuneJob uid); set "
    "spec.output.onExisting to Overwrite or Resume, or use another prefix.",
    "EvaluationGateNotMet": "The tuned model missed spec.evaluation.gate; its adapter is under rejected/ and the "
    "status shows the tuned and base numbers.",
    "OOMKilled": "The trainer container ran out of memory.",
    "WorkspaceFull": "The kubelet evicted the trainer pod: its work directory outgrew resources.scratchSize.",
    "DeadlineExceeded": "The Job ran longer than spec.activeDeadlineSeconds.",
    "ImagePullFailed": "The trainer image could not be pulled.",
    "BackoffLimitExceeded": "Trainer pods failed more often than spec.backoffLimit allows.",
    "JobDeleted": "The trainer Job disappeared before finishing; it is not recreated, to avoid retraining.",
    "JobConflict": "A Job with the child's name exists and is not controlled by this FineTuneJob.",
    "LocalPathOnCluster": "baseModel.uri or output.uri is a path in the pod, which nothing backs on a cluster "
    "(the spec cannot mount a volume); use s3:// (or hf://). Only `ftjob local` runs such specs.",
    "LoopbackEndpoint": "spec.storage.endpointUrl is on loopback, which in a trainer pod is the pod itself; use "
    "the object store's Service or address.",
    "JobRejected": "The API server refused to create the Job (e.g. a quota or an admission policy).",
    "StorageUnreachable": "The object store did not answer; the Job retries.",
    "Interrupted": "The trainer was stopped by SIGTERM after saving a checkpoint.",
    "TrainerFailed": "The trainer failed; the message holds its last words.",
}

# Event reasons that are not condition reasons (Events mark moments; conditions hold states).
EVENT_REASONS: Final[dict[str, str]] = {
    "JobCreated": "The operator created the trainer Job.",
    "JobAdopted": "A Job with the child's name, controlled by this FineTuneJob, was adopted after a restart.",
    "SpecInvalid": "The spec broke a cross-field rule; no Job is created.",
    "TrainingStarted": "A trainer pod started running.",
    "TrainingRetrying": "A trainer pod failed with a retriable error; the Job starts another.",
    "TrainingSucceeded": "The trainer finished and published its results.",
    "TrainingFailed": "The job ended without a result.",
    "Queued": "Kueue holds the Job until it admits it.",
    "Admitted": "Kueue admitted the Job.",
    "Suspended": "spec.suspend stopped the job; the trainer checkpointed.",
    "Resumed": "spec.suspend went back to false; training resumes from the checkpoint.",
}

Phase = Literal["Pending", "Queued", "Running", "Suspended", "Succeeded", "Failed"]
TERMINAL_PHASES: Final = ("Succeeded", "Failed")
