"""What to do to the Job, given the FineTuneJob, the status just derived and the Job observed (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from ftjob.api.conditions import FAILED, VALIDATED

from .conditions import is_true, reason_of
from .names import JsonDict, Ownership, ownership
from .observe import is_deleting, job_outcome
from .policy_failure import DELETE_JOB_ON
from .policy_success import is_collecting
from .policy_suspension import is_held_by_quota
from .render import is_kueue_managed, validated_spec
from .status_builder import is_terminal


@dataclass(frozen=True)
class CreateJob:
    pass


@dataclass(frozen=True)
class CreateCollector:
    """Run the collector Job (render_collector.py): the trainer pod is gone, its summary is in storage."""


@dataclass(frozen=True)
class DeleteCollector:
    """The final status is written: the collector Job has done its work."""


@dataclass(frozen=True)
class SetJobSuspend:
    suspend: bool


@dataclass(frozen=True)
class DeleteJob:
    propagation: Literal["Foreground", "Background"]
    why: str


Action = CreateJob | SetJobSuspend | DeleteJob | CreateCollector | DeleteCollector


def plan_actions(
    ftj: JsonDict, status: JsonDict, job: JsonDict | None, collector_job: JsonDict | None = None
) -> list[Action]:
    """At most one action. Creating comes before the status that records it (a crash in between leaves a
    Job that the next reconcile adopts); deleting comes after the status that explains it (a crash in
    between leaves a status that the next reconcile acts on)."""
    conditions = status.get("conditions") or []
    owned = job is not None and ownership(job, ftj) is Ownership.OWNED
    if is_collecting(status):
        return [CreateCollector()] if collector_job is None else []
    if collector_job is not None and is_terminal(status) and not is_deleting(collector_job):
        return [DeleteCollector()]
    if is_terminal(status):
        failure = reason_of(conditions, FAILED)
        if (
            owned
            and job is not None
            and failure in DELETE_JOB_ON
            and job_outcome(job) is None
            and not is_deleting(job)
        ):
            return [DeleteJob("Background", f"{failure}: the pod cannot start")]
        return []
    if not is_true(conditions, VALIDATED):
        return []
    try:
        spec = validated_spec(ftj)
    except ValidationError:
        return []
    if job is None:
        if is_held_by_quota(status):
            return []
        if not spec.suspend or (not is_kueue_managed(spec) and not status.get("jobName")):
            return [CreateJob()]
        return []
    if not owned or is_deleting(job) or job_outcome(job) is not None:
        return []
    if is_kueue_managed(spec):
        # Kueue owns `suspend` of the Jobs it manages; suspending means taking the Job out of the queue.
        # Foreground: the Job stays until its pods are gone, so a quick resume cannot start a second
        # trainer next to one still uploading its checkpoint.
        if spec.suspend:
            return [DeleteJob("Foreground", "spec.suspend of a Kueue-managed job")]
        return []
    if bool((job.get("spec") or {}).get("suspend")) != spec.suspend:
        return [SetJobSuspend(spec.suspend)]
    return []
