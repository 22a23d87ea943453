"""Checkpoint publication/resumption in an output location, progress records, and the termination summary."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from ftjob.api.status import DatasetStats, Metrics
from ftjob.contract import (
    PROGRESS_PREFIX,
    TERMINATION_MESSAGE_LIMIT,
    ProgressRecord,
    TerminationSummary,
    parse_latest_progress,
)
from ftjob_trainer.callbacks import CheckpointUploadCallback, best_step
from ftjob_trainer.checkpoints import CheckpointStore
from ftjob_trainer.progress import LogLineReporter, StageTracker, ThroughputMeter, human_line
from ftjob_trainer.storage import open_storage


def make_checkpoint(root: Path, step: int) -> Path:
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"weights-%d" % step)
    (folder / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    return folder


def store(tmp_path: Path, fingerprint: str = "abc", keep_last: int = 2) -> CheckpointStore:
    return CheckpointStore(open_storage(), f"file://{tmp_path}/out/", fingerprint, keep_last)


def test_publish_marks_complete_and_keeps_the_newest(tmp_path: Path) -> None:
    checkpoints = store(tmp_path)
    for step in (10, 20, 30):
        checkpoints.publish(step, make_checkpoint(tmp_path / "local", step))
    assert checkpoints.complete_steps() == [20, 30]
    assert checkpoints.latest_resumable() == 30
    restored = checkpoints.download(30, tmp_path / "resume")
    assert (restored / "trainer_state.json").read_text() == '{"global_step": 30}'
    assert not (restored / "COMPLETE").exists()


def test_the_best_checkpoint_survives_retention(tmp_path: Path) -> None:
    """Early stopping loads the best checkpoint at the end: retention must not delete it (before: it did)."""
    checkpoints = store(tmp_path)
    for step in (10, 20, 30, 40):
        checkpoints.publish(step, make_checkpoint(tmp_path / "local", step), keep=frozenset({10}))
    assert checkpoints.complete_steps() == [10, 30, 40]
    checkpoints.publish(50, make_checkpoint(tmp_path / "local", 50), keep=frozenset({40}))
    assert checkpoints.complete_steps() == [40, 50]  # no longer the best: an ordinary old one again


@pytest.mark.parametrize(
    ("best", "step"),
    [("/work/out/checkpoint-30", 30), (None, None), ("/work/out/best", None), ("checkpoint-x", None)],
)
def test_the_best_step_is_read_from_the_trainer_state(best: str | None, step: int | None) -> None:
    assert best_step(TrainerState(best_model_checkpoint=best)) == step


def test_the_upload_callback_keeps_the_best_checkpoint(tmp_path: Path) -> None:
    kept: list[frozenset[int]] = []

    class Sink:
        def publish(self, step: int, local_dir: Path, keep: frozenset[int] = frozenset()) -> None:
            kept.append(keep)

    make_checkpoint(tmp_path, 20)
    state = TrainerState(global_step=20, best_model_checkpoint=str(tmp_path / "checkpoint-10"))
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[])
    CheckpointUploadCallback(Sink()).on_save(args, state, TrainerControl())
    assert kept == [frozenset({10})]


def test_a_checkpoint_without_its_marker_is_ignored(tmp_path: Path) -> None:
    checkpoints = store(tmp_path)
    checkpoints.publish(10, make_checkpoint(tmp_path / "local", 10))
    half = tmp_path / "out" / "checkpoints" / "checkpoint-20"  # upload interrupted before COMPLETE
    half.mkdir(parents=True)
    (half / "adapter_model.safetensors").write_bytes(b"partial")
    assert checkpoints.latest_resumable() == 10


def test_checkpoints_of_another_configuration_are_not_resumed_and_get_replaced(tmp_path: Path) -> None:
    store(tmp_path, fingerprint="old").publish(50, make_checkpoint(tmp_path / "a", 50))
    new = store(tmp_path, fingerprint="new")
    assert new.latest_resumable() is None
    new.publish(5, make_checkpoint(tmp_path / "b", 5))
    assert new.complete_steps() == [5]  # the stale step-50 checkpoint would otherwise win later
    assert new.latest_resumable() == 5


def test_progress_lines_round_trip_and_read_well() -> None:
    stream = io.StringIO()
    record = ProgressRecord(
        stage="training",
        step=40,
        total_steps=120,
        epoch=0.667,
        loss=1.2345,
        tokens_per_second=812.4,
        eta_seconds=130,
        time="2026-11-24T06:00:00Z",
    )
    LogLineReporter(stream).report(record)
    log = "noise\n" + stream.getvalue() + "FTJOB_PROGRESS {broken\nmore noise\n"
    assert parse_latest_progress(log) == record
    assert human_line(record) == "step 40/120 (33%) | epoch 0.67 | loss 1.2345 | 812 tok/s | ETA 2m10s"
    assert parse_latest_progress("no records here") is None


def test_stages_after_training_keep_the_step_counts() -> None:
    stream = io.StringIO()
    tracker = StageTracker(LogLineReporter(stream))
    tracker.stage("downloading")
    tracker.report(
        ProgressRecord(
            stage="training", step=120, total_steps=120, epoch=1.0, loss=0.5, eta_seconds=3, time="t"
        )
    )
    done = tracker.stage("done")
    assert (done.stage, done.step, done.total_steps, done.loss, done.eta_seconds) == (
        "done",
        120,
        120,
        0.5,
        None,
    )
    assert parse_latest_progress(stream.getvalue()) == done
    assert StageTracker(LogLineReporter(io.StringIO())).stage("downloading").total_steps == 0


def test_throughput_meter_estimates_rate_and_eta() -> None:
    meter = ThroughputMeter()
    assert meter.eta_seconds(0, 100) is None
    meter.add(step=10, tokens_seen=1000, at=100.0)
    meter.add(step=30, tokens_seen=5000, at=110.0)
    assert meter.rates() == (2.0, 400.0)
    assert meter.eta_seconds(30, 100) == 35


def test_termination_summary_fits_the_kubelet_limit() -> None:
    summary = TerminationSummary(
        outcome="Failed",
        reason="DataInvalid",
        message="x" * 10_000,
        metrics=Metrics(tuned={f"m{i}": 0.5 for i in range(30)}),
        dataset=DatasetStats(dropped_by_reason={f"reason{i}": i for i in range(30)}),
    )
    text = summary.to_message()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    parsed = TerminationSummary.parse(text)
    assert parsed is not None and parsed.reason == "DataInvalid" and parsed.message.startswith("xxx")
    assert TerminationSummary.parse("Error: OOM") is None and TerminationSummary.parse("") is None


def test_a_logging_step_is_reported_once_with_its_own_loss(tmp_path: Path) -> None:
    """transformers calls on_step_end before on_log for the same step: a heartbeat there printed the step
    twice, the first time with the previous step's loss."""
    from ftjob_trainer.callbacks import ProgressCallback

    stream = io.StringIO()
    callback = ProgressCallback(LogLineReporter(stream), heartbeat_seconds=0.0)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    state = TrainerState(global_step=20, max_steps=41, epoch=0.5)
    callback.last_loss = 0.0113
    logging_step = TrainerControl(should_log=True)
    callback.on_step_end(args, state, logging_step)
    callback.on_log(args, state, logging_step, logs={"loss": 0.0046})
    records = [line for line in stream.getvalue().splitlines() if line.startswith(PROGRESS_PREFIX)]
    assert len(records) == 1 and '"loss":0.0046' in records[0]
    # Between logging steps the heartbeat still reports (the operator's status never falls a poll behind).
    state.global_step = 21
    callback.on_step_end(args, state, TrainerControl(should_log=False))
    assert sum(line.startswith(PROGRESS_PREFIX) for line in stream.getvalue().splitlines()) == 2
