"""(FineTuneJob, Job, pods, progress, now) -> status: a pure function, the whole story of a job.

Only fields declared in the CRD's status schema are produced. Every condition carries the generation it
was computed from; its lastTransitionTime moves only when its status changes (see conditions.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from pydantic import ValidationError

from ftjob.api import FineTuneJobSpec, format_validation_errors
from ftjob.api.conditions import ADMITTED, FAILED, RUNNING, SUCCEEDED, SUSPENDED, TERMINAL_PHASES, VALIDATED
from ftjob.api.storage import loopback_endpoint_problem
from ftjob.api.uris import join_uri
from ftjob.contract import GATE_NOT_MET, SUMMARY_FILE, ExitCode, ProgressRecord, TerminationSummary

from .conditions import ConditionSet, reason_of, timestamp
from .names import JsonDict, Ownership, job_name, ownership
from .observe import (
    CollectorRun,
    Pods,
    disruption,
    is_deleting,
    job_counts,
    job_outcome,
    pod_phase,
    summary_of,
    trainer_terminated,
)
from .progress import finished_progress, progress_status
from .redact import redact
from .render import (
    WORKSPACE_VOLUME,
    active_deadline_seconds,
    is_kueue_managed,
    validated_spec,
    workspace_size_limit,
)
from .settings import OperatorSettings

USER_ERROR_REASONS: Final = {
    int(ExitCode.CONFIG_INVALID): "ConfigInvalid",
    int(ExitCode.DATA_INVALID): "DataInvalid",
    int(ExitCode.INPUT_UNAVAILABLE): "InputUnavailable",
    int(ExitCode.OUT_OF_MEMORY): "OutOfMemory",
    int(ExitCode.OUTPUT_PREFIX_IN_USE): "OutputPrefixInUse",
    int(ExitCode.EVALUATION_GATE_NOT_MET): GATE_NOT_MET,
}
"""Condition reason of each exit code that fails the Job at once (podFailurePolicy FailJob)."""

LOCAL_PATH_ON_CLUSTER: Final = "LocalPathOnCluster"
LOOPBACK_ENDPOINT: Final = "LoopbackEndpoint"
"""spec.storage.endpointUrl on loopback: in the trainer pod that is the pod itself."""
"""A model or output location on the pod's own filesystem, which nothing backs on a cluster."""

JOB_REJECTED: Final = "JobRejected"
"""The API server refused to create the Job (a 4xx other than conflict or throttling)."""

QUOTA_EXCEEDED: Final = "QuotaExceeded"
"""The namespace used its GPU-hours for the month (FineTuneJobPolicy spec.gpuHoursPerMonth): no Job yet."""

COLLECTING_RESULTS: Final = "CollectingResults"
"""The Job completed without a pod to read the summary from: the collector Job re-reads it from storage."""

WORKSPACE_FULL: Final = "WorkspaceFull"
"""The kubelet evicted the pod because the work directory outgrew its sizeLimit: the next pod would too."""

DELETE_JOB_ON: Final = frozenset({"ImagePullFailed", "InputUnavailable", WORKSPACE_FULL})
"""Failures found on a pod that would otherwise wait forever, holding its GPU: the Job is deleted."""

# Status fields that describe the whole run and survive from one derivation to the next.
_CARRIED: Final = ("jobName", "startTime", "attempts", "progress", "dataset", "metrics", "artifacts")


def is_terminal(status: JsonDict | None) -> bool:
    return (status or {}).get("phase") in TERMINAL_PHASES


class _Builder:
    def __init__(self, ftj: JsonDict, now: datetime) -> None:
        self.old: JsonDict = dict(ftj.get("status") or {})
        self.generation: int | None = (ftj.get("metadata") or {}).get("generation")
        self.now = now
        self.conditions = ConditionSet(self.old.get("conditions") or [], self.generation, now)
        self.out: JsonDict = {key: self.old[key] for key in _CARRIED if self.old.get(key) is not None}

    def finish(self, phase: str, message: str) -> JsonDict:
        out: JsonDict = {}
        if self.generation is not None:
            out["observedGeneration"] = self.generation
        out["phase"] = phase
        out["conditions"] = [
            {**c, "message": redact(str(c.get("message") or ""))} for c in self.conditions.as_list()
        ]
        out.update(self.out)
        out["message"] = redact(message)
        if phase in TERMINAL_PHASES:
            out.setdefault("completionTime", timestamp(self.now))
        return out

    def fail(self, reason: str, message: str) -> JsonDict:
        self.conditions.keep(VALIDATED)
        self.conditions.keep(ADMITTED)
        self.conditions.keep(SUSPENDED)
        if self.conditions.previous(RUNNING) is not None or self.out.get("jobName"):
            self.conditions.set(RUNNING, "False", reason, message)
        self.conditions.set(FAILED, "True", reason, message)
        return self.finish("Failed", message)

    def copy_summary(self, summary: TerminationSummary | None) -> None:
        if summary is None:
            return
        for key, value in (
            ("metrics", summary.metrics),
            ("dataset", summary.dataset),
            ("artifacts", summary.artifacts),
        ):
            if value is not None:
                self.out[key] = value.model_dump(mode="json", by_alias=True, exclude_none=True)


