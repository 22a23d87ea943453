"""`ftjob-train` end to end on the CPU: the tiny model, LoRA, S3 through a moto server over HTTP.

Each test runs the trainer as a separate process configured only by its environment, as in the pod.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ftjob import contract
from ftjob.contract import USER_ERROR_EXIT_CODES, ExitCode
from ftjob_cli.demo.orders import write_dataset
from tests.support.s3_server import S3Endpoint
from tests.support.trainer_runs import (
    TrainerResult,
    run_trainer,
    run_trainer_until,
    small_spec,
    trainer_env,
    with_hooks,
)

SECRET = "s3cr3t-value-that-must-never-appear"


@pytest.fixture
def stage(
    s3_server: S3Endpoint, s3_bucket: str, tiny_model_path: Path, tmp_path: Path
) -> Callable[..., dict[str, str]]:
    """Upload the tiny model and the demo data; returns a function building the trainer's env."""
    client = s3_server.client()
    for file in sorted(tiny_model_path.iterdir()):
        client.upload_file(str(file), s3_bucket, f"models/tiny/{file.name}")
    data = write_dataset(tmp_path / "orders.jsonl", count=60)
    client.upload_file(str(data), s3_bucket, "data/orders.jsonl")

    def env_for(**overrides: Any) -> dict[str, str]:
        spec = small_spec(s3_bucket, s3_server.url, **overrides)
        # The secret key is a real credential as far as the trainer knows: it must stay out of every output.
        extra = {**s3_server.env(), "AWS_SECRET_ACCESS_KEY": SECRET}
        return trainer_env(spec, tmp_path, extra)

    return env_for


def objects(s3_server: S3Endpoint, bucket: str, prefix: str) -> list[str]:
    pages = s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def read_json(s3_server: S3Endpoint, bucket: str, key: str) -> Any:
    return json.loads(s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def assert_no_secret(result: TrainerResult, *texts: str) -> None:
    for text in (result.log, result.termination_text, *texts):
        assert SECRET not in text


def test_trains_evaluates_and_publishes(
    stage: Callable[..., dict[str, str]],
    s3_server: S3Endpoint,
    s3_bucket: str,
    tmp_path: Path,
    tiny_model_path: Path,
) -> None:
    result = run_trainer(stage(), tmp_path)
    assert result.code == ExitCode.OK, result.log[-3000:]
    assert result.summary is not None and result.summary.outcome == "Succeeded"
    assert result.summary.reason == "TrainingSucceeded"

    keys = objects(s3_server, s3_bucket, "runs/job/")
    for expected in (
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "adapter/tokenizer.json",
        "eval/eval.json",
        "eval/report.md",
        "eval/loss_curve.png",
        "eval/predictions.jsonl",
        "data-report.json",
        "manifest.json",
        "summary.json",
        "checkpoints/checkpoint-6/COMPLETE",
        "checkpoints/job.json",
    ):
        assert f"runs/job/{expected}" in keys

    manifest = read_json(s3_server, s3_bucket, "runs/job/manifest.json")
    assert manifest["data"][0]["uri"] == f"s3://{s3_bucket}/data/orders.jsonl"
    assert len(manifest["data"][0]["sha256"]) == 64
    assert set(manifest["baseModel"]["files"]) >= {"model.safetensors", "config.json"}
    assert manifest["resolved"]["method"] == "lora"  # qlora asked, no CUDA here: said in the log too
    assert "no CUDA device" in result.log
    assert manifest["libraries"]["transformers"] and manifest["seed"] == 42
    assert manifest["tokensTrained"] > 0

    evaluation = read_json(s3_server, s3_bucket, "runs/job/eval/eval.json")
    assert (
        set(evaluation["tuned"])
        == set(evaluation["base"])
        == {"exactMatch", "tokenF1", "rougeL", "jsonValid"}
    )
    assert evaluation["evalLoss"] is not None and evaluation["baseEvalLoss"] is not None
    assert result.summary.metrics is not None and result.summary.metrics.eval_loss == evaluation["evalLoss"]
    assert result.summary.dataset is not None and result.summary.dataset.dropped_by_reason["invalidJson"] == 1
    assert result.summary.artifacts is not None
    assert result.summary.artifacts.adapter == f"s3://{s3_bucket}/runs/job/adapter/"

    stages = result.progress_stages()
    assert (
        stages[0] == "downloading"
        and stages[-1] == "done"
        and "training" in stages
        and "evaluating" in stages
    )
    assert "step 6/6 (100%)" in result.log
    assert_no_secret(result, json.dumps(manifest))

    # The adapter is usable: it loads onto the base model and generates.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "downloaded-adapter"
    adapter.mkdir()
    for key in keys:
        if key.startswith("runs/job/adapter/"):
            s3_server.client().download_file(s3_bucket, key, str(adapter / key.rsplit("/", 1)[-1]))
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(tiny_model_path)), str(adapter)
    )
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0

    # The pod is gone before the operator read its termination message: `ftjob-train collect` (what the
    # operator's collector Job runs) re-reads the same summary from the output prefix.
    collected = collect(stage(), tmp_path)
    assert collected.code == ExitCode.OK, collected.log[-3000:]
    assert collected.termination_text == result.termination_text
    assert_no_secret(collected)

    # The same run again (same uid, spec and data; `ftjob local` twice): answered from its summary, no training.
    again = run_trainer(stage(), tmp_path)
    assert again.code == ExitCode.OK, again.log[-3000:]
    assert again.termination_text == result.termination_text
    assert "already succeeded and published its results" in again.log
    assert "training" not in again.progress_stages()

    # Same training, other evaluation settings: the final checkpoint is resumed, no step is left to train,
    # and the train loss reported is the run's last logged one, not the 0.0 of an attempt that trained nothing.
    reevaluated = run_trainer(stage(evaluation={"maxSamples": 3}), tmp_path)
    assert reevaluated.code == ExitCode.OK, reevaluated.log[-3000:]
    assert "resuming from checkpoint at step 6" in reevaluated.log
    assert "the checkpoint at step 6 is the last one: nothing left to train" in reevaluated.log
    assert reevaluated.summary is not None and reevaluated.summary.metrics is not None
    logged = [p["trainLoss"] for p in evaluation["history"] if p.get("trainLoss") is not None]
    reported = reevaluated.summary.metrics.train_loss
    assert reported is not None and reported > 0
    assert reported == pytest.approx(logged[-1]), (reported, logged)


