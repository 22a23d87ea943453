"""Progress inside a stage (answers generated, objects uploaded): `FTJOB_TASK {json}` lines on stdout.

`FTJOB_PROGRESS` records (ftjob.contract) belong to the operator: it reads the newest one from the pod log
into `status.progress`. These lines are for people: `ftjob local` and `ftjob logs` draw a bar per task
from them. They have a prefix of their own so the operator's contract stays as it is: its parser looks
for `FTJOB_PROGRESS ` and never matches these lines, and an older operator is unaffected.

Nothing here does I/O.
"""

from __future__ import annotations

from typing import Final

from pydantic import Field, ValidationError

from ftjob.api.meta import ApiModel
from ftjob.contract import PROGRESS_PREFIX, ProgressRecord, Stage

TASK_PREFIX: Final = "FTJOB_TASK "


class TaskRecord(ApiModel):
    """`done` of `total` units of one task of a stage (`total` 0: not known in advance)."""

    stage: Stage
    task: str = Field(max_length=200)
    """What is being done, for a person: `tuned model's answers`, `validation loss`."""
    done: int = Field(default=0, ge=0)
    total: int = Field(default=0, ge=0)
    unit: str = Field(default="", max_length=32)
    time: str = Field(max_length=64)


def format_task_line(record: TaskRecord) -> str:
    return TASK_PREFIX + record.model_dump_json(by_alias=True, exclude_none=True)


def parse_task_line(line: str) -> TaskRecord | None:
    """The record on one log line, or None (not a record, or a malformed one: logs are not trusted)."""
    start = line.find(TASK_PREFIX)
    if start < 0:
        return None
    try:
        return TaskRecord.model_validate_json(line[start + len(TASK_PREFIX) :], extra="ignore")
    except ValidationError:
        return None


def parse_progress_line(line: str) -> ProgressRecord | None:
    """The operator's progress record on one log line, or None."""
    start = line.find(PROGRESS_PREFIX)
    if start < 0:
        return None
    try:
        return ProgressRecord.model_validate_json(line[start + len(PROGRESS_PREFIX) :], extra="ignore")
    except ValidationError:
        return None