def derive_status(
    ftj: JsonDict,
    job: JsonDict | None,
    pods: Sequence[JsonDict],
    progress: ProgressRecord | None,
    now: datetime,
    settings: OperatorSettings,
    collector: CollectorRun | None = None,
    quota_block: str | None = None,
) -> JsonDict:
    """The status that tells what became of `ftj`, given what is observed now (`collector`: the Job that
    re-reads the summary from the output prefix, observed when the Job completed without a pod to read).

    A terminal status (Succeeded, Failed) is final: only its observedGeneration follows the object.
    """
    b = _Builder(ftj, now)
    if is_terminal(b.old):
        frozen = dict(b.old)
        if b.generation is not None:
            frozen["observedGeneration"] = b.generation
        return frozen
    try:
        spec = validated_spec(ftj)
    except ValidationError as exc:
        problems = format_validation_errors(exc, prefix="spec")
        message = "Invalid spec: " + "; ".join(problems)
        if _validated_before(b):
            # This very generation passed validation already: the spec did not change, the reader did (a
            # newer CRD read by an older operator). Never a terminal InvalidSpec for a job that may be
            # training: the status stays as it was, and the Job is left alone until an operator that
            # understands the spec takes over.
            kept = dict(b.old)
            kept["message"] = redact(
                "This operator cannot read the spec it validated before (is the CRD newer than the operator?); "
                "the job is left as it is: " + message
            )[:4096]
            return kept
        b.conditions.set(VALIDATED, "False", "InvalidSpec", message)
        b.conditions.set(FAILED, "True", "InvalidSpec", message)
        return b.finish("Failed", message)
    endpoint = spec.storage.endpoint_url
    loopback = (
        loopback_endpoint_problem(endpoint) if endpoint and not settings.allow_loopback_endpoints else None
    )
    if loopback is not None and not _validated_before(b):
        message = (
            f"spec.storage.endpointUrl: {endpoint} {loopback}; use the object store's Service or address."
        )
        b.conditions.set(VALIDATED, "False", LOOPBACK_ENDPOINT, message)
        b.conditions.set(FAILED, "True", LOOPBACK_ENDPOINT, message)
        return b.finish("Failed", message)
    local = local_path_fields(spec)
    if local and not _validated_before(b):
        message = (
            "; ".join(f"spec.{path}: {uri} is a path inside the pod" for path, uri in local)
            + ". On a cluster the trainer pod has only temporary volumes (a FineTuneJob cannot mount one), so "
            "a model read from there does not exist and results written there vanish with the pod; use s3:// "
            "(or hf:// for the model). `ftjob local` runs such specs on this machine."
        )
        b.conditions.set(VALIDATED, "False", LOCAL_PATH_ON_CLUSTER, message)
        b.conditions.set(FAILED, "True", LOCAL_PATH_ON_CLUSTER, message)
        return b.finish("Failed", message)
    b.conditions.set(VALIDATED, "True", "SpecValid", "The spec passed validation.")
    name = ftj["metadata"]["name"]

    if job is not None:
        owner = ownership(job, ftj)
        if owner is Ownership.FOREIGN:
            return b.fail(
                "JobConflict",
                f"A Job named {job_name(name)} already exists and is not controlled by this FineTuneJob; "
                "delete or rename that Job, then re-create this FineTuneJob.",
            )
        if owner is Ownership.STALE:
            b.conditions.keep(ADMITTED)
            return b.finish(
                "Pending",
                f"Waiting for the garbage collector to delete the Job {job_name(name)} left by an earlier "
                "FineTuneJob of the same name.",
            )

    if job is None:
        return _without_job(b, spec, settings, quota_block)

    b.out["jobName"] = job["metadata"]["name"]
    p = Pods.of(pods)
    attempts = max(int(b.out.get("attempts") or 0), p.started, job_counts(job))
    if attempts:
        b.out["attempts"] = attempts
    if "startTime" not in b.out and p.first_start:
        b.out["startTime"] = p.first_start

    outcome = job_outcome(job)
    if outcome is not None and outcome[0] == "Complete":
        return _succeeded(b, spec, job, p, collector)
    if outcome is not None:
        return _failed(b, spec, outcome[1], p, settings)
    problem = p.problem(now, settings.image_pull_grace_seconds)
    if problem is not None:
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

    if spec.suspend:
        return _suspended(b, spec, p)
    _mark_resumed(b)
    if is_kueue_managed(spec) and (job.get("spec") or {}).get("suspend"):
        return _queued(b, spec, p)
    _admit(b, spec)
    return _active(b, spec, p, progress)