def collect(env: dict[str, str], tmp_path: Path, uid: str = "0000-test") -> TrainerResult:
    log = tmp_path / "collector-termination-log"
    log.unlink(missing_ok=True)
    env = {**env, contract.ENV_TERMINATION_LOG: str(log), contract.ENV_UID: uid}
    return run_trainer(env, tmp_path, timeout=120, args=("collect",))


def test_collect_refuses_a_missing_summary_and_another_run_s(
    stage: Callable[..., dict[str, str]], s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    missing = collect(stage(), tmp_path)
    assert missing.code == ExitCode.RESULTS_NOT_FOUND, missing.log[-2000:]
    assert missing.summary is not None and missing.summary.reason == "ResultsNotFound"
    assert f"s3://{s3_bucket}/runs/job/summary.json does not exist" in missing.summary.message

    # A failed run writes its summary too (only under a prefix it owns): here, the data check's verdict.
    failed = run_trainer(stage(data={"minExamples": 500}), tmp_path)
    assert failed.code == ExitCode.DATA_INVALID
    record = read_json(s3_server, s3_bucket, "runs/job/summary.json")
    assert record["uid"] == "0000-test" and record["summary"]["reason"] == "DataInvalid"

    other = collect(stage(), tmp_path, uid="1111-other")
    assert other.code == ExitCode.RESULTS_NOT_FOUND
    assert (
        other.summary is not None
        and "belongs to another run (FineTuneJob uid 0000-test" in other.summary.message
    )


def test_bad_data_fails_fast_with_report_and_no_training(
    stage: Callable[..., dict[str, str]], s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    result = run_trainer(stage(data={"minExamples": 500}), tmp_path)
    assert result.code == ExitCode.DATA_INVALID
    assert result.summary is not None and result.summary.reason == "DataInvalid"
    assert "fewer than minExamples 500" in result.summary.message
    assert result.summary.dataset is not None and result.summary.dataset.train_examples > 0
    keys = objects(s3_server, s3_bucket, "runs/job/")
    assert "runs/job/data-report.json" in keys
    assert not [k for k in keys if "checkpoints/" in k or "adapter/" in k]
    report = read_json(s3_server, s3_bucket, "runs/job/data-report.json")
    assert "fewer than minExamples 500" in report["error"]
    assert "training" not in result.progress_stages()


def test_bad_data_fails_before_the_model_weights_are_downloaded(
    stage: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    # The data check needs the tokenizer only: the weights (tens of GB for real models) wait for its verdict.
    result = run_trainer(stage(data={"minExamples": 500}), tmp_path)
    assert result.code == ExitCode.DATA_INVALID, result.log[-3000:]
    work = tmp_path / "work"
    assert (work / "base-model" / "tokenizer.json").is_file()
    assert not [p.name for p in work.rglob("*.safetensors")], "weights were downloaded before the data check"


def test_missing_input_is_a_user_error_naming_the_uri(
    stage: Callable[..., dict[str, str]], s3_bucket: str, tmp_path: Path
) -> None:
    result = run_trainer(stage(data={"trainUri": f"s3://{s3_bucket}/data/nope.jsonl"}), tmp_path)
    assert result.code == ExitCode.INPUT_UNAVAILABLE
    assert result.summary is not None and result.summary.reason == "InputUnavailable"
    assert f"s3://{s3_bucket}/data/nope.jsonl" in result.summary.message
    assert "no such key" in result.summary.message


def test_unreachable_endpoint_is_retriable(stage: Callable[..., dict[str, str]], tmp_path: Path) -> None:
    result = run_trainer(stage(storage={"endpointUrl": "http://127.0.0.1:9"}), tmp_path)
    assert result.code == ExitCode.STORAGE_UNREACHABLE
    assert result.summary is not None and result.summary.reason == "StorageUnreachable"
    assert "127.0.0.1:9" in result.summary.message


def test_cuda_out_of_memory_fails_at_once_with_the_numbers_and_advice(
    stage: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    # The hook raises torch.OutOfMemoryError from the second micro-batch, as CUDA would.
    result = run_trainer(with_hooks(stage(), FTJOB_TEST_OOM_AT_MICROBATCH="2"), tmp_path)
    assert result.code == ExitCode.OUT_OF_MEMORY, result.log[-3000:]
    assert ExitCode.OUT_OF_MEMORY in USER_ERROR_EXIT_CODES  # podFailurePolicy: FailJob, no retry
    summary = result.summary
    assert summary is not None and summary.outcome == "Failed" and summary.reason == "OutOfMemory"
    for part in (
        "CUDA out of memory during training",
        "perDeviceBatchSize 4",
        "maxSeqLength 128",
        "gradientAccumulationSteps 1",
        "gradientCheckpointing on",
        "lower spec.training.perDeviceBatchSize",
        "lower spec.training.maxSeqLength",
    ):
        assert part in summary.message, summary.message
    assert summary.dataset is not None and summary.dataset.train_examples > 0


def test_invalid_spec_is_a_config_error(stage: Callable[..., dict[str, str]], tmp_path: Path) -> None:
    result = run_trainer(stage(peft={"r": 0}), tmp_path)
    assert result.code == ExitCode.CONFIG_INVALID
    assert result.summary is not None and result.summary.reason == "ConfigInvalid"
    assert "spec.peft.r: must be >= 1 (got 0)" in result.summary.message


def test_sigterm_checkpoints_then_the_next_attempt_resumes(
    stage: Callable[..., dict[str, str]], s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    env = stage(training={"maxSteps": 40, "loggingSteps": 5}, checkpointing={"everySteps": 4})
    first = run_trainer_until(env, tmp_path, marker="checkpoint at step 4 saved")
    assert first.code == ExitCode.INTERRUPTED, first.log[-3000:]
    assert first.summary is not None and first.summary.outcome == "Interrupted"
    assert "SIGTERM received" in first.log
    saved = [k for k in objects(s3_server, s3_bucket, "runs/job/checkpoints/") if k.endswith("/COMPLETE")]
    assert saved, "no complete checkpoint after SIGTERM"
    last_step = max(int(k.split("checkpoint-")[1].split("/")[0]) for k in saved)
    assert 4 <= last_step < 40

    second = run_trainer(env, tmp_path)
    assert second.code == ExitCode.OK, second.log[-3000:]
    assert f"resuming from checkpoint at step {last_step}" in second.log
    assert second.summary is not None and second.summary.resumed_from_step == last_step
    manifest = read_json(s3_server, s3_bucket, "runs/job/manifest.json")
    assert manifest["resumedFromStep"] == last_step and manifest["resolved"]["stepsDone"] == 40


def test_sigterm_mid_step_saves_after_the_current_micro_batch_within_the_grace_period(
    stage: Callable[..., dict[str, str]], s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    # 8 micro-batches of 1 s per optimiser step; SIGTERM lands in micro-batch 11, i.e. 3 into step 2. Waiting
    # for the end of the step would run micro-batches 12-16 first.
    grace = 30
    env = stage(
        training={"maxSteps": 3, "perDeviceBatchSize": 1, "gradientAccumulationSteps": 8, "loggingSteps": 1},
        checkpointing={"everySteps": 100, "terminationGracePeriodSeconds": grace},
    )
    first = run_trainer_until(
        with_hooks(env, FTJOB_TEST_MICROBATCH_SECONDS="1"), tmp_path, marker="micro-batch 11 (step 1)"
    )
    print(f"SIGTERM to exit, checkpoint uploaded: {first.stop_seconds:.1f} s")
    assert first.code == ExitCode.INTERRUPTED, first.log[-3000:]
    assert "micro-batch 12 " not in first.log, "the trainer ran on to the end of the optimiser step"
    saved = [k for k in objects(s3_server, s3_bucket, "runs/job/checkpoints/") if k.endswith("/COMPLETE")]
    assert saved == ["runs/job/checkpoints/checkpoint-1/COMPLETE"]
    assert first.stop_seconds is not None and first.stop_seconds < grace, first.stop_seconds

    # The checkpoint holds the last complete step; the unfinished one is replayed.
    second = run_trainer(env, tmp_path)
    assert second.code == ExitCode.OK, second.log[-3000:]
    assert "resuming from checkpoint at step 1" in second.log
    manifest = read_json(s3_server, s3_bucket, "runs/job/manifest.json")
    assert manifest["resolved"]["stepsDone"] == 3
