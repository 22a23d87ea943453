"""Failed, and the retries before it: why an attempt or the Job failed, and which failures end it at once.

Exit codes that retrying cannot fix, a full workspace and an image that never arrives fail the job without
waiting out backoffLimit; a disrupted or failed attempt is retried from the last checkpoint.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from ftjob.api import FineTuneJobSpec
from ftjob.api.conditions import RUNNING
from ftjob.contract import GATE_NOT_MET, ExitCode

from .messages import disruption_detail
from .names import JsonDict
from .observe import Pods, disruption, pod_phase, summary_of, trainer_terminated
from .render import WORKSPACE_VOLUME, active_deadline_seconds, workspace_size_limit
from .settings import OperatorSettings
from .status_builder import StatusBuilder

USER_ERROR_REASONS: Final = {
    int(ExitCode.CONFIG_INVALID): "ConfigInvalid",
    int(ExitCode.DATA_INVALID): "DataInvalid",
    int(ExitCode.INPUT_UNAVAILABLE): "InputUnavailable",
    int(ExitCode.OUT_OF_MEMORY): "OutOfMemory",
    int(ExitCode.OUTPUT_PREFIX_IN_USE): "OutputPrefixInUse",
    int(ExitCode.EVALUATION_GATE_NOT_MET): GATE_NOT_MET,
}
"""Condition reason of each exit code that fails the Job at once (podFailurePolicy FailJob)."""

JOB_REJECTED: Final = "JobRejected"
"""The API server refused to create the Job (a 4xx other than conflict or throttling)."""

WORKSPACE_FULL: Final = "WorkspaceFull"
"""The kubelet evicted the pod because the work directory outgrew its sizeLimit: the next pod would too."""

DELETE_JOB_ON: Final = frozenset({"ImagePullFailed", "InputUnavailable", WORKSPACE_FULL})
"""Failures found on a pod that would otherwise wait forever, holding its GPU: the Job is deleted."""


def failed_status(ftj: JsonDict, reason: str, message: str, now: datetime) -> JsonDict:
    """A Failed status for a failure found outside derive_status (e.g. the API refused the Job)."""
    b = StatusBuilder(ftj, now)
    return b.fail(reason, message)


def pod_problem(
    b: StatusBuilder, spec: FineTuneJobSpec, p: Pods, now: datetime, settings: OperatorSettings
) -> JsonDict | None:
    """The Failed status of a pod that cannot start: its image cannot be pulled or its container configured."""
    problem = p.problem(now, settings.image_pull_grace_seconds)
    if problem is None:
        return None
    detail = (
        f"{problem.kubelet_reason}: {problem.message}"
        if problem.message != problem.kubelet_reason
        else problem.message
    )
    if problem.reason == "ImagePullFailed":
        image = spec.image or settings.trainer_image
        message = f"The trainer image {image} could not be pulled ({detail}); the Job was deleted to free its resources."
    else:
        message = f"The trainer container could not be configured ({detail}); the Job was deleted to free its resources."
    return b.fail(problem.reason, message)


def after_failed_attempt(b: StatusBuilder, spec: FineTuneJobSpec, p: Pods, phase: str) -> JsonDict | None:
    """The status while the Job replaces a failed or disrupted pod (None: no attempt failed since the last
    pod ran); Failed when the next attempt would fill the workspace again."""
    previous_attempt = last_finished(p)
    if previous_attempt is None:
        return None
    if (full := workspace_full(previous_attempt, spec)) is not None:
        return b.fail(WORKSPACE_FULL, full + " The Job was deleted instead of evicting pod after pod.")
    cause = disruption(previous_attempt)
    if cause is not None:
        message = (
            f"Pod {previous_attempt['metadata'].get('name')} was disrupted ({disruption_detail(cause)}); the Job "
            "starts another pod, which resumes from the last checkpoint."
        )
        b.conditions.set(RUNNING, "False", "Preempted", message)
        return b.finish(phase, message)
    message = (
        f"Attempt {int(b.out.get('attempts') or 1)} failed ({why_failed(previous_attempt)}); the Job retries "
        f"(backoffLimit {spec.backoff_limit}), resuming from the last checkpoint."
    )
    b.conditions.set(RUNNING, "False", "Retrying", message)
    return b.finish(phase, message)


def job_failed(
    b: StatusBuilder, spec: FineTuneJobSpec, condition: JsonDict, p: Pods, settings: OperatorSettings
) -> JsonDict:
    """The Failed status of a Job whose Failed `condition` is set, with the reason read from its last pod."""
    pod = p.last_failed
    summary = summary_of(pod)
    b.copy_summary(summary)
    terminated = (trainer_terminated(pod) if pod is not None else None) or {}
    job_reason = str(condition.get("reason") or "")
    job_message = str(condition.get("message") or "")
    last_words = summary.message if summary is not None and summary.message else ""

    full = workspace_full(pod, spec) if pod is not None else None
    if full is not None:
        reason, message = WORKSPACE_FULL, full
    elif job_reason == "DeadlineExceeded":
        reason = "DeadlineExceeded"
        deadline = active_deadline_seconds(spec, settings)
        origin = "" if spec.active_deadline_seconds is not None else ", the operator's default"
        message = f"The Job ran longer than activeDeadlineSeconds ({deadline} s{origin}) and was stopped."
    elif job_reason == "PodFailurePolicy":
        code = terminated.get("exitCode")
        if summary is not None and summary.reason in USER_ERROR_REASONS.values():
            reason = summary.reason
        else:
            reason = (
                USER_ERROR_REASONS.get(code, "TrainerFailed") if isinstance(code, int) else "TrainerFailed"
            )
        message = last_words or job_message or f"The trainer exited with code {code}."
    elif terminated.get("reason") == "OOMKilled":
        reason = "OOMKilled"
        message = (
            f"The trainer ran out of memory (limit {spec.resources.memory}) on its last attempt; raise "
            "spec.resources.memory or lower the batch size or sequence length."
        )
    elif job_reason == "BackoffLimitExceeded":
        reason = "BackoffLimitExceeded"
        cause = disruption(pod) if pod is not None else None
        if cause is not None:
            # Preemptions and evictions count too: the same eviction (a full disk) would repeat forever.
            last = (
                f"the pod was disrupted ({disruption_detail(cause)}); disruptions count against backoffLimit"
            )
        else:
            last = last_words or (
                f"exit code {terminated['exitCode']}" if "exitCode" in terminated else job_message
            )
        message = f"The trainer failed more often than backoffLimit ({spec.backoff_limit}) allows. Last attempt: {last}"
    else:
        reason = "TrainerFailed"
        message = last_words or job_message or "The Job failed."
    completion = condition.get("lastTransitionTime")
    if completion:
        b.out["completionTime"] = completion
    return b.fail(reason, message)


def workspace_full(pod: JsonDict, spec: FineTuneJobSpec) -> str | None:
    """Why the kubelet evicted `pod` for outgrowing its work directory (None: it did not). Unlike a
    preemption, retrying cannot help: the same data, model and checkpoints fill the same space again."""
    status = pod.get("status") or {}
    message = str(status.get("message") or "")
    if status.get("reason") != "Evicted" or f'EmptyDir volume "{WORKSPACE_VOLUME}"' not in message:
        return None
    return (
        f"The kubelet evicted the trainer pod {pod['metadata'].get('name')}: {message.strip()} The work directory "
        f"(limit {workspace_size_limit(spec)}) holds the model, the data and checkpoints; raise "
        "spec.resources.scratchSize."
    )


def last_finished(p: Pods) -> JsonDict | None:
    """The newest pod that ended without success, when no newer pod is running already."""
    for pod in reversed(p.items):
        if pod_phase(pod) == "Failed" or disruption(pod) is not None:
            return pod
        if pod_phase(pod) == "Running":
            return None
    return None


def why_failed(pod: JsonDict) -> str:
    terminated = trainer_terminated(pod) or {}
    if terminated.get("reason") == "OOMKilled":
        return "OOMKilled: the trainer ran out of memory"
    summary = summary_of(pod)
    if summary is not None and summary.message:
        return f"{summary.reason}: {summary.message}"
    if "exitCode" in terminated:
        return f"exit code {terminated['exitCode']}"
    return str((pod.get("status") or {}).get("reason") or "pod failed")
