"""What the cluster commands print, built from the objects the API server returned. Pure functions.

Everything reads the status the operator wrote (`status.progress`, `status.metrics`, conditions...)
leniently: a field an older operator did not write is shown as `-`, never a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from ftjob.api.conditions import TERMINAL_PHASES

JsonDict = dict[str, Any]

BAR_WIDTH: Final = 20
HEADLINE_METRICS: Final = ("exactMatch", "tokenF1", "rougeL", "jsonValid")
"""The first of these the job computed is its headline metric (exact match says most, when there is one)."""


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """`████████░░░░░░░░` for a fraction in [0, 1] (clamped), in eighths of a cell."""
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    full, rest = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[rest].strip() if rest else ""
    return ("█" * full + partial).ljust(width, "░")[:width]


def status_of(obj: JsonDict) -> JsonDict:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def phase(obj: JsonDict) -> str:
    return str(status_of(obj).get("phase") or "Pending")


def is_terminal(obj: JsonDict) -> bool:
    return phase(obj) in TERMINAL_PHASES


def percent(obj: JsonDict) -> int | None:
    progress = status_of(obj).get("progress") or {}
    if phase(obj) == "Succeeded":
        return 100
    value = progress.get("percent")
    return int(value) if isinstance(value, int | float) else None


def headline(obj: JsonDict) -> str:
    """`exactMatch 0.00 -> 1.00`: the headline metric, base to tuned; "" before there are metrics."""
    metrics = status_of(obj).get("metrics") or {}
    tuned: JsonDict = metrics.get("tuned") or {}
    base: JsonDict = metrics.get("base") or {}
    name = next((m for m in HEADLINE_METRICS if m in tuned), next(iter(tuned), None))
    if name is None:
        return ""
    if name in base:
        return f"{name} {base[name]:.2f} -> {tuned[name]:.2f}"
    return f"{name} {tuned[name]:.2f}"


def age(timestamp: str | None, now: datetime) -> str:
    """kubectl's short ages: 45s, 12m, 3h, 5d."""
    if not timestamp:
        return "-"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "-"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def progress_cell(obj: JsonDict) -> str:
    """`████░░░░ 40% training` (stage while running; nothing before any progress)."""
    value = percent(obj)
    if value is None:
        return ""
    stage = (status_of(obj).get("progress") or {}).get("stage")
    text = f"{bar(value / 100, 10)} {value:>3}%"
    if stage and not is_terminal(obj):
        text += f" {stage}"
    return text


def _loss(obj: JsonDict) -> str:
    status = status_of(obj)
    metrics = status.get("metrics") or {}
    value = metrics.get("evalLoss")
    if value is None:
        value = (status.get("progress") or {}).get("loss")
    return "" if value is None else f"{value:.4f}"


def table(rows: Sequence[Sequence[str]]) -> str:
    """Columns padded like kubectl's: three spaces apart, the last one unpadded."""
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        out.append("   ".join(cells).rstrip())
    return "\n".join(out)


def get_table(objects: Sequence[JsonDict], now: datetime, *, all_namespaces: bool, wide: bool = False) -> str:
    header = ["NAME", "PHASE", "PROGRESS", "LOSS", "RESULT", "AGE"]
    if wide:
        header += ["MODEL", "MESSAGE"]
    if all_namespaces:
        header.insert(0, "NAMESPACE")
    rows = [header]
    for obj in objects:
        meta = obj.get("metadata") or {}
        row = [
            str(meta.get("name", "")),
            phase(obj),
            progress_cell(obj),
            _loss(obj),
            headline(obj),
            age(meta.get("creationTimestamp"), now),
        ]
        if wide:
            spec = obj.get("spec") or {}
            row += [
                str((spec.get("baseModel") or {}).get("uri", "")),
                _one_line(status_of(obj).get("message")),
            ]
        if all_namespaces:
            row.insert(0, str(meta.get("namespace", "")))
        rows.append(row)
    return table(rows)


def _one_line(text: Any, limit: int = 100) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def progress_text(obj: JsonDict) -> str:
    """`████░░ 40% training step 12/30 loss 0.1234 ETA 1m05s` ("" before any progress)."""
    status = status_of(obj)
    progress = status.get("progress") or {}
    parts = []
    value = percent(obj)
    if value is not None:
        parts.append(f"{bar(value / 100)} {value:>3}%")
    if progress.get("stage") and not is_terminal(obj):
        parts.append(str(progress["stage"]))
    if progress.get("totalSteps"):
        parts.append(f"step {progress.get('step', 0)}/{progress['totalSteps']}")
    if progress.get("loss") is not None:
        parts.append(f"loss {progress['loss']:.4f}")
    eta = progress.get("etaSeconds")
    if eta is not None and not is_terminal(obj):
        parts.append(f"ETA {eta // 60}m{eta % 60:02d}s")
    return " ".join(parts)


def watch_line(obj: JsonDict) -> str:
    """One line for `ftjob watch`: the phase, then `progress_text`."""
    return f"{phase(obj):<9} {progress_text(obj)}".rstrip()


