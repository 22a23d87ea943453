"""The GPU-hour ledger and budget of a namespace (pure): idempotent entries by uid, months, the budget."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ftjob_operator.quota import Quota, gpu_hours, ledger_due

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def policy(
    budget: float | None = 10, jobs: dict[str, float] | None = None, period: str = "2026-11"
) -> dict[str, Any]:
    spec: dict[str, Any] = {} if budget is None else {"gpuHoursPerMonth": budget}
    return {"spec": spec, "status": {"period": period, "jobs": jobs or {}}}


def test_used_is_the_sum_of_the_entries_of_this_month() -> None:
    quota = Quota.of(policy(jobs={"a": 4.0, "b": 2.5}), NOW)
    assert (quota.used, quota.budget, quota.period) == (6.5, 10.0, "2026-11")


def test_a_job_may_not_start_once_the_budget_is_used() -> None:
    full = Quota.of(policy(jobs={"a": 7.0, "b": 3.0}), NOW)
    message = full.exceeded("new")
    assert message is not None
    assert "used 10.00 of its 10 GPU-hours for 2026-11" in message and "gpuHoursPerMonth" in message
    assert full.exceeded("a") is None  # a job already counted (running, retried) is never held back
    assert Quota.of(policy(jobs={"a": 9.99}), NOW).exceeded("new") is None
    assert Quota.of(policy(budget=None, jobs={"a": 99.0}), NOW).exceeded("new") is None  # recorded only


def test_entries_are_idempotent_and_written_only_when_they_grow() -> None:
    quota = Quota.of(policy(jobs={"a": 1.0}), NOW)
    assert quota.entry_patch("a", 1.004) is None  # below the ledger's precision
    assert quota.entry_patch("new", 0.001) is None  # nothing worth a write yet
    patch = quota.entry_patch("b", 2.0)
    assert patch == {"period": "2026-11", "gpuHoursUsed": 3.0, "jobs": {"a": 1.0, "b": 2.0}}
    # The same value again changes nothing: a restart or a retried write cannot count twice.
    again = Quota.of(policy(jobs={"a": 1.0, "b": 2.0}), NOW)
    assert again.entry_patch("b", 2.0) is None


def test_a_new_month_starts_an_empty_ledger_and_removes_the_old_entries() -> None:
    quota = Quota.of(policy(jobs={"old": 9.0}, period="2026-10"), NOW)
    assert quota.used == 0 and quota.exceeded("new") is None
    patch = quota.entry_patch("a", 1.0)
    assert patch == {"period": "2026-11", "gpuHoursUsed": 1.0, "jobs": {"old": None, "a": 1.0}}


def test_gpu_hours_run_from_the_start_or_the_month_until_the_end_or_now() -> None:
    running = {"startTime": "2026-11-30T10:00:00Z"}
    assert gpu_hours(2, running, NOW, "2026-11") == 4.0
    finished = {"startTime": "2026-11-30T10:00:00Z", "completionTime": "2026-11-30T10:30:00Z"}
    assert gpu_hours(4, finished, NOW, "2026-11") == 2.0
    # Started last month: only this month's part counts in this month's ledger.
    since_october = {"startTime": "2026-10-31T23:00:00Z"}
    assert gpu_hours(1, since_october, datetime(2026, 11, 1, 1, 0, tzinfo=UTC), "2026-11") == 1.0
    assert gpu_hours(0, running, NOW, "2026-11") == 0.0
    assert gpu_hours(1, {}, NOW, "2026-11") == 0.0


def test_ledger_writes_are_spaced_but_the_final_one_always_goes() -> None:
    last = datetime(2026, 11, 30, 11, 58, tzinfo=UTC)
    assert not ledger_due(last, NOW, final=False)
    assert ledger_due(last, NOW, final=True)
    assert ledger_due(None, NOW, final=False)
    assert ledger_due(datetime(2026, 11, 30, 11, 50, tzinfo=UTC), NOW, final=False)
