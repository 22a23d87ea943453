"""Human wording shared by the policies: the training line with its progress, durations, disruptions.

Kept apart so that a condition's meaning (its reason) and its wording (its message) change separately.
"""

from __future__ import annotations

from .names import JsonDict


def training_message(progress: JsonDict | None, attempt: int) -> str:
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
        parts.append(f"ETA {duration(int(progress['etaSeconds']))}")
    return prefix + (": " + ", ".join(parts) if parts else "") + "."


def duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def disruption_detail(cause: JsonDict) -> str:
    """A pod's DisruptionTarget condition as `reason: message` (the reason alone when it has no message)."""
    return f"{cause.get('reason') or 'DisruptionTarget'}{': ' + str(cause['message']) if cause.get('message') else ''}"
