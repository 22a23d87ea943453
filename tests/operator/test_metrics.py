"""Metrics: FineTuneJobs by phase and GPU-hours, read back from the registry."""

from __future__ import annotations

from datetime import timedelta

from ftjob_operator.metrics import Metrics

from .factories import T0


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    value = metrics.registry.get_sample_value(name, labels)
    return None if value is None else float(value)


def test_phases_are_counted_per_finetunejob() -> None:
    metrics = Metrics()
    metrics.set_phase("a", "x", "Running")
    metrics.set_phase("a", "y", "Running")
    metrics.set_phase("a", "x", "Succeeded")
    metrics.set_phase("b", "z", "Failed")
    metrics.set_phase("b", "z", None)
    counts = {
        phase: sample(metrics, "ftjob_finetunejobs", phase=phase)
        for phase in ("Running", "Succeeded", "Failed", "Queued")
    }
    assert counts == {"Running": 1.0, "Succeeded": 1.0, "Failed": 0.0, "Queued": 0.0}


def test_gpu_hours_accrue_while_trainers_run() -> None:
    metrics = Metrics()
    metrics.account_gpus("a", "x", 4, T0)
    metrics.account_gpus("a", "x", 4, T0 + timedelta(minutes=30))
    assert sample(metrics, "ftjob_gpus_requested", namespace="a") == 4.0
    metrics.account_gpus("a", "x", 0, T0 + timedelta(minutes=45))  # stopped: the last 15 min still count
    assert sample(metrics, "ftjob_gpu_hours_requested_total", namespace="a") == 3.0
    assert sample(metrics, "ftjob_gpus_requested", namespace="a") == 0.0
    metrics.account_gpus("a", "x", 0, T0 + timedelta(hours=5))
    assert sample(metrics, "ftjob_gpu_hours_requested_total", namespace="a") == 3.0
