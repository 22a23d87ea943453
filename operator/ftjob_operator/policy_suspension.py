"""Suspended and Admitted: whether the Job may run now (spec.suspend, a Kueue queue, the GPU-hour quota).

Also the time before the Job exists, which is when the quota holds a job back and a deleted Job is noticed.
"""

from __future__ import annotations

from typing import Final

from ftjob.api import FineTuneJobSpec
from ftjob.api.conditions import ADMITTED, RUNNING, SUSPENDED

from .conditions import reason_of
from .names import JsonDict
from .observe import Pods
from .render import is_kueue_managed
from .status_builder import StatusBuilder

QUOTA_EXCEEDED: Final = "QuotaExceeded"
"""The namespace used its GPU-hours for the month (FineTuneJobPolicy spec.gpuHoursPerMonth): no Job yet."""


def is_held_by_quota(status: JsonDict) -> bool:
    return reason_of(status.get("conditions") or [], ADMITTED) == QUOTA_EXCEEDED


def without_job(b: StatusBuilder, spec: FineTuneJobSpec, quota_block: str | None = None) -> JsonDict:
    if spec.suspend:
        return suspended(b, spec, Pods(()))
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
    mark_resumed(b)
    if is_kueue_managed(spec):
        b.conditions.set(
            ADMITTED,
            "False",
            "Queued",
            f"Waiting for Kueue to admit the Job (LocalQueue {spec.scheduling.queue_name}).",
        )
    else:
        admit(b, spec)
    return b.finish("Pending", "Creating the trainer Job.")


def mark_resumed(b: StatusBuilder) -> None:
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


def admit(b: StatusBuilder, spec: FineTuneJobSpec) -> None:
    if is_kueue_managed(spec):
        b.conditions.set(
            ADMITTED, "True", "Admitted", f"Kueue admitted the Job (LocalQueue {spec.scheduling.queue_name})."
        )
    else:
        b.conditions.set(
            ADMITTED, "True", "NoQueue", "No Kueue queue is set; the Job runs as soon as it is created."
        )


def suspended(b: StatusBuilder, spec: FineTuneJobSpec, p: Pods) -> JsonDict:
    if is_kueue_managed(spec):
        b.conditions.set(
            ADMITTED, "False", "SuspendRequested", "spec.suspend is true; the Job was removed from the queue."
        )
    else:
        admit(b, spec)
    stopping = p.stopping + (1 if p.running is not None else 0)
    if stopping:
        message = f"Suspending: {stopping} trainer pod(s) received SIGTERM and are saving a checkpoint."
    else:
        message = "Suspended (spec.suspend is true); set it to false to resume from the last checkpoint."
    if b.conditions.previous(RUNNING) is not None:
        b.conditions.set(RUNNING, "False", "SuspendRequested", message)
    b.conditions.set(SUSPENDED, "True", "SuspendRequested", message)
    return b.finish("Suspended", message)


def queued(b: StatusBuilder, spec: FineTuneJobSpec) -> JsonDict:
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
