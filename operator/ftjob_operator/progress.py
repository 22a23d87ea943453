"""Trainer progress record (from the pod log) -> `status.progress`."""

from __future__ import annotations

from ftjob.api.status import Progress
from ftjob.contract import ProgressRecord

from .conditions import parse_time
from .names import JsonDict


def percent(step: int, total_steps: int) -> int:
    if total_steps <= 0:
        return 0
    return max(0, min(100, (step * 100) // total_steps))


def estimate_eta(record: ProgressRecord, previous: JsonDict | None) -> int | None:
    """The trainer's own estimate, else the rate since the previous record extrapolated to the end."""
    if record.eta_seconds is not None:
        return record.eta_seconds
    if previous is None or record.total_steps <= 0:
        return None
    then, now = parse_time(previous.get("updatedAt")), parse_time(record.time)
    prev_step = previous.get("step")
    if then is None or now is None or not isinstance(prev_step, int) or record.step <= prev_step:
        return None
    elapsed = (now - then).total_seconds()
    if elapsed <= 0:
        return None
    rate = (record.step - prev_step) / elapsed
    return max(0, round((record.total_steps - record.step) / rate))


def progress_status(record: ProgressRecord, previous: JsonDict | None) -> JsonDict:
    """`status.progress` for a new record; the previous one supplies the rate and the last known loss.

    Built as the API's own `Progress` model and serialised once, so its field names and bounds are the
    CRD's (the schema is generated from the same model)."""
    if previous and previous.get("updatedAt") == record.time and previous.get("step") == record.step:
        return previous  # the same record read again
    loss = record.loss if record.loss is not None else (previous or {}).get("loss")
    progress = Progress(
        step=record.step,
        total_steps=record.total_steps,
        epoch=record.epoch,
        percent=percent(record.step, record.total_steps),
        stage=record.stage,
        updated_at=record.time,
        eta_seconds=estimate_eta(record, previous),
        loss=loss if isinstance(loss, int | float) else None,
        tokens_per_second=record.tokens_per_second,
    )
    return progress.model_dump(mode="json", by_alias=True, exclude_none=True)


def finished_progress(previous: JsonDict | None) -> JsonDict:
    """Progress of a job that succeeded: whatever was last seen, completed."""
    out = dict(previous or {})
    total = out.get("totalSteps")
    done = {"percent": 100, "eta_seconds": 0, "stage": "done"}
    if isinstance(total, int) and total > 0:
        done["step"] = total
    # Only the fields that change, by the model's own names: a field a newer CRD added stays as it was.
    out.update({Progress.model_fields[name].alias or name: value for name, value in done.items()})
    return out
