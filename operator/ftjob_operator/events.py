"""Kubernetes Events: which transitions deserve one (pure), and the Event object itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from ftjob.api.conditions import ADMITTED, FAILED, RUNNING, SUCCEEDED, SUSPENDED, VALIDATED

from .conditions import find, timestamp
from .names import COMPONENT, JsonDict
from .redact import redact

MAX_EVENT_MESSAGE: Final = 1024

EventType = Literal["Normal", "Warning"]

_FAILURE_EVENT_REASONS: Final = {
    "InvalidSpec": "SpecInvalid",
    "JobConflict": "JobConflict",
    "JobDeleted": "JobDeleted",
    "LocalPathOnCluster": "SpecInvalid",
}
"""Failures that are not the training's: they get their own Event reason instead of TrainingFailed."""


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    """CamelCase, stable: automation may match on it."""
    message: str


def _condition(status: JsonDict | None, type_: str) -> JsonDict:
    return find((status or {}).get("conditions") or [], type_) or {}


def _became(
    old: JsonDict | None, new: JsonDict, type_: str, value: str, reason: str | None = None
) -> JsonDict | None:
    """The new condition of `type_`, if it now has `value` (and `reason`) and did not before."""
    before, after = _condition(old, type_), _condition(new, type_)
    if after.get("status") != value or (reason is not None and after.get("reason") != reason):
        return None
    if before.get("status") == value and (reason is None or before.get("reason") == reason):
        return None
    return after


def derive_events(old_status: JsonDict | None, new_status: JsonDict) -> list[Event]:
    """Events for what changed between two statuses; nothing when nothing changed."""
    events: list[Event] = []
    if (invalid := _became(old_status, new_status, VALIDATED, "False", "InvalidSpec")) is not None:
        events.append(Event("Warning", "SpecInvalid", invalid.get("message", "")))
    if (queued := _became(old_status, new_status, ADMITTED, "False", "Queued")) is not None:
        events.append(Event("Normal", "Queued", queued.get("message", "")))
    if (held := _became(old_status, new_status, ADMITTED, "False", "QuotaExceeded")) is not None:
        events.append(Event("Warning", "QuotaExceeded", held.get("message", "")))
    if (admitted := _became(old_status, new_status, ADMITTED, "True", "Admitted")) is not None:
        events.append(Event("Normal", "Admitted", admitted.get("message", "")))
    if (started := _became(old_status, new_status, RUNNING, "True")) is not None:
        attempt = new_status.get("attempts") or 1
        events.append(
            Event(
                "Normal",
                "TrainingStarted",
                f"Trainer pod running (attempt {attempt}). {started.get('message', '')}".strip(),
            )
        )
    if (preempted := _became(old_status, new_status, RUNNING, "False", "Preempted")) is not None:
        events.append(Event("Warning", "Preempted", preempted.get("message", "")))
    if (retrying := _became(old_status, new_status, RUNNING, "False", "Retrying")) is not None:
        events.append(Event("Warning", "TrainingRetrying", retrying.get("message", "")))
    if (suspended := _became(old_status, new_status, SUSPENDED, "True")) is not None:
        events.append(Event("Normal", "Suspended", suspended.get("message", "")))
    if _became(old_status, new_status, SUSPENDED, "False", "Resumed") is not None:
        events.append(
            Event("Normal", "Resumed", "spec.suspend is false; training resumes from the last checkpoint.")
        )
    if (succeeded := _became(old_status, new_status, SUCCEEDED, "True")) is not None:
        events.append(Event("Normal", "TrainingSucceeded", succeeded.get("message", "")))
    if (failed := _became(old_status, new_status, FAILED, "True")) is not None:
        reason = str(failed.get("reason") or "")
        if reason != "InvalidSpec":  # already told by SpecInvalid
            event_reason = _FAILURE_EVENT_REASONS.get(reason, "TrainingFailed")
            message = str(failed.get("message") or "")
            if event_reason == "TrainingFailed":
                message = f"{reason}: {message}"
            events.append(Event("Warning", event_reason, message))
    return events


def event_body(ftj: JsonDict, event: Event, now: datetime, sequence: int = 0) -> JsonDict:
    """A core/v1 Event about `ftj`, named the way client-go's recorder names them (`sequence` keeps the
    names of Events recorded at the same instant apart)."""
    meta = ftj["metadata"]
    when = timestamp(now)
    message = redact(event.message)
    if len(message) > MAX_EVENT_MESSAGE:
        message = message[: MAX_EVENT_MESSAGE - 3] + "..."
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{int(now.timestamp() * 1e9) + sequence:x}",
            "namespace": meta["namespace"],
            "labels": {"app.kubernetes.io/managed-by": COMPONENT},
        },
        "involvedObject": {
            "apiVersion": ftj.get("apiVersion", "ftjob.dev/v1alpha1"),
            "kind": ftj.get("kind", "FineTuneJob"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": event.type,
        "reason": event.reason,
        "message": message,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "action": event.reason,
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
    }
