"""End to end on a real control plane: a FineTuneJob goes in; the operator (a real process against the real
kube-apiserver) renders the Job; the real Job controller (kube-controller-manager) creates its pods, counts
their failures and applies podFailurePolicy and backoffLimit; the pod runner plays the scheduler and the
kubelet, running each pod's container as a real trainer process against an S3 server (moto over HTTP), with
its S3 credentials read from a real Secret; the status, the adapter and the evaluation come out. The
operator's live progress comes from `pods/log`, served by the API server through the test kubelet.

Every test ends by scanning the operator's log for errors and tracebacks no test expected.
"""

from __future__ import annotations

import base64
import copy
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftjob_cli.demo.orders import write_dataset
from tests.support.kube_client import (
    BATCH,
    CORE,
    FTJ,
    JsonDict,
    KubeClient,
    condition,
    ftj_status,
    path,
    wait_for,
)
from tests.support.kubelet import TestKubelet
from tests.support.operator_process import OperatorProcess
from tests.support.pod_runner import PodRunner
from tests.support.s3_server import DUMMY_CREDENTIALS, S3Endpoint
from tests.support.trainer_runs import small_spec

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--progress-interval", "1", "--termination-grace-period", "5"]
CREDENTIALS = "s3-creds"


@dataclass
class Cluster:
    api: KubeClient
    namespace: str
    kubelet: TestKubelet
    operator: OperatorProcess
    runner: PodRunner
    s3: S3Endpoint

    def create(self, name: str, spec: JsonDict) -> JsonDict:
        body = {
            "apiVersion": "ftjob.dev/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": name},
            "spec": spec,
        }
        return self.api.create(path(FTJ, "finetunejobs", self.namespace), body)

    def status(self, name: str) -> JsonDict:
        return ftj_status(self.api, self.namespace, name)

    def wait_phase(self, name: str, phase: str, timeout: float = 300) -> JsonDict:
        def probe() -> JsonDict | None:
            self.runner.check()
            status = self.status(name)
            if status.get("phase") in ("Succeeded", "Failed") and status.get("phase") != phase:
                raise AssertionError(
                    f"{name} ended {status.get('phase')}, not {phase}: {status.get('message')}"
                )
            return status if status.get("phase") == phase else None

        return wait_for(probe, timeout=timeout, interval=0.5, what=f"{name} to reach {phase}")

    def keys(self, bucket: str, prefix: str) -> list[str]:
        pages = self.s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def job(self, name: str) -> JsonDict:
        job = self.api.job(self.namespace, name)
        assert job is not None, f"no Job {name}"
        return job

    def job_condition(self, name: str, type_: str) -> JsonDict | None:
        for c in (self.job(name).get("status") or {}).get("conditions") or []:
            if c["type"] == type_ and c["status"] == "True":
                return dict(c)
        return None

    def pods(self, job: str) -> list[JsonDict]:
        return self.api.pods(self.namespace, f"batch.kubernetes.io/job-name={job}")

    def event_reasons(self, name: str) -> list[str]:
        return [e["reason"] for e in self.api.events(self.namespace, involved=name)]

    def log_reads(self, pod: str) -> list[str]:
        """The API server's `pods/log` calls for that pod that reached the test kubelet."""
        prefix = f"/containerLogs/{self.namespace}/{pod}/trainer"
        return [r for r in self.kubelet.server.requests if r.startswith(prefix)]

    def wait_progress_while_running(self, name: str, job: str, timeout: float = 120) -> JsonDict:
        """The status shows training progress while the trainer pod still runs: read from its log."""

        def probe() -> JsonDict | None:
            self.runner.check()
            progress: JsonDict = self.status(name).get("progress") or {}
            return progress if progress.get("step") and self.runner.running(job) else None

        progress = wait_for(probe, timeout=timeout, interval=0.3, what=f"{name}'s training progress")
        attempt = self.runner.running(job)
        assert attempt is not None and self.log_reads(attempt.pod), "progress did not come from pods/log"
        return progress


@pytest.fixture
def log_allowances() -> list[str]:
    return []


@pytest.fixture
def runner_env(s3_server: S3Endpoint, tmp_path: Path) -> dict[str, str]:
    """What the node gives every pod: the S3 endpoint and region, no credentials (those are the Secret's)."""
    env = {k: v for k, v in s3_server.env().items() if k not in DUMMY_CREDENTIALS}
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "home"),
        **env,
        "AWS_ENDPOINT_URL_S3": s3_server.url,
        "HF_HUB_OFFLINE": "1",
    }


