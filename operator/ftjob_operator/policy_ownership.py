"""Whose Job it is: a Job of the Job's name that this FineTuneJob does not control is never adopted.

Another owner's Job fails the FineTuneJob (JobConflict); one left by an earlier namesake is waited out.
"""

from __future__ import annotations

from ftjob.api.conditions import ADMITTED

from .names import JsonDict, Ownership, job_name, ownership
from .status_builder import StatusBuilder


def not_our_job(b: StatusBuilder, ftj: JsonDict, job: JsonDict) -> JsonDict | None:
    """The status while `job` belongs to someone else (None: this FineTuneJob controls it)."""
    name = ftj["metadata"]["name"]
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
    return None
