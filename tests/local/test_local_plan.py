"""`ftjob local` renders the operator's Job and maps it onto a local process, explicitly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ftjob.api import FineTuneJob
from ftjob_cli.local_run import LocalRunError, parse_secret_flags, plan_local_run, resolve_env

ROOT = Path(__file__).resolve().parents[2]

CONTAINER: dict[str, Any] = {
    "terminationMessagePath": "/dev/termination-log",
    "env": [
        {"name": "FTJOB_WORKDIR", "value": "/workspace"},
        {"name": "HF_HOME", "value": "/workspace/hf-home"},
        {"name": "FTJOB_TERMINATION_LOG", "value": "/dev/termination-log"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "id"}}},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "secret"}}},
    ],
}
MOUNTS = {"/workspace": Path("/run/workspace"), "/tmp": Path("/run/tmp")}


def test_paths_map_to_the_run_directory_and_secrets_resolve() -> None:
    env = resolve_env(
        CONTAINER,
        secrets={("s3", "id"): "from-flag"},
        local_env={
            "AWS_SECRET_ACCESS_KEY": "from-shell",
            "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000",
            "UNRELATED": "x",
        },
        mounts=MOUNTS,
        termination_log=Path("/run/termination-log"),
    )
    assert env["FTJOB_WORKDIR"] == "/run/workspace"
    assert env["HF_HOME"] == "/run/workspace/hf-home"
    assert env["FTJOB_TERMINATION_LOG"] == "/run/termination-log"
    assert env["AWS_ACCESS_KEY_ID"] == "from-flag"  # flag beats shell
    assert env["AWS_SECRET_ACCESS_KEY"] == "from-shell"
    assert env["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:9000"  # your identity plays the pod's
    assert "UNRELATED" not in env


def test_a_run_directory_under_a_mounted_path_is_not_remapped() -> None:
    # /tmp is a pod volume; a local run directory that happens to live under /tmp must stay where it is.
    mounts = {"/workspace": Path("/tmp/run/workspace"), "/tmp": Path("/tmp/run/tmp")}
    env = resolve_env(
        CONTAINER,
        secrets={("s3", "id"): "a", ("s3", "secret"): "b"},
        local_env={},
        mounts=mounts,
        termination_log=Path("/tmp/run/termination-log"),
    )
    assert env["FTJOB_TERMINATION_LOG"] == "/tmp/run/termination-log"
    assert env["FTJOB_WORKDIR"] == "/tmp/run/workspace"


def test_every_missing_secret_is_named() -> None:
    with pytest.raises(LocalRunError) as err:
        resolve_env(CONTAINER, secrets={}, local_env={}, mounts=MOUNTS, termination_log=Path("/t"))
    message = str(err.value)
    assert (
        "env AWS_ACCESS_KEY_ID of the trainer reads key 'id' of Secret 's3': pass --secret s3/id=VALUE"
        in message
    )
    assert "export AWS_SECRET_ACCESS_KEY" in message


def test_unsupported_env_sources_are_refused() -> None:
    container = {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]}
    with pytest.raises(LocalRunError, match="env X: only plain values and secretKeyRef"):
        resolve_env(container, secrets={}, local_env={}, mounts={}, termination_log=Path("/t"))


@pytest.mark.parametrize("flag", ["s3=value", "s3/=v", "/k=v", "s3/k"])
def test_malformed_secret_flags(flag: str) -> None:
    with pytest.raises(LocalRunError, match="expected NAME/KEY=VALUE"):
        parse_secret_flags([flag])


def test_secret_values_may_contain_equals_signs() -> None:
    assert parse_secret_flags(["s3/key=a=b"]) == {("s3", "key"): "a=b"}


def test_plan_uses_the_operators_rendering(tmp_path: Path) -> None:
    doc = json.loads(
        json.dumps(__import__("yaml").safe_load((ROOT / "examples" / "minio-kueue.yaml").read_text()))
    )
    job = FineTuneJob.model_validate(doc)
    plan = plan_local_run(
        job,
        tmp_path,
        secrets={("minio-creds", "AWS_ACCESS_KEY_ID"): "a", ("minio-creds", "AWS_SECRET_ACCESS_KEY"): "b"},
        local_env={},
    )
    assert plan.job["metadata"]["name"] == "invoices-lora-train"
    assert plan.job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a-gpus"
    assert Path(plan.command[0]).name == "ftjob-train"
    spec = json.loads(plan.env["FTJOB_SPEC"])
    assert spec["storage"]["endpointUrl"] == "http://minio.minio-system.svc:9000" and "suspend" not in spec
    assert plan.env["FTJOB_WORKDIR"] == str(tmp_path / "workspace")
    assert plan.env["AWS_ACCESS_KEY_ID"] == "a"


def test_local_paths_are_allowed_locally(tmp_path: Path) -> None:
    # The operator refuses them on a cluster (nothing backs them there); on this machine they are real.
    doc = {
        "apiVersion": "ftjob.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "local-paths", "namespace": "default"},
        "spec": {
            "baseModel": {"uri": str(tmp_path / "model")},
            "data": {"trainUri": f"file://{tmp_path}/train.jsonl"},
            "output": {"uri": f"file://{tmp_path}/out/"},
        },
    }
    plan = plan_local_run(FineTuneJob.model_validate(doc), tmp_path / "run", secrets={}, local_env={})
    spec = json.loads(plan.env["FTJOB_SPEC"])
    assert spec["output"]["uri"] == f"file://{tmp_path}/out/"
