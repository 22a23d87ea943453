"""GPU-hours per namespace and calendar month, against the budget in the namespace's FineTuneJobPolicy
(pure).

The ledger lives in the policy's status, keyed by FineTuneJob uid: writing a job's hours again is
idempotent (no double counting after a crash or a restart), and deleting a FineTuneJob does not give its
hours back. A FineTuneJob whose namespace has used its budget stays Queued (QuotaExceeded) before its Job
is created; one already running is never stopped by the quota.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from .conditions import parse_time
from .names import JsonDict

POLICY_NAME: Final = "default"
"""The one FineTuneJobPolicy per namespace that the guardrails and the quota read."""
MAX_LEDGER_ENTRIES: Final = 5000
LEDGER_PRECISION_HOURS: Final = 0.01
"""A running job's entry is rewritten only when it grew by this much (36 GPU-seconds)."""
LEDGER_INTERVAL: Final = timedelta(minutes=5)
"""At most this often per running job; a finished job is written once, with its final hours."""


def period_of(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m")


def period_start(period: str) -> datetime:
    return datetime.strptime(period + "-01", "%Y-%m-%d").replace(tzinfo=UTC)


@dataclass(frozen=True)
class Quota:
    budget: float | None
    """GPU-hours per calendar month (UTC); None: consumption is recorded, nothing is refused."""
    period: str
    jobs: dict[str, float]
    """GPU-hours of each FineTuneJob uid in this period."""
    stale_keys: tuple[str, ...] = ()
    """Entries of an earlier period still in the status: the next write removes them."""

    @property
    def used(self) -> float:
        return round(sum(self.jobs.values()), 4)

    @classmethod
    def of(cls, policy: JsonDict, now: datetime) -> Quota:
        spec = policy.get("spec") or {}
        status = policy.get("status") or {}
        budget = spec.get("gpuHoursPerMonth")
        period = period_of(now)
        recorded = status.get("jobs") or {}
        jobs: dict[str, float] = {}
        stale: tuple[str, ...] = ()
        if status.get("period") == period:
            jobs = {str(k): float(v) for k, v in recorded.items() if isinstance(v, int | float)}
        else:
            stale = tuple(str(k) for k in recorded)
        return cls(
            budget=float(budget) if isinstance(budget, int | float) else None,
            period=period,
            jobs=jobs,
            stale_keys=stale,
        )

    def exceeded(self, uid: str) -> str | None:
        """Why a job that has not started may not start now, or None."""
        if self.budget is None or uid in self.jobs or self.used < self.budget:
            return None
        return (
            f"The namespace used {self.used:.2f} of its {self.budget:g} GPU-hours for {self.period} "
            f"(FineTuneJobPolicy {POLICY_NAME}, spec.gpuHoursPerMonth); the job starts when the budget is "
            "raised or next month begins."
        )

    def entry_patch(self, uid: str, hours: float) -> JsonDict | None:
        """A merge patch of the policy's status recording `hours` for `uid`; None when nothing changes."""
        previous = self.jobs.get(uid)
        if previous is not None and abs(previous - hours) < LEDGER_PRECISION_HOURS:
            return None
        if previous is None and hours < LEDGER_PRECISION_HOURS:
            return None
        jobs = dict(self.jobs)
        jobs[uid] = round(hours, 4)
        if len(jobs) > MAX_LEDGER_ENTRIES:
            return None  # the schema caps the map; the total stays what it was
        return {
            "period": self.period,
            "gpuHoursUsed": round(sum(jobs.values()), 4),
            # A new period replaces the map: in a merge patch, null removes an earlier period's keys.
            "jobs": {**dict.fromkeys(self.stale_keys, None), **jobs},
        }


def gpu_hours(gpus: int, status: JsonDict, now: datetime, period: str) -> float:
    """GPUs x the time since the run started (or since the period began), until it finished or now."""
    start = parse_time(status.get("startTime"))
    if not gpus or start is None:
        return 0.0
    end = parse_time(status.get("completionTime")) or now
    begin = max(start, period_start(period))
    return max(0.0, (end - begin).total_seconds()) * gpus / 3600


def ledger_due(last_written: datetime | None, now: datetime, final: bool) -> bool:
    return final or last_written is None or now - last_written >= LEDGER_INTERVAL
