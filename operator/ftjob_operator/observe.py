"""Reading a Job and its pods the way the Job controller and the kubelet wrote them (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from ftjob import contract
from ftjob.contract import TerminationSummary

from .conditions import parse_time
from .names import JsonDict

COMPLETION_INDEX: Final = "batch.kubernetes.io/job-completion-index"
IMAGE_PULL_RETRYING: Final = frozenset({"ErrImagePull", "ImagePullBackOff"})
IMAGE_PULL_HOPELESS: Final = frozenset({"InvalidImageName", "ErrImageNeverPull"})
CONFIG_ERRORS: Final = frozenset({"CreateContainerConfigError"})
"""The kubelet cannot build the container (a missing Secret or key): retried until someone fixes it."""


def job_condition(job: JsonDict, type_: str) -> JsonDict | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return dict(condition)
    return None


def job_outcome(job: JsonDict) -> tuple[str, JsonDict] | None:
    """("Complete" | "Failed", the deciding condition), or None while the Job is still undecided.

    Since Kubernetes 1.31 the controller first adds SuccessCriteriaMet/FailureTarget and only adds
    Complete/Failed once every pod has terminated; the outcome is already fixed at the first.
    """
    for type_, outcome in (
        ("Failed", "Failed"),
        ("FailureTarget", "Failed"),
        ("Complete", "Complete"),
        ("SuccessCriteriaMet", "Complete"),
    ):
        condition = job_condition(job, type_)
        if condition is not None:
            return outcome, condition
    return None


def is_deleting(obj: JsonDict | None) -> bool:
    return obj is not None and bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def trainer_status(pod: JsonDict) -> JsonDict | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == contract.CONTAINER_NAME:
            return dict(status)
    return None


def trainer_terminated(pod: JsonDict) -> JsonDict | None:
    status = trainer_status(pod)
    if status is None:
        return None
    for key in ("state", "lastState"):
        terminated = (status.get(key) or {}).get("terminated")
        if terminated:
            return dict(terminated)
    return None


def trainer_waiting(pod: JsonDict) -> JsonDict | None:
    status = trainer_status(pod)
    waiting = ((status or {}).get("state") or {}).get("waiting")
    return dict(waiting) if waiting else None


def pod_phase(pod: JsonDict) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def is_running(pod: JsonDict) -> bool:
    status = trainer_status(pod)
    running = ((status or {}).get("state") or {}).get("running")
    return pod_phase(pod) == "Running" and bool(running) and not is_deleting(pod)


def completion_index(pod: JsonDict) -> int | None:
    """The pod's index in an Indexed Job (None for other Jobs)."""
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(COMPLETION_INDEX)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def disruption(pod: JsonDict) -> JsonDict | None:
    """The DisruptionTarget condition (preemption, eviction, node drain), when the pod has one."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            return dict(condition)
    return None


def summary_of(pod: JsonDict | None) -> TerminationSummary | None:
    if pod is None:
        return None
    terminated = trainer_terminated(pod)
    return TerminationSummary.parse((terminated or {}).get("message"))


def _created(pod: JsonDict) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")


@dataclass(frozen=True)
class PodProblem:
    """A pod that cannot start and will not by itself: the job fails with this reason."""

    reason: str
    kubelet_reason: str
    message: str


@dataclass(frozen=True)
class Pods:
    """The trainer pods of one Job, oldest first."""

    items: tuple[JsonDict, ...]

    @classmethod
    def of(cls, pods: Sequence[JsonDict]) -> Pods:
        return cls(tuple(sorted(pods, key=_created)))

    @property
    def newest(self) -> JsonDict | None:
        return self.items[-1] if self.items else None

    @property
    def running(self) -> JsonDict | None:
        """The newest running trainer; of a multi-node run, the pod of index 0 (global rank 0 prints the
        progress)."""
        for pod in reversed(self._leaders()):
            if is_running(pod):
                return pod
        return None

    @property
    def succeeded(self) -> JsonDict | None:
        """The newest succeeded trainer; of a multi-node run, the pod of index 0 (whose termination message
        holds the run's summary; the others' say only that they finished)."""
        for pod in reversed(self._leaders()):
            if pod_phase(pod) == "Succeeded":
                return pod
        return None

    def _leaders(self) -> tuple[JsonDict, ...]:
        indexed = [pod for pod in self.items if completion_index(pod) is not None]
        if not indexed:
            return self.items
        return tuple(pod for pod in self.items if completion_index(pod) == 0)

    @property
    def last_failed(self) -> JsonDict | None:
        for pod in reversed(self.items):
            if pod_phase(pod) == "Failed" or (trainer_terminated(pod) or {}).get("exitCode", 0) != 0:
                return pod
        return None

    @property
    def stopping(self) -> int:
        """Pods being deleted that have not finished yet (a trainer saving its checkpoint)."""
        return sum(
            1 for pod in self.items if is_deleting(pod) and pod_phase(pod) not in ("Succeeded", "Failed")
        )

    @property
    def started(self) -> int:
        return sum(1 for pod in self.items if (pod.get("status") or {}).get("startTime"))

    @property
    def first_start(self) -> str | None:
        for pod in self.items:
            status = trainer_status(pod) or {}
            for key in ("state", "lastState"):
                state = status.get(key) or {}
                started = (state.get("running") or state.get("terminated") or {}).get("startedAt")
                if started:
                    return str(started)
        return None

    def problem(self, now: datetime, grace_seconds: float) -> PodProblem | None:
        """The newest pod is stuck on its image or its configuration for longer than the grace period."""
        pod = self.newest
        if pod is None or pod_phase(pod) != "Pending" or is_deleting(pod):
            return None
        waiting = trainer_waiting(pod)
        if waiting is None:
            return None
        kubelet_reason = str(waiting.get("reason") or "")
        message = str(waiting.get("message") or kubelet_reason)
        since = parse_time((pod.get("status") or {}).get("startTime")) or parse_time(
            (pod.get("metadata") or {}).get("creationTimestamp")
        )
        overdue = since is None or (now - since).total_seconds() >= grace_seconds
        if kubelet_reason in IMAGE_PULL_HOPELESS or (kubelet_reason in IMAGE_PULL_RETRYING and overdue):
            return PodProblem("ImagePullFailed", kubelet_reason, message)
        if kubelet_reason in CONFIG_ERRORS and overdue:
            return PodProblem("InputUnavailable", kubelet_reason, message)
        return None

    def pending_message(self) -> str:
        """Why the newest pod is not running yet, in the scheduler's or kubelet's words."""
        pod = self.newest
        if pod is None:
            return ""
        waiting = trainer_waiting(pod)
        if waiting is not None:
            reason = waiting.get("reason") or "Waiting"
            return f"{reason}: {waiting['message']}" if waiting.get("message") else str(reason)
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return (
                    f"{condition.get('reason') or 'Unschedulable'}: {condition.get('message') or ''}".rstrip(
                        ": "
                    )
                )
        return ""


def job_counts(job: JsonDict) -> int:
    """Pods the Job controller has counted as finished or active."""
    status = job.get("status") or {}
    return sum(int(status.get(key) or 0) for key in ("active", "succeeded", "failed"))


@dataclass(frozen=True)
class CollectorRun:
    """The collector Job (render_collector.py) of a FineTuneJob and its pods, as observed."""

    job: JsonDict | None
    pods: tuple[JsonDict, ...] = ()
    rejected: str | None = None
    """The API server refused to create it (a quota, an admission policy): this says why."""

    @property
    def outcome(self) -> str | None:
        if self.rejected is not None:
            return "Failed"
        if self.job is None:
            return None
        decided = job_outcome(self.job)
        return decided[0] if decided is not None else None

    @property
    def summary(self) -> TerminationSummary | None:
        """The run's summary it re-read, when it succeeded."""
        pod = Pods.of(self.pods).succeeded
        summary = summary_of(pod)
        return summary if summary is not None and summary.outcome == "Succeeded" else None

    def failure(self) -> str:
        """Why it could not re-read the summary, in a few words."""
        if self.rejected is not None:
            return self.rejected
        pods = Pods.of(self.pods)
        last = summary_of(pods.last_failed) or summary_of(pods.succeeded)
        if last is not None and last.message:
            return f"{last.reason}: {last.message}"
        decided = job_outcome(self.job) if self.job is not None else None
        if decided is not None:
            condition = decided[1]
            return str(condition.get("message") or condition.get("reason") or "the collector Job failed")
        return "the collector Job failed"


def needs_collector(job: JsonDict | None, pods: Sequence[JsonDict]) -> bool:
    """The Job completed, but no pod holds the termination summary any more."""
    decided = job_outcome(job) if job is not None else None
    if decided is None or decided[0] != "Complete":
        return False
    return Pods.of(pods).succeeded is None
