"""Running while the admitted Job is active: training with its progress, or why no trainer runs right now.

A pod that is waiting, being replaced or retried is a moment of a running job, not a failure.
"""

from __future__ import annotations

from ftjob.api import FineTuneJobSpec
from ftjob.api.conditions import RUNNING
from ftjob.contract import ProgressRecord

from .messages import training_message
from .names import JsonDict
from .observe import Pods, is_deleting
from .policy_failure import after_failed_attempt
from .progress import progress_status
from .status_builder import StatusBuilder


def active(b: StatusBuilder, spec: FineTuneJobSpec, p: Pods, progress: ProgressRecord | None) -> JsonDict:
    running = p.running
    if running is not None:
        if progress is not None:
            b.out["progress"] = progress_status(progress, b.out.get("progress"))
        message = training_message(b.out.get("progress"), int(b.out.get("attempts") or 1))
        b.conditions.set(RUNNING, "True", "Training", message)
        return b.finish("Running", message)

    phase = "Running" if b.out.get("startTime") else "Pending"
    newest = p.newest
    if newest is None:
        message = f"Waiting for the Job {b.out.get('jobName')} to start a trainer pod."
        b.conditions.set(RUNNING, "False", "JobCreated", message)
        return b.finish(phase, message)
    if p.succeeded is not None:
        # The pod is done and the Job controller has not recorded it yet: a moment, not a state to report.
        b.conditions.keep(RUNNING)
        return b.finish(phase, "The trainer finished; waiting for the Job to complete.")
    if (retrying := after_failed_attempt(b, spec, p, phase)) is not None:
        return retrying
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