def local_path_fields(spec: FineTuneJobSpec) -> list[tuple[str, str]]:
    """(field path, value) of every location that would be a path in the trainer pod's filesystem.

    The spec cannot mount volumes, so on a cluster such a path is backed by nothing that outlives the pod.
    """
    found: list[tuple[str, str]] = []
    if not spec.base_model.uri.startswith(("hf://", "s3://")):
        found.append(("baseModel.uri", spec.base_model.uri))
    if not spec.output.uri.startswith("s3://"):
        found.append(("output.uri", spec.output.uri))
    return found


def _validated_before(b: _Builder) -> bool:
    """Validated=True was already recorded for the generation being derived."""
    previous = b.conditions.previous(VALIDATED) or {}
    return (
        previous.get("status") == "True"
        and b.generation is not None
        and previous.get("observedGeneration") == b.generation
    )


def failed_status(ftj: JsonDict, reason: str, message: str, now: datetime) -> JsonDict:
    """A Failed status for a failure found outside derive_status (e.g. the API refused the Job)."""
    b = _Builder(ftj, now)
    return b.fail(reason, message)


def _without_job(
    b: _Builder, spec: FineTuneJobSpec, settings: OperatorSettings, quota_block: str | None = None
) -> JsonDict:
    if spec.suspend:
        return _suspended(b, spec, Pods(()))
    if quota_block is not None and not b.out.get("jobName"):
        b.conditions.set(ADMITTED, "False", QUOTA_EXCEEDED, quota_block)
        return b.finish("Queued", quota_block)
    previous = b.conditions.previous(SUSPENDED)
    resuming = previous is not None and previous.get("status") == "True"
    if b.out.get("jobName") and not resuming:
        # Recreating it would silently train again from scratch or from an old checkpoint.
        return b.fail(
            "JobDeleted",
            f"The Job {b.out['jobName']} was deleted before it finished; it is not recreated, to avoid training "
            "again. Delete and re-create the FineTuneJob to train again: with spec.output.onExisting Resume to "
            "continue from its last checkpoint, Overwrite to start over (the new uid is refused otherwise).",
        )
    _mark_resumed(b)
    if is_kueue_managed(spec):
        b.conditions.set(
            ADMITTED,
            "False",
            "Queued",
            f"Waiting for Kueue to admit the Job (LocalQueue {spec.scheduling.queue_name}).",
        )
    else:
        _admit(b, spec)
    return b.finish("Pending", "Creating the trainer Job.")


def _mark_resumed(b: _Builder) -> None:
    previous = b.conditions.previous(SUSPENDED)
    if previous is None:
        return
    if previous.get("status") == "True":
        b.conditions.set(
            SUSPENDED,
            "False",
            "Resumed",
            "spec.suspend is false again; training resumes from the last checkpoint.",
        )
    else:
        b.conditions.keep(SUSPENDED)


def _admit(b: _Builder, spec: FineTuneJobSpec) -> None:
    if is_kueue_managed(spec):
        b.conditions.set(
            ADMITTED, "True", "Admitted", f"Kueue admitted the Job (LocalQueue {spec.scheduling.queue_name})."
        )
    else:
        b.conditions.set(
            ADMITTED, "True", "NoQueue", "No Kueue queue is set; the Job runs as soon as it is created."
        )


def _suspended(b: _Builder, spec: FineTuneJobSpec, p: Pods) -> JsonDict:
    if is_kueue_managed(spec):
        b.conditions.set(
            ADMITTED, "False", "SuspendRequested", "spec.suspend is true; the Job was removed from the queue."
        )
    else:
        _admit(b, spec)
    stopping = p.stopping + (1 if p.running is not None else 0)
    if stopping:
        message = f"Suspending: {stopping} trainer pod(s) received SIGTERM and are saving a checkpoint."
    else:
        message = "Suspended (spec.suspend is true); set it to false to resume from the last checkpoint."
    if b.conditions.previous(RUNNING) is not None:
        b.conditions.set(RUNNING, "False", "SuspendRequested", message)
    b.conditions.set(SUSPENDED, "True", "SuspendRequested", message)
    return b.finish("Suspended", message)


