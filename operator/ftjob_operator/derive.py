"""(FineTuneJob, Job, pods, progress, now) -> status: a pure function, the whole story of a job.

Only fields declared in the CRD's status schema are produced. Every condition carries the generation it
was computed from; its lastTransitionTime moves only when its status changes (see conditions.py). Each
condition's rules live in a policy module of their own; this one only tells them apart, in the order a job
lives them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import ValidationError

from ftjob.contract import ProgressRecord

from .names import JsonDict
from .observe import CollectorRun, Pods, job_outcome
from .policy_failure import (
    DELETE_JOB_ON,
    JOB_REJECTED,
    USER_ERROR_REASONS,
    WORKSPACE_FULL,
    failed_status,
    job_failed,
    pod_problem,
)
from .policy_ownership import not_our_job
from .policy_running import active
from .policy_success import COLLECTING_RESULTS, is_collecting, succeeded
from .policy_suspension import (
    QUOTA_EXCEEDED,
    admit,
    is_held_by_quota,
    mark_resumed,
    queued,
    suspended,
    without_job,
)
from .policy_validation import (
    LOCAL_PATH_ON_CLUSTER,
    LOOPBACK_ENDPOINT,
    invalid_spec,
    local_path_fields,
    mark_valid,
    unreachable_location,
)
from .render import is_kueue_managed, validated_spec
from .settings import OperatorSettings
from .status_builder import StatusBuilder, is_terminal

__all__ = [
    "COLLECTING_RESULTS",
    "DELETE_JOB_ON",
    "JOB_REJECTED",
    "LOCAL_PATH_ON_CLUSTER",
    "LOOPBACK_ENDPOINT",
    "QUOTA_EXCEEDED",
    "USER_ERROR_REASONS",
    "WORKSPACE_FULL",
    "derive_status",
    "failed_status",
    "is_collecting",
    "is_held_by_quota",
    "is_terminal",
    "local_path_fields",
]


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
    b = StatusBuilder(ftj, now)
    if is_terminal(b.old):
        frozen = dict(b.old)
        if b.generation is not None:
            frozen["observedGeneration"] = b.generation
        return frozen
    try:
        spec = validated_spec(ftj)
    except ValidationError as exc:
        return invalid_spec(b, exc)
    if (rejected := unreachable_location(b, spec, settings)) is not None:
        return rejected
    mark_valid(b)

    if job is None:
        return without_job(b, spec, quota_block)
    if (foreign := not_our_job(b, ftj, job)) is not None:
        return foreign

    p = Pods.of(pods)
    b.record_job(job, p, spec.resources.nodes)
    outcome = job_outcome(job)
    if outcome is not None and outcome[0] == "Complete":
        return succeeded(b, spec, job, p, collector)
    if outcome is not None:
        return job_failed(b, spec, outcome[1], p, settings)
    if (cannot_start := pod_problem(b, spec, p, now, settings)) is not None:
        return cannot_start

    if spec.suspend:
        return suspended(b, spec, p)
    mark_resumed(b)
    if is_kueue_managed(spec) and (job.get("spec") or {}).get("suspend"):
        return queued(b, spec)
    admit(b, spec)
    return active(b, spec, p, progress)
