"""The Argo CD health check maps FineTuneJob statuses to Healthy / Progressing / Degraded / Suspended: on
hand-written samples of every stage, and on statuses the operator's own derive_status computes."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

import pytest
from lupa.lua51 import LuaError

from ftjob.contract import ProgressRecord, TerminationSummary
from ftjob_operator.derive import derive_status
from ftjob_operator.settings import OperatorSettings
from tests.operator import factories as f

from .argocd import health
from .samples import STATUSES, JsonDict, finetunejob, validated

EXPECTED: Final[dict[str, tuple[str, str]]] = {
    # sample: (health status, the exact message)
    "pending": ("Progressing", "The Job was created; waiting for its pod."),
    "queued": ("Progressing", "Queued: Waiting for Kueue to admit the Job (LocalQueue team-a-gpus)."),
    "running": ("Progressing", "Running, 42% done: Training: step 420/1000 (42%), loss 1.284, ETA 31m12s."),
    "retrying": (
        "Progressing",
        "Running: Attempt 1 failed (StorageUnreachable: s3 endpoint did not answer); the Job retries "
        "(backoffLimit 3), resuming from the last checkpoint.",
    ),
    "suspended": (
        "Suspended",
        "Suspended (spec.suspend is true); set it to false to resume from the last checkpoint.",
    ),
    "succeeded": ("Healthy", "Adapter, evaluation and manifest written (eval loss 0.9312)"),
    "failed-backoff": (
        "Degraded",
        "The trainer failed more often than backoffLimit (3) allows. Last attempt: exit code 1",
    ),
    "failed-data": (
        "Degraded",
        "Only 212 usable examples after cleaning; data.minExamples is 500 (see data-report.json).",
    ),
    "failed-spec": (
        "Degraded",
        "Invalid spec: spec.peft.quantization.bits: qlora needs 4-bit quantization (got 8)",
    ),
}


def test_every_sample_is_covered() -> None:
    assert set(EXPECTED) == set(STATUSES)


@pytest.mark.parametrize("sample", sorted(STATUSES))
def test_samples_are_statuses_the_operator_can_write(sample: str) -> None:
    validated(STATUSES[sample])


@pytest.mark.parametrize("sample", sorted(EXPECTED))
def test_health_of_each_stage(sample: str) -> None:
    generation = STATUSES[sample].get("observedGeneration", 1)
    result = health(finetunejob(STATUSES[sample], generation=generation))
    assert (result["status"], result["message"]) == EXPECTED[sample]


def test_no_status_yet_is_progressing() -> None:
    assert health(finetunejob(None)) == {
        "status": "Progressing",
        "message": "Waiting for the operator to pick up this FineTuneJob.",
    }
    assert health(finetunejob({}))["status"] == "Progressing"


def test_a_status_of_an_older_generation_is_not_trusted() -> None:
    """spec.suspend was just set (generation 2); the status still describes generation 1."""
    result = health(finetunejob(STATUSES["running"], generation=2))
    assert result == {"status": "Progressing", "message": "Waiting for the operator to observe generation 2."}


def test_terminal_states_win_over_a_stale_generation() -> None:
    assert health(finetunejob(STATUSES["succeeded"], generation=2))["status"] == "Healthy"
    assert health(finetunejob(STATUSES["failed-backoff"], generation=2))["status"] == "Degraded"


def test_failed_without_a_message_falls_back_to_the_reason() -> None:
    status = {
        "phase": "Failed",
        "conditions": [{**STATUSES["failed-backoff"]["conditions"][-1], "message": ""}],
    }
    assert health(finetunejob(status)) == {"status": "Degraded", "message": "BackoffLimitExceeded"}


def test_the_sandbox_is_argos() -> None:
    """The runner really withholds the libraries Argo CD withholds, so a script using them would fail here."""
    with pytest.raises(LuaError):
        health(finetunejob(None), script='return {status = "Healthy", message = string.format("%d", 1)}')
    with pytest.raises(LuaError):
        health(finetunejob(None), script='return {status = "Healthy", message = tostring(math.floor(1.5))}')


# --- statuses computed by the operator itself -----------------------------------------------------------------
SETTINGS: Final = OperatorSettings()
KUEUE: Final[JsonDict] = {"scheduling": {"queueName": "team-a-gpus"}}


def derived(
    spec: JsonDict | None, job: JsonDict | None, pods: list[JsonDict], progress: ProgressRecord | None = None
) -> JsonDict:
    ftj = f.ftj(spec)
    status = derive_status(ftj, job, pods, progress, f.T0 + timedelta(seconds=120), SETTINGS)
    return f.ftj(spec, status=validated(status))


def test_derived_queued_is_progressing() -> None:
    result = health(derived(KUEUE, f.job(suspend=True), []))
    assert result["status"] == "Progressing"
    assert result["message"].startswith("Queued: ")


def test_derived_running_shows_the_percentage() -> None:
    record = ProgressRecord(stage="training", step=250, total_steps=1000, loss=1.5, time=f.ts(100))
    result = health(derived(None, f.job(active=1), [f.running()], record))
    assert result["status"] == "Progressing"
    assert result["message"].startswith("Running, 25% done: ")


def test_derived_succeeded_is_healthy() -> None:
    summary = TerminationSummary(outcome="Succeeded", reason="TrainingSucceeded", message="Adapter written.")
    job = f.job(succeeded=1, conditions=[f.job_cond("Complete", "CompletionsReached")])
    result = health(derived(None, job, [f.terminated(0, summary)]))
    assert result == {"status": "Healthy", "message": "Adapter written."}


def test_derived_data_failure_is_degraded() -> None:
    summary = TerminationSummary(outcome="Failed", reason="DataInvalid", message="Only 3 usable examples.")
    job = f.job(failed=1, conditions=[f.job_cond("Failed", "PodFailurePolicy")])
    result = health(derived(None, job, [f.terminated(3, summary)]))
    assert result == {"status": "Degraded", "message": "Only 3 usable examples."}


def test_derived_suspended_is_suspended() -> None:
    result = health(derived({"suspend": True}, None, []))
    assert result["status"] == "Suspended"