def _queued(b: _Builder, spec: FineTuneJobSpec, p: Pods) -> JsonDict:
    queue = spec.scheduling.queue_name
    admitted_before = b.conditions.previous(ADMITTED) or {}
    if admitted_before.get("status") == "True" and admitted_before.get("reason") == "Admitted":
        # Kueue suspended an admitted Job again: its workload was preempted or evicted.
        message = f"Kueue suspended the Job (preempted or evicted); it resumes from the last checkpoint when LocalQueue {queue} admits it again."
        b.conditions.set(RUNNING, "False", "Preempted", message)
    else:
        message = f"Waiting for Kueue to admit the Job (LocalQueue {queue})."
        b.conditions.set(RUNNING, "False", "Queued", message)
    b.conditions.set(ADMITTED, "False", "Queued", message)
    return b.finish("Queued", message)


def _active(b: _Builder, spec: FineTuneJobSpec, p: Pods, progress: ProgressRecord | None) -> JsonDict:
    running = p.running
    if running is not None:
        if progress is not None:
            b.out["progress"] = progress_status(progress, b.out.get("progress"))
        message = _training_message(b.out.get("progress"), int(b.out.get("attempts") or 1))
        b.conditions.set(RUNNING, "True", "Training", message)
        return b.finish("Running", message)

    phase = "Running" if b.out.get("startTime") else "Pending"
    previous_attempt = _last_finished(p)
    newest = p.newest
    if newest is None:
        message = f"Waiting for the Job {b.out.get('jobName')} to start a trainer pod."
        b.conditions.set(RUNNING, "False", "JobCreated", message)
        return b.finish(phase, message)
    if p.succeeded is not None:
        # The pod is done and the Job controller has not recorded it yet: a moment, not a state to report.
        b.conditions.keep(RUNNING)
        return b.finish(phase, "The trainer finished; waiting for the Job to complete.")
    if previous_attempt is not None and (full := _workspace_full(previous_attempt, spec)) is not None:
        return b.fail(WORKSPACE_FULL, full + " The Job was deleted instead of evicting pod after pod.")
    if previous_attempt is not None and disruption(previous_attempt) is not None:
        cause = disruption(previous_attempt) or {}
        message = (
            f"Pod {previous_attempt['metadata'].get('name')} was disrupted ({cause.get('reason') or 'DisruptionTarget'}"
            f"{': ' + str(cause['message']) if cause.get('message') else ''}); the Job starts another pod, which "
            "resumes from the last checkpoint."
        )
        b.conditions.set(RUNNING, "False", "Preempted", message)
        return b.finish(phase, message)
    if previous_attempt is not None:
        message = (
            f"Attempt {int(b.out.get('attempts') or 1)} failed ({_why_failed(previous_attempt)}); the Job retries "
            f"(backoffLimit {spec.backoff_limit}), resuming from the last checkpoint."
        )
        b.conditions.set(RUNNING, "False", "Retrying", message)
        return b.finish(phase, message)
    if is_deleting(newest):
        message = (
            f"The trainer pod {newest['metadata'].get('name')} is being deleted; the Job starts another one."
        )
        b.conditions.set(RUNNING, "False", "Retrying", message)
        return b.finish(phase, message)
    waiting = p.pending_message()
    message = "The trainer pod is waiting to start" + (f" ({waiting})." if waiting else ".")
    b.conditions.set(RUNNING, "False", "PodPending", message)
    return b.finish(phase, message)


def _workspace_full(pod: JsonDict, spec: FineTuneJobSpec) -> str | None:
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


def _last_finished(p: Pods) -> JsonDict | None:
    """The newest pod that ended without success, when no newer pod is running already."""
    for pod in reversed(p.items):
        if pod_phase(pod) == "Failed" or disruption(pod) is not None:
            return pod
        if pod_phase(pod) == "Running":
            return None
    return None


def _why_failed(pod: JsonDict) -> str:
    terminated = trainer_terminated(pod) or {}
    if terminated.get("reason") == "OOMKilled":
        return "OOMKilled: the trainer ran out of memory"
    summary = summary_of(pod)
    if summary is not None and summary.message:
        return f"{summary.reason}: {summary.message}"
    if "exitCode" in terminated:
        return f"exit code {terminated['exitCode']}"
    return str((pod.get("status") or {}).get("reason") or "pod failed")