def outcome_line(obj: JsonDict) -> str:
    """The last line of `ftjob watch`: the terminal phase, the reason and the message."""
    condition = _condition(obj, phase(obj))
    reason = (condition or {}).get("reason", "")
    message = status_of(obj).get("message") or (condition or {}).get("message") or ""
    result = headline(obj)
    text = f"{phase(obj)}" + (f" ({reason})" if reason else "") + (f": {message}" if message else "")
    return text + (f"\n{result}" if result else "")


def _condition(obj: JsonDict, type_: str) -> JsonDict | None:
    for condition in status_of(obj).get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == type_:
            return condition
    return None


def metrics_table(metrics: JsonDict) -> list[str]:
    """Base against tuned, losses first: the comparison the whole run is about."""
    tuned: JsonDict = metrics.get("tuned") or {}
    base: JsonDict = metrics.get("base") or {}
    rows = [["METRIC", "BASE", "TUNED", "CHANGE"]]

    def row(name: str, b: Any, t: Any, digits: int) -> None:
        change = f"{t - b:+.{digits}f}" if isinstance(t, int | float) and isinstance(b, int | float) else ""
        rows.append([name, _num(b, digits), _num(t, digits), change])

    if "evalLoss" in metrics or "baseEvalLoss" in metrics:
        row("validation loss", metrics.get("baseEvalLoss"), metrics.get("evalLoss"), 4)
    for name, value in tuned.items():
        row(name, base.get(name), value, 3)
    return table(rows).splitlines() if len(rows) > 1 else []


def _num(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"


def describe(obj: JsonDict, events: Sequence[JsonDict], pods: Sequence[JsonDict], now: datetime) -> str:
    """`ftjob describe`: status, conditions with reasons, data, metrics, artifacts, recent Events."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = status_of(obj)
    lines = [
        f"Name:         {meta.get('name', '')}",
        f"Namespace:    {meta.get('namespace', '')}",
        f"Created:      {meta.get('creationTimestamp', '-')} ({age(meta.get('creationTimestamp'), now)} ago)",
        f"Base model:   {(spec.get('baseModel') or {}).get('uri', '-')}",
        f"Output:       {(spec.get('output') or {}).get('uri', '-')}",
        f"Phase:        {phase(obj)}",
    ]
    if status.get("message"):
        lines.append(f"Message:      {status['message']}")
    if status.get("jobName"):
        attempts = status.get("attempts")
        pod_names = ", ".join(p["metadata"]["name"] for p in pods) or "none left"
        lines.append(
            f"Job:          {status['jobName']} (attempts: {attempts if attempts is not None else '-'}; pods: {pod_names})"
        )
    if progress_text(obj):
        lines.append(f"Progress:     {progress_text(obj)}")
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    if conditions:
        lines += ["", "Conditions:"]
        rows = [["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]]
        rows += [
            [
                str(c.get("type", "")),
                str(c.get("status", "")),
                str(c.get("reason", "")),
                age(c.get("lastTransitionTime"), now),
                _one_line(c.get("message"), 120),
            ]
            for c in conditions
        ]
        lines += ["  " + line for line in table(rows).splitlines()]
    dataset = status.get("dataset")
    if isinstance(dataset, dict):
        dropped = dataset.get("droppedByReason") or {}
        reasons = ", ".join(f"{k} {v}" for k, v in dropped.items()) or "none"
        lines += [
            "",
            "Data:",
            f"  {dataset.get('totalLines', 0)} lines read; kept {dataset.get('trainExamples', 0)} for training and "
            f"{dataset.get('validationExamples', 0)} for validation; dropped {dataset.get('dropped', 0)} ({reasons})",
        ]
        if dataset.get("truncated"):
            lines.append(f"  {dataset['truncated']} examples longer than maxSeqLength were truncated")
    metrics = status.get("metrics")
    if isinstance(metrics, dict):
        table_lines = metrics_table(metrics)
        if table_lines:
            lines += ["", "Metrics (base model vs tuned):"] + ["  " + line for line in table_lines]
        if metrics.get("trainLoss") is not None:
            lines.append(f"  training loss (mean over the run): {metrics['trainLoss']:.4f}")
    artifacts = status.get("artifacts")
    if isinstance(artifacts, dict) and artifacts:
        lines += ["", "Artifacts:"] + [f"  {k + ':':<14} {v}" for k, v in artifacts.items()]
        lines.append(f"  (download: ftjob results {meta.get('name', '')} -n {meta.get('namespace', '')})")
    lines += ["", "Events:"]
    if events:
        rows = [["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]]
        for event in events[-15:]:
            involved = event.get("involvedObject") or {}
            count = event.get("count") or 1
            rows.append(
                [
                    age(
                        event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp"),
                        now,
                    )
                    + (f" (x{count})" if count > 1 else ""),
                    str(event.get("type", "")),
                    str(event.get("reason", "")),
                    f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
                    _one_line(event.get("message"), 120),
                ]
            )
        lines += ["  " + line for line in table(rows).splitlines()]
    else:
        lines.append("  <none>")
    return "\n".join(lines)


def now_utc() -> datetime:
    return datetime.now(UTC)