@pytest.fixture
def e2e(
    api: KubeClient,
    namespace: str,
    kubelet: TestKubelet,
    kubeconfig: Path,
    pod_runner: PodRunner,
    s3_server: S3Endpoint,
    tmp_path: Path,
    log_allowances: list[str],
) -> Iterator[Cluster]:
    data = {k: base64.b64encode(v.encode()).decode() for k, v in DUMMY_CREDENTIALS.items()}
    api.create(
        path(CORE, "secrets", namespace),
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": CREDENTIALS}, "data": data},
    )
    # The pod runner runs trainer pods as local processes: the moto server on loopback is reachable from them.
    operator = OperatorProcess(
        kubeconfig, tmp_path / "operator.log", [*FAST, "--namespace", namespace, "--allow-loopback-endpoints"]
    )
    operator.start()
    try:
        yield Cluster(api, namespace, kubelet, operator, pod_runner, s3_server)
    finally:
        operator.stop()
    problems = operator.problems(log_allowances)
    assert not problems, "unexpected errors in the operator log:\n" + "\n".join(problems)


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
    spec["storage"]["credentialsSecretRef"] = {"name": CREDENTIALS}
    spec.setdefault("resources", {"gpus": 0, "cpu": "2", "memory": "4Gi"})
    spec.setdefault("backoffLimit", 1)
    return spec


def test_quickstart_succeeds_with_metrics_progress_and_a_loadable_adapter(
    e2e: Cluster, smollm2_model_path: Path, tmp_path: Path
) -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    spec = copy.deepcopy(manifest["spec"])
    # The quickstart as written, shortened for CI: 4 optimiser steps, 4 evaluation samples; the pod's
    # S3 keys come from a Secret (the example's other way: the pod's own identity).
    spec["training"]["maxSteps"] = 4
    spec["evaluation"].update({"maxSamples": 4, "maxNewTokens": 24})
    spec["storage"] = {"credentialsSecretRef": {"name": CREDENTIALS}}
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
    assert e2e.job_condition("quickstart-train", "Complete")  # decided by the real Job controller
    assert len(e2e.api.jobs(e2e.namespace)) == 1 and len(e2e.pods("quickstart-train")) == 1
    reasons = e2e.event_reasons("quickstart")
    assert {"JobCreated", "TrainingStarted", "TrainingSucceeded"} <= set(reasons)
    assert reasons.count("JobCreated") == 1

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
    # A user error is not retried: the real Job controller applied the podFailurePolicy's FailJob rule.
    failed = e2e.job_condition("broken-train", "Failed")
    assert failed is not None and failed["reason"] == "PodFailurePolicy", failed
    assert e2e.job("broken-train")["status"]["failed"] == 1
    assert len(e2e.pods("broken-train")) == 1 and len(e2e.runner.attempts_of("broken-train")) == 1
    assert "stage: training" not in e2e.runner.pod_log("broken-train")
    assert "TrainingFailed" in e2e.event_reasons("broken")


def test_infrastructure_failure_is_retried_until_the_backoff_limit(e2e: Cluster, tiny_inputs: str) -> None:
    spec = tiny_spec(tiny_inputs, e2e.s3.url)
    spec["storage"]["endpointUrl"] = "http://127.0.0.1:9"  # nothing listens: StorageUnreachable, retriable
    e2e.create("flaky", spec)
    status = e2e.wait_phase("flaky", "Failed")
    assert condition(status, "Failed") == ("True", "BackoffLimitExceeded")
    # backoffLimit 1: the real Job controller made one more pod, then gave up.
    failed = e2e.job_condition("flaky-train", "Failed")
    assert failed is not None and failed["reason"] == "BackoffLimitExceeded", failed
    assert len(e2e.pods("flaky-train")) == 2 and len(e2e.runner.attempts_of("flaky-train")) == 2
    assert "127.0.0.1:9" in status["message"]
    assert e2e.event_reasons("flaky").count("JobCreated") == 1