def _training_message(progress: JsonDict | None, attempt: int) -> str:
    prefix = "Training" if attempt <= 1 else f"Training (attempt {attempt})"
    if not progress:
        return prefix + "."
    parts = []
    if progress.get("stage") and progress.get("stage") != "training":
        parts.append(str(progress["stage"]))
    if progress.get("totalSteps"):
        parts.append(
            f"step {progress.get('step', 0)}/{progress['totalSteps']} ({progress.get('percent', 0)}%)"
        )
    if progress.get("loss") is not None:
        parts.append(f"loss {float(progress['loss']):.4g}")
    if progress.get("etaSeconds") is not None:
        parts.append(f"ETA {_duration(int(progress['etaSeconds']))}")
    return prefix + (": " + ", ".join(parts) if parts else "") + "."


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _succeeded(
    b: _Builder, spec: FineTuneJobSpec, job: JsonDict, p: Pods, collector: CollectorRun | None
) -> JsonDict:
    pod = p.succeeded
    summary = summary_of(pod)
    summary_file = join_uri(spec.output.uri, SUMMARY_FILE)
    if pod is None:
        # The pod garbage collector (or a person) removed the pod before its termination message was read:
        # the collector Job re-reads the summary the trainer also wrote under the output prefix.
        if collector is None or collector.outcome is None:
            return _collecting(b, job, summary_file)
        summary = collector.summary
    b.copy_summary(summary)
    b.out["progress"] = finished_progress(b.out.get("progress"))
    completion = (job.get("status") or {}).get("completionTime")
    if completion:
        b.out["completionTime"] = completion
    if summary is not None and summary.message:
        message = summary.message
        if pod is None:
            message = f"{message} (re-read from {summary_file}: the trainer pod was gone)"
    elif summary is not None:
        message = "Training finished; the adapter, the evaluation and the manifest were written."
    elif pod is None and collector is not None:
        message = (
            "The Job completed, but its trainer pod was removed before the operator read the summary, and "
            f"{summary_file} could not be re-read ({collector.failure()}), so the status has no metrics or "
            f"artifacts; look under {spec.output.uri}."
        )
    else:
        message = "The trainer exited successfully but left no summary; see its logs."
    eval_loss = (b.out.get("metrics") or {}).get("evalLoss")
    if eval_loss is not None and "eval loss" not in message.lower():
        message = f"{message} (eval loss {float(eval_loss):.4g})"
    b.conditions.keep(VALIDATED)
    b.conditions.keep(ADMITTED)
    b.conditions.keep(SUSPENDED)
    b.conditions.set(RUNNING, "False", "TrainingSucceeded", message)
    b.conditions.set(SUCCEEDED, "True", "TrainingSucceeded", message)
    return b.finish("Succeeded", message)


def _collecting(b: _Builder, job: JsonDict, summary_file: str) -> JsonDict:
    message = (
        f"The Job {job['metadata']['name']} completed, but its trainer pod was removed before the operator "
        f"read the summary; re-reading it from {summary_file}."
    )
    b.out["progress"] = finished_progress(b.out.get("progress"))
    b.conditions.keep(VALIDATED)
    b.conditions.keep(ADMITTED)
    b.conditions.keep(SUSPENDED)
    b.conditions.set(RUNNING, "False", COLLECTING_RESULTS, message)
    return b.finish("Running", message)


def is_held_by_quota(status: JsonDict) -> bool:
    return reason_of(status.get("conditions") or [], ADMITTED) == QUOTA_EXCEEDED


def is_collecting(status: JsonDict) -> bool:
    return reason_of(status.get("conditions") or [], RUNNING) == COLLECTING_RESULTS


def _failed(
    b: _Builder, spec: FineTuneJobSpec, condition: JsonDict, p: Pods, settings: OperatorSettings
) -> JsonDict:
    pod = p.last_failed
    summary = summary_of(pod)
    b.copy_summary(summary)
    terminated = (trainer_terminated(pod) if pod is not None else None) or {}
    job_reason = str(condition.get("reason") or "")
    job_message = str(condition.get("message") or "")
    last_words = summary.message if summary is not None and summary.message else ""

    full = _workspace_full(pod, spec) if pod is not None else None
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
                f"the pod was disrupted ({cause.get('reason') or 'DisruptionTarget'}"
                f"{': ' + str(cause['message']) if cause.get('message') else ''}); disruptions count against "
                "backoffLimit"
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
