"""`ftjob-train` end to end on the CPU: a run owns its output prefix (S3 through a moto server).

A re-created job (a new uid) on a prefix that holds another run's outputs is refused before the model is
downloaded; `spec.output.onExisting: Overwrite` retrains from scratch; `Resume` continues from that run's
checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ftjob import contract
from ftjob.contract import ExitCode
from ftjob_cli.demo.orders import write_dataset
from tests.support.s3_server import S3Endpoint
from tests.support.trainer_runs import run_trainer, small_spec, trainer_env


@pytest.fixture
def staged(s3_server: S3Endpoint, s3_bucket: str, tiny_model_path: Path, tmp_path: Path) -> None:
    client = s3_server.client()
    for file in sorted(tiny_model_path.iterdir()):
        client.upload_file(str(file), s3_bucket, f"models/tiny/{file.name}")
    data = write_dataset(tmp_path / "orders.jsonl", count=60)
    client.upload_file(str(data), s3_bucket, "data/orders.jsonl")


def env_for(
    s3_server: S3Endpoint, bucket: str, tmp_path: Path, uid: str, attempt: str, **overrides: Any
) -> dict[str, str]:
    """The environment of one pod: its own work directory, the FineTuneJob's uid."""
    spec = small_spec(bucket, s3_server.url, **overrides)
    env = trainer_env(spec, tmp_path / attempt, s3_server.env())
    env[contract.ENV_UID] = uid
    (tmp_path / attempt).mkdir()
    return env


def read_json(s3_server: S3Endpoint, bucket: str, key: str) -> Any:
    return json.loads(s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read())


@pytest.mark.usefixtures("staged")
def test_a_recreated_job_is_refused_unless_told_to_overwrite_or_resume(
    s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    prefix = f"s3://{s3_bucket}/runs/job/"
    first = run_trainer(env_for(s3_server, s3_bucket, tmp_path, "uid-first", "a"), tmp_path / "a")
    assert first.code == ExitCode.OK, first.log[-3000:]
    assert read_json(s3_server, s3_bucket, "runs/job/run.json")["uid"] == "uid-first"

    # Deleted and re-applied: same name, new uid. Before, it resumed step 6, trained 0 steps, trainLoss 0.0.
    refused = run_trainer(env_for(s3_server, s3_bucket, tmp_path, "uid-second", "b"), tmp_path / "b")
    assert refused.code == ExitCode.OUTPUT_PREFIX_IN_USE, refused.log[-3000:]
    assert refused.summary is not None and refused.summary.reason == "OutputPrefixInUse"
    assert "tests/job (uid uid-first)" in refused.summary.message and prefix in refused.summary.message
    assert not (tmp_path / "b" / "work" / "base-model").exists()  # refused before the model download
    assert "training" not in refused.progress_stages()
    assert read_json(s3_server, s3_bucket, "runs/job/run.json")["uid"] == "uid-first"

    overwrite = env_for(s3_server, s3_bucket, tmp_path, "uid-second", "c", output={"onExisting": "Overwrite"})
    second = run_trainer(overwrite, tmp_path / "c")
    assert second.code == ExitCode.OK, second.log[-3000:]
    assert second.summary is not None and second.summary.resumed_from_step is None
    assert "deleted the outputs of tests/job (uid uid-first)" in second.log
    manifest = read_json(s3_server, s3_bucket, "runs/job/manifest.json")
    assert manifest["job"]["uid"] == "uid-second" and manifest["resolved"]["stepsDone"] == 6
    assert manifest["output"]["action"] == "overwrote"
    assert manifest["output"]["previousOwner"]["uid"] == "uid-first"
    assert manifest["output"]["dataDigest"] and len(manifest["data"][0]["sha256"]) == 64

    # Continue from the other run's step-3 checkpoint (the step-6 one is removed to leave steps to train).
    client = s3_server.client()
    for obj in client.list_objects_v2(Bucket=s3_bucket, Prefix="runs/job/checkpoints/checkpoint-6/")[
        "Contents"
    ]:
        client.delete_object(Bucket=s3_bucket, Key=obj["Key"])
    resume = env_for(s3_server, s3_bucket, tmp_path, "uid-third", "d", output={"onExisting": "Resume"})
    third = run_trainer(resume, tmp_path / "d")
    assert third.code == ExitCode.OK, third.log[-3000:]
    assert third.summary is not None and third.summary.resumed_from_step == 3
    assert "continuing from step 3 of tests/job (uid uid-second)" in third.log
    manifest = read_json(s3_server, s3_bucket, "runs/job/manifest.json")
    assert manifest["output"]["action"] == "resumedOther" and manifest["resolved"]["stepsDone"] == 6
    assert manifest["job"]["uid"] == "uid-third"
