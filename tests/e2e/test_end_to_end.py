"""End to end: a FineTuneJob goes in; the operator (a real process against the emulated API) renders the
Job; a node agent runs the Job's pods as real trainer processes against an S3 server (moto over HTTP);
the status, the adapter and the evaluation come out.

Every test ends by scanning the operator's log for errors and tracebacks no test expected.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftjob.demo.orders import write_dataset
from tests.support.kube_client import BATCH, FTJ, JsonDict, KubeClient, condition, ftj_status, path, wait_for
from tests.support.kube_emulator import EmulatorServer, request_matches
from tests.support.node_agent import NodeAgent
from tests.support.operator_process import OperatorProcess
from tests.support.s3_server import S3Endpoint
from tests.support.trainer_runs import small_spec

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NS = "ml-team"
FAST = ["--progress-interval", "1", "--termination-grace-period", "5"]
S3_SECRET = {("s3-creds", "AWS_ACCESS_KEY_ID"): "testing", ("s3-creds", "AWS_SECRET_ACCESS_KEY"): "testing"}


@dataclass
class Cluster:
    api: KubeClient
    emulator: EmulatorServer
    operator: OperatorProcess
    agent: NodeAgent
    s3: S3Endpoint

    def create(self, name: str, spec: JsonDict) -> JsonDict:
        body = {
            "apiVersion": "ftjob.dev/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": name},
            "spec": spec,
        }
        return self.api.create(path(FTJ, "finetunejobs", NS), body)

    def wait_phase(self, name: str, phase: str, timeout: float = 300) -> JsonDict:
        def probe() -> JsonDict | None:
            assert not self.agent.errors, self.agent.errors
            status = ftj_status(self.api, NS, name)
            if status.get("phase") in ("Succeeded", "Failed") and status.get("phase") != phase:
                raise AssertionError(
                    f"{name} ended {status.get('phase')}, not {phase}: {status.get('message')}"
                )
            return status if status.get("phase") == phase else None

        return wait_for(probe, timeout=timeout, interval=0.5, what=f"{name} to reach {phase}")

    def keys(self, bucket: str, prefix: str) -> list[str]:
        pages = self.s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def job_creations(self) -> int:
        return self.emulator.count_requests(request_matches("post", "jobs"))

    def event_reasons(self, name: str) -> list[str]:
        return [e["reason"] for e in self.api.events(NS, involved=name)]


@pytest.fixture
def log_allowances() -> list[str]:
    return []


@pytest.fixture
def e2e(
    api: KubeClient,
    cluster: EmulatorServer,
    kubeconfig: Path,
    s3_server: S3Endpoint,
    tmp_path: Path,
    log_allowances: list[str],
) -> Iterator[Cluster]:
    operator = OperatorProcess(kubeconfig, tmp_path / "operator.log", FAST)
    operator.start()
    local_env = {
        "PATH": __import__("os").environ["PATH"],
        "HOME": str(tmp_path / "home"),
        # The pod's identity: plain AWS variables, as IRSA or a node role would provide them.
        **s3_server.env(),
        "AWS_ENDPOINT_URL_S3": s3_server.url,
        "HF_HUB_OFFLINE": "1",
    }
    with NodeAgent(api, cluster, NS, tmp_path / "pods", secrets=S3_SECRET, local_env=local_env) as agent:
        yield Cluster(api, cluster, operator, agent, s3_server)
    operator.stop()
    problems = operator.problems(log_allowances)
    assert not problems, "unexpected errors in the operator log:\n" + "\n".join(problems)
    assert not agent.errors, agent.errors


@pytest.fixture
def tiny_inputs(s3_server: S3Endpoint, s3_bucket: str, tiny_model_path: Path, tmp_path: Path) -> str:
    """The tiny model and the demo data in a fresh bucket; returns the bucket."""
    client = s3_server.client()
    for file in sorted(tiny_model_path.iterdir()):
        client.upload_file(str(file), s3_bucket, f"models/tiny/{file.name}")
    client.upload_file(
        str(write_dataset(tmp_path / "orders.jsonl", count=60)), s3_bucket, "data/orders.jsonl"
    )
    return s3_bucket


def tiny_spec(bucket: str, endpoint: str, **overrides: Any) -> JsonDict:
    """The trainer tests' small spec, as a cluster user writes it: credentials from a Secret, no GPU."""
    spec = small_spec(bucket, endpoint, **overrides)
    spec["storage"]["credentialsSecretRef"] = {"name": "s3-creds"}
    spec.setdefault("resources", {"gpus": 0, "cpu": "2", "memory": "4Gi"})
    spec.setdefault("backoffLimit", 1)
    return spec


