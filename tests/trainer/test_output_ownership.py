"""Who may use an output prefix: `run.json`, spec.output.onExisting, and resume only for the same run and data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftjob.contract import ExitCode
from ftjob_trainer.checkpoints import CheckpointStore
from ftjob_trainer.errors import OutputPrefixInUse
from ftjob_trainer.manifest import InputFile
from ftjob_trainer.ownership import (
    OnExisting,
    OutputClaim,
    RunRecord,
    claim_output,
    data_digest,
    ensure_owner,
)
from ftjob_trainer.storage import open_storage

DATA = [InputFile(uri="s3://b/train.jsonl", sha256="a" * 64)]
NEW_DATA = [InputFile(uri="s3://b/train.jsonl", sha256="b" * 64)]


def run(uid: str, data: list[InputFile] = DATA) -> RunRecord:
    return RunRecord(uid=uid, name=f"job-{uid}", namespace="team", data=data, data_digest=data_digest(data))


def out(tmp_path: Path) -> str:
    return f"file://{tmp_path}/out/"


def store(tmp_path: Path, me: RunRecord) -> CheckpointStore:
    return CheckpointStore(open_storage(), out(tmp_path), "fp", keep_last=2, data_digest=me.data_digest)


def claim(tmp_path: Path, me: RunRecord, on_existing: OnExisting = "Refuse") -> OutputClaim:
    return claim_output(open_storage(), out(tmp_path), me, on_existing, store(tmp_path, me))


def train(tmp_path: Path, me: RunRecord, steps: tuple[int, ...] = (3, 6)) -> None:
    """What a finished run leaves: its claim, checkpoints, an adapter and a manifest."""
    claim(tmp_path, me)
    for step in steps:
        folder = tmp_path / "local" / me.uid / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
        store(tmp_path, me).publish(step, folder)
    root = tmp_path / "out"
    (root / "adapter").mkdir()
    (root / "adapter" / "adapter_model.safetensors").write_bytes(b"weights of " + me.uid.encode())
    (root / "data-report.json").write_text("{}")
    (root / "manifest.json").write_text(json.dumps({"job": {"uid": me.uid, "name": me.name}}))


def owner(tmp_path: Path) -> str:
    return str(json.loads((tmp_path / "out" / "run.json").read_text())["uid"])


def test_a_recreated_job_is_refused_naming_the_run_that_owns_the_prefix(tmp_path: Path) -> None:
    train(tmp_path, run("uid-old"))
    with pytest.raises(OutputPrefixInUse) as refused:
        claim(tmp_path, run("uid-new"))
    message = str(refused.value)
    assert "team/job-uid-old (uid uid-old)" in message and out(tmp_path) in message
    assert "onExisting" in message and "adapter, checkpoints, manifest.json" in message
    assert (
        refused.value.exit_code == ExitCode.OUTPUT_PREFIX_IN_USE
        and refused.value.reason == "OutputPrefixInUse"
    )
    assert owner(tmp_path) == "uid-old"  # nothing touched
    assert store(tmp_path, run("uid-old")).complete_steps() == [3, 6]


def test_a_prefix_from_before_owner_records_is_claimed_through_its_manifest(tmp_path: Path) -> None:
    train(tmp_path, run("uid-old"))
    (tmp_path / "out" / "run.json").unlink()
    with pytest.raises(OutputPrefixInUse, match=r"uid uid-old"):
        claim(tmp_path, run("uid-new"))
    assert claim(tmp_path, run("uid-old")).action == "sameRun"


def test_the_same_job_retried_resumes_its_checkpoints(tmp_path: Path) -> None:
    me = run("uid-1")
    train(tmp_path, me)
    assert claim(tmp_path, me).action == "sameRun"
    assert store(tmp_path, me).latest_resumable() == 6


def test_the_same_job_with_changed_data_does_not_resume_and_says_so(tmp_path: Path) -> None:
    train(tmp_path, run("uid-1"))
    refreshed = run("uid-1", NEW_DATA)
    result = claim(tmp_path, refreshed)
    assert result.action == "sameRun" and "the data changed" in result.notes[0]
    checkpoints = store(tmp_path, refreshed)
    assert checkpoints.latest_resumable() is None
    folder = tmp_path / "fresh" / "checkpoint-2"
    folder.mkdir(parents=True)
    checkpoints.publish(2, folder)
    assert checkpoints.complete_steps() == [2]  # the stale ones were replaced, not kept to be resumed later
    assert checkpoints.latest_resumable() == 2


def test_overwrite_deletes_only_the_other_runs_outputs_and_starts_from_scratch(tmp_path: Path) -> None:
    train(tmp_path, run("uid-old"))
    foreign = tmp_path / "out" / "data" / "train.jsonl"  # not a run's output: kept
    foreign.parent.mkdir(parents=True)
    foreign.write_text("{}\n")
    result = claim(tmp_path, run("uid-new"), "Overwrite")
    assert result.action == "overwrote" and result.previous is not None and result.previous.uid == "uid-old"
    assert "deleted the outputs of team/job-uid-old" in result.notes[0]
    left = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()
    )
    assert left == ["data/train.jsonl", "run.json"]
    assert owner(tmp_path) == "uid-new"
    assert result.to_manifest(run("uid-new"))["previousOwner"]["uid"] == "uid-old"


def test_resume_continues_from_the_other_runs_newest_checkpoint(tmp_path: Path) -> None:
    train(tmp_path, run("uid-old"))
    result = claim(tmp_path, run("uid-new"), "Resume")
    assert result.action == "resumedOther" and "continuing from step 6" in result.notes[0]
    assert store(tmp_path, run("uid-new")).latest_resumable() == 6
    assert owner(tmp_path) == "uid-new"


def test_resume_is_refused_when_the_checkpoints_were_trained_on_other_data(tmp_path: Path) -> None:
    train(tmp_path, run("uid-old"))
    with pytest.raises(OutputPrefixInUse, match="no complete checkpoint of team/job-uid-old"):
        claim(tmp_path, run("uid-new", NEW_DATA), "Resume")
    assert owner(tmp_path) == "uid-old"


def test_a_run_that_left_no_training_outputs_is_taken_over(tmp_path: Path) -> None:
    claim(tmp_path, run("uid-old"))  # e.g. failed on its data: only run.json and the data report
    (tmp_path / "out" / "data-report.json").write_text("{}")
    result = claim(tmp_path, run("uid-new"))
    assert result.action == "new" and result.previous is not None and result.previous.uid == "uid-old"
    assert owner(tmp_path) == "uid-new"


def test_a_run_whose_prefix_was_claimed_since_stops_before_writing(tmp_path: Path) -> None:
    first, second = run("uid-1"), run("uid-2")
    claim(tmp_path, first)
    claim(tmp_path, second)  # both started on the empty prefix at the same time; the later claim wins
    ensure_owner(open_storage(), out(tmp_path), second)
    guarded = store(tmp_path, first)
    guarded.guard = lambda: ensure_owner(open_storage(), out(tmp_path), first)
    folder = tmp_path / "local" / "checkpoint-1"
    folder.mkdir(parents=True)
    with pytest.raises(OutputPrefixInUse, match="claimed by another run, team/job-uid-2"):
        guarded.publish(1, folder)
    assert guarded.complete_steps() == []