def test_killed_pod_resumes_from_the_s3_checkpoint(e2e: Cluster, tiny_inputs: str) -> None:
    # 20 steps (40 before the real Job controller, whose 10 s backoff before the next pod now adds up).
    spec = tiny_spec(
        tiny_inputs, e2e.s3.url, training={"maxSteps": 20, "loggingSteps": 5}, checkpointing={"everySteps": 4}
    )
    e2e.create("resume", spec)
    e2e.wait_progress_while_running("resume", "resume-train")
    e2e.runner.wait_for_log("resume-train", "checkpoint at step 8 saved")
    first = e2e.runner.kill_pod("resume-train")
    status = e2e.wait_phase("resume", "Succeeded")
    attempts = e2e.runner.attempts_of("resume-train")
    assert len(attempts) == 2 and attempts[0] is first and first.exit_code == 137
    assert e2e.job("resume-train")["status"]["failed"] == 1  # counted by the real Job controller
    second = e2e.runner.pod_log("resume-train")
    assert "resuming from checkpoint at step" in second
    step = int(second.split("resuming from checkpoint at step ")[1].split()[0])
    assert 8 <= step < 20
    manifest = json.loads(
        e2e.s3.client().get_object(Bucket=tiny_inputs, Key="runs/job/manifest.json")["Body"].read()
    )
    assert manifest["resumedFromStep"] == step and manifest["resolved"]["stepsDone"] == 20
    assert status["progress"]["percent"] == 100


def test_operator_restart_during_training_creates_no_second_job(e2e: Cluster, tiny_inputs: str) -> None:
    spec = tiny_spec(
        tiny_inputs,
        e2e.s3.url,
        # Progress shows from step 5; the operator is back within seconds, long before step 20.
        training={"maxSteps": 20, "loggingSteps": 5},
        checkpointing={"everySteps": 10},
    )
    e2e.create("restart", spec)
    e2e.wait_progress_while_running("restart", "restart-train")
    job_uid = e2e.job("restart-train")["metadata"]["uid"]
    e2e.operator.kill()
    e2e.operator.start()
    assert e2e.runner.running("restart-train") is not None, "training ended before the operator was back"
    status = e2e.wait_phase("restart", "Succeeded")
    assert e2e.event_reasons("restart").count("JobCreated") == 1
    jobs = e2e.api.jobs(e2e.namespace)
    assert [j["metadata"]["uid"] for j in jobs] == [job_uid]
    assert len(e2e.pods("restart-train")) == 1 and len(e2e.runner.attempts_of("restart-train")) == 1
    assert status["progress"]["percent"] == 100 and status["metrics"]["evalLoss"] is not None
    job = e2e.api.get(path(BATCH, "jobs", e2e.namespace, "restart-train"))
    assert job is not None and job["metadata"]["ownerReferences"][0]["name"] == "restart"


def test_a_run_that_misses_its_evaluation_gate_fails_and_is_not_promoted(
    e2e: Cluster, tiny_inputs: str
) -> None:
    # A deliberately useless run: one step at a tiny learning rate cannot improve on the base model.
    spec = tiny_spec(
        tiny_inputs,
        e2e.s3.url,
        training={"maxSteps": 1, "learningRate": 1e-9},
        checkpointing={"everySteps": 1},
        evaluation={
            "maxSamples": 2,
            "maxNewTokens": 8,
            "gate": {"metric": "evalLoss", "minImprovement": 0.05},
        },
    )
    e2e.create("useless", spec)
    status = e2e.wait_phase("useless", "Failed")
    assert condition(status, "Failed") == ("True", "EvaluationGateNotMet"), status
    assert "evaluation gate not met: evalLoss" in status["message"]
    assert "less than minImprovement 0.05" in status["message"]
    # Both numbers are in the status, and the adapter is kept where nothing promotes it.
    metrics = status["metrics"]
    assert metrics["evalLoss"] > metrics["baseEvalLoss"] - 0.05
    assert status["artifacts"]["adapter"] == f"s3://{tiny_inputs}/runs/job/rejected/adapter/"
    keys = e2e.keys(tiny_inputs, "runs/job/")
    assert "runs/job/rejected/adapter/adapter_model.safetensors" in keys
    assert not [k for k in keys if k.startswith("runs/job/adapter/")]
    assert "runs/job/eval/report.md" in keys and "runs/job/manifest.json" in keys
    # Retraining the same way would miss the gate again: the podFailurePolicy fails the Job at once.
    failed = e2e.job_condition("useless-train", "Failed")
    assert failed is not None and failed["reason"] == "PodFailurePolicy", failed
    assert len(e2e.runner.attempts_of("useless-train")) == 1