def test_quickstart_succeeds_with_metrics_progress_and_a_loadable_adapter(
    e2e: Cluster, smollm2_model_path: Path, tmp_path: Path
) -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    spec = copy.deepcopy(manifest["spec"])
    # The quickstart as written, shortened for CI: 4 optimiser steps, 4 evaluation samples.
    spec["training"]["maxSteps"] = 4
    spec["evaluation"].update({"maxSamples": 4, "maxNewTokens": 24})
    bucket = spec["output"]["uri"].split("/")[2]
    client = e2e.s3.client()
    client.create_bucket(Bucket=bucket)
    for file in sorted(smollm2_model_path.iterdir()):
        client.upload_file(str(file), bucket, f"models/smollm2-135m-instruct/{file.name}")
    client.upload_file(str(write_dataset(tmp_path / "orders.jsonl", count=120)), bucket, "data/orders.jsonl")

    e2e.create("quickstart", spec)
    status = e2e.wait_phase("quickstart", "Succeeded", timeout=600)

    assert condition(status, "Succeeded") == ("True", "TrainingSucceeded")
    assert (
        status["progress"]["percent"] == 100
        and status["progress"]["step"] == status["progress"]["totalSteps"] == 4
    )
    metrics = status["metrics"]
    assert set(metrics["tuned"]) == set(metrics["base"]) == {"exactMatch", "tokenF1", "rougeL", "jsonValid"}
    assert metrics["evalLoss"] < metrics["baseEvalLoss"]
    assert (
        status["dataset"]["droppedByReason"]["invalidJson"] == 1 and status["dataset"]["trainExamples"] > 100
    )
    keys = e2e.keys(bucket, "runs/quickstart/")
    for uri in status["artifacts"].values():
        key = uri.split(f"s3://{bucket}/", 1)[1]
        assert any(k == key or k.startswith(key) for k in keys), uri
    assert e2e.job_creations() == 1
    assert {"JobCreated", "TrainingStarted", "TrainingSucceeded"} <= set(e2e.event_reasons("quickstart"))

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for key in keys:
        if key.startswith("runs/quickstart/adapter/"):
            client.download_file(bucket, key, str(adapter / key.rsplit("/", 1)[1]))
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(smollm2_model_path)), str(adapter)
    )
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_broken_data_fails_with_data_invalid_and_a_report(e2e: Cluster, tiny_inputs: str) -> None:
    e2e.create("broken", tiny_spec(tiny_inputs, e2e.s3.url, data={"minExamples": 500}))
    status = e2e.wait_phase("broken", "Failed")
    assert condition(status, "Failed") == ("True", "DataInvalid")
    assert "fewer than minExamples 500" in status["message"]
    keys = e2e.keys(tiny_inputs, "runs/job/")
    assert "runs/job/data-report.json" in keys
    assert not [k for k in keys if "/checkpoints/" in k or "/adapter/" in k]
    assert len(e2e.agent.jobs["broken-train"].started) == 1  # a user error is not retried
    assert "stage: training" not in e2e.agent.pod_log("broken-train")
    assert "TrainingFailed" in e2e.event_reasons("broken")


def test_infrastructure_failure_is_retried_until_the_backoff_limit(e2e: Cluster, tiny_inputs: str) -> None:
    spec = tiny_spec(tiny_inputs, e2e.s3.url)
    spec["storage"]["endpointUrl"] = "http://127.0.0.1:9"  # nothing listens: StorageUnreachable, retriable
    e2e.create("flaky", spec)
    status = e2e.wait_phase("flaky", "Failed")
    assert condition(status, "Failed") == ("True", "BackoffLimitExceeded")
    assert len(e2e.agent.jobs["flaky-train"].started) == 2  # backoffLimit 1: one retry
    assert "127.0.0.1:9" in status["message"]
    assert e2e.job_creations() == 1


def test_killed_pod_resumes_from_the_s3_checkpoint(e2e: Cluster, tiny_inputs: str) -> None:
    spec = tiny_spec(
        tiny_inputs, e2e.s3.url, training={"maxSteps": 40, "loggingSteps": 5}, checkpointing={"everySteps": 4}
    )
    e2e.create("resume", spec)
    e2e.agent.wait_for_log("resume-train", "checkpoint at step 8 saved")
    e2e.agent.kill_pod("resume-train")
    status = e2e.wait_phase("resume", "Succeeded")
    record = e2e.agent.jobs["resume-train"]
    assert len(record.started) == 2 and record.failed == 1
    second = e2e.agent.pod_log("resume-train")
    assert "resuming from checkpoint at step" in second
    step = int(second.split("resuming from checkpoint at step ")[1].split()[0])
    assert 8 <= step < 40
    manifest = json.loads(
        e2e.s3.client().get_object(Bucket=tiny_inputs, Key="runs/job/manifest.json")["Body"].read()
    )
    assert manifest["resumedFromStep"] == step and manifest["resolved"]["stepsDone"] == 40
    assert status["progress"]["percent"] == 100


def test_operator_restart_during_training_creates_no_second_job(e2e: Cluster, tiny_inputs: str) -> None:
    spec = tiny_spec(
        tiny_inputs,
        e2e.s3.url,
        training={"maxSteps": 40, "loggingSteps": 5},
        checkpointing={"everySteps": 10},
    )
    e2e.create("restart", spec)
    wait_for(
        lambda: (ftj_status(e2e.api, NS, "restart").get("progress") or {}).get("step"),
        timeout=120,
        what="training progress",
    )
    e2e.operator.kill()
    e2e.operator.start()
    status = e2e.wait_phase("restart", "Succeeded")
    assert e2e.job_creations() == 1
    assert len(e2e.api.jobs(NS)) == 1 and len(e2e.agent.jobs["restart-train"].started) == 1
    assert status["progress"]["percent"] == 100 and status["metrics"]["evalLoss"] is not None
    job = e2e.api.get(path(BATCH, "jobs", NS, "restart-train"))
    assert job is not None and job["metadata"]["ownerReferences"][0]["name"] == "restart"
