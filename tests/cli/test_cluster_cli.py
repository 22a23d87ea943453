"""`ftjob get | describe | logs | results | watch` against the real control plane and a moto S3 server.

Each test writes what the operator and the kubelet would have written (a FineTuneJob's status, a trainer
pod, its log, an Event) through the API server, then runs the command as a user would, with a
kubeconfig, and reads what it printed.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftjob.api.uris import parse_s3_uri
from ftjob.contract import ProgressRecord, format_progress_line
from ftjob.task_progress import TaskRecord, format_task_line
from ftjob_cli.main import main
from tests.support import kube_actors as actors
from tests.support.kube_client import CORE, FTJ, KubeClient, path
from tests.support.kubelet import TestKubelet
from tests.support.s3_server import S3Endpoint

JsonDict = dict[str, Any]
NOW = "2026-11-30T08:00:00Z"


def ftj_body(name: str, bucket: str, endpoint: str) -> JsonDict:
    return {
        "apiVersion": "ftjob.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "baseModel": {"uri": f"s3://{bucket}/models/base/"},
            "data": {"trainUri": f"s3://{bucket}/data/train.jsonl"},
            "output": {"uri": f"s3://{bucket}/runs/{name}/"},
            "storage": {"endpointUrl": endpoint, "region": "us-east-1", "pathStyle": True},
        },
    }


def succeeded_status() -> JsonDict:
    return {
        "phase": "Succeeded",
        "jobName": "demo-train",
        "attempts": 2,
        "message": "trained and evaluated: validation loss 0.0018 (base 0.6342)",
        "conditions": [
            {
                "type": "Succeeded",
                "status": "True",
                "reason": "TrainingSucceeded",
                "message": "the adapter and the evaluation are under the output URI",
                "lastTransitionTime": NOW,
            },
            {
                "type": "Running",
                "status": "False",
                "reason": "Completed",
                "message": "",
                "lastTransitionTime": NOW,
            },
        ],
        "progress": {
            "step": 41,
            "totalSteps": 41,
            "percent": 100,
            "epoch": 1.0,
            "loss": 0.05,
            "stage": "done",
        },
        "dataset": {
            "totalLines": 367,
            "trainExamples": 324,
            "validationExamples": 36,
            "dropped": 7,
            "droppedByReason": {"invalidJson": 1, "duplicate": 2},
        },
        "metrics": {
            "trainLoss": 0.056,
            "evalLoss": 0.0018,
            "baseEvalLoss": 0.6342,
            "tuned": {"exactMatch": 1.0, "tokenF1": 1.0},
            "base": {"exactMatch": 0.0, "tokenF1": 0.414},
        },
        "artifacts": {"evalReport": "s3://bucket/runs/demo/eval/report.md"},
    }


def running_status(step: int, total: int = 40) -> JsonDict:
    return {
        "phase": "Running",
        "jobName": "demo-train",
        "progress": {
            "step": step,
            "totalSteps": total,
            "percent": step * 100 // total,
            "loss": 0.5,
            "stage": "training",
            "etaSeconds": 65,
        },
    }


def failed_status() -> JsonDict:
    return {
        "phase": "Failed",
        "message": "too little usable data: 3 examples kept of 50",
        "conditions": [
            {
                "type": "Failed",
                "status": "True",
                "reason": "DataInvalid",
                "message": "too little usable data",
                "lastTransitionTime": NOW,
            }
        ],
    }


def create_ftj(api: KubeClient, namespace: str, name: str, s3: S3Endpoint, bucket: str) -> JsonDict:
    return api.create(path(FTJ, "finetunejobs", namespace), ftj_body(name, bucket, s3.url))


def set_status(api: KubeClient, namespace: str, name: str, status: JsonDict) -> None:
    api.patch(path(FTJ, "finetunejobs", namespace, name, "status"), {"status": status})


def trainer_pod(
    api: KubeClient, namespace: str, ftj: str, pod: str, log: str, kubelet: TestKubelet
) -> JsonDict:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod, "labels": {"ftjob.dev/finetunejob": ftj}},
        "spec": {"containers": [{"name": "trainer", "image": "trainer"}], "restartPolicy": "Never"},
    }
    created = api.create(path(CORE, "pods", namespace), body)
    actors.bind_pod(api, created)
    actors.pod_running(api, created)
    kubelet.set_log(namespace, pod, log)
    return created


def kubectl(kubeconfig: Path, *args: str) -> list[str]:
    return [*args, "--kubeconfig", str(kubeconfig)]


@pytest.fixture
def bucket(s3_bucket: str) -> str:
    return s3_bucket


def test_get_shows_progress_and_the_headline_metric_in_the_context_namespace(
    api: KubeClient,
    namespace: str,
    kubeconfig: Path,
    s3_server: S3Endpoint,
    bucket: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    create_ftj(api, namespace, "done", s3_server, bucket)
    set_status(api, namespace, "done", succeeded_status())
    create_ftj(api, namespace, "busy", s3_server, bucket)
    set_status(api, namespace, "busy", running_status(10))
    # The context's namespace, as kubectl reads it: no -n needed.
    config = yaml.safe_load(kubeconfig.read_text())
    config["contexts"][0]["context"]["namespace"] = namespace
    kubeconfig.write_text(yaml.safe_dump(config))

    assert main(kubectl(kubeconfig, "get")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "PROGRESS", "LOSS", "RESULT", "AGE"]
    busy, done = lines[1], lines[2]
    assert busy.startswith("busy") and "Running" in busy and " 25% training" in busy and "█" in busy
    assert done.startswith("done") and "100%" in done and "exactMatch 0.00 -> 1.00" in done

    assert main(kubectl(kubeconfig, "get", "-A")) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(namespace)]
    assert len(rows) == 2

    assert main(kubectl(kubeconfig, "get", "done", "-o", "json")) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "FineTuneJob" and doc["status"]["phase"] == "Succeeded"
    assert main(kubectl(kubeconfig, "get", "-o", "yaml")) == 0
    assert [o["metadata"]["name"] for o in yaml.safe_load(capsys.readouterr().out)["items"]] == [
        "busy",
        "done",
    ]

    assert main(kubectl(kubeconfig, "get", "missing")) == 2
    assert 'FineTuneJob "missing"' in capsys.readouterr().err


def test_describe_shows_conditions_data_metrics_artifacts_and_events(
    api: KubeClient,
    namespace: str,
    kubeconfig: Path,
    kubelet: TestKubelet,
    s3_server: S3Endpoint,
    bucket: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ftj = create_ftj(api, namespace, "demo", s3_server, bucket)
    set_status(api, namespace, "demo", succeeded_status())
    api.create(
        path(CORE, "events", namespace),
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "demo.1"},
            "involvedObject": {
                "apiVersion": "ftjob.dev/v1alpha1",
                "kind": "FineTuneJob",
                "name": "demo",
                "namespace": namespace,
                "uid": ftj["metadata"]["uid"],
            },
            "type": "Normal",
            "reason": "TrainingSucceeded",
            "message": "validation loss 0.0018 (base 0.6342)",
            "firstTimestamp": NOW,
            "lastTimestamp": NOW,
            "count": 1,
            "source": {"component": "ftjob-operator"},
        },
    )

    assert main(kubectl(kubeconfig, "describe", "demo", "-n", namespace)) == 0
    out = capsys.readouterr().out
    assert "Phase:        Succeeded" in out
    assert "Succeeded   True     TrainingSucceeded" in out
    assert "367 lines read; kept 324 for training and 36 for validation; dropped 7 (" in out
    assert "invalidJson 1" in out and "duplicate 2" in out
    metrics = out[out.index("Metrics") :]
    assert "validation loss   0.6342   0.0018   -0.6324" in metrics
    assert "exactMatch        0.000    1.000    +1.000" in metrics
    assert "evalReport:    s3://bucket/runs/demo/eval/report.md" in out
    assert "finetunejob/demo   validation loss 0.0018 (base 0.6342)" in out


def test_logs_prints_human_lines_of_every_attempt_once_per_step(
    api: KubeClient,
    namespace: str,
    kubeconfig: Path,
    kubelet: TestKubelet,
    s3_server: S3Endpoint,
    bucket: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    create_ftj(api, namespace, "demo", s3_server, bucket)
    set_status(api, namespace, "demo", running_status(20))
    record = format_progress_line(
        ProgressRecord(stage="training", step=20, total_steps=40, loss=0.5, time=NOW)
    )
    task = format_task_line(TaskRecord(stage="evaluating", task="answers", done=1, total=2, time=NOW))
    first = "\n".join(["INFO stage: training", "INFO step 10/40 (25%) | loss 0.9", "Killed"]) + "\n"
    second = "\n".join(
        [
            "INFO resuming from checkpoint at step 10",
            "INFO step 20/40 (50%) | loss 0.9000",  # the heartbeat line: the previous step's loss
            record,
            "INFO step 20/40 (50%) | loss 0.5000",  # the logging step's line: the current loss
            task,
            "INFO stage: evaluating",
        ]
    )
    trainer_pod(api, namespace, "demo", "demo-train-aaaaa", first, kubelet)
    time.sleep(1.1)  # creation timestamps have one-second resolution: the attempts' order must be clear
    trainer_pod(api, namespace, "demo", "demo-train-bbbbb", second, kubelet)

    assert main(kubectl(kubeconfig, "logs", "demo", "-n", namespace)) == 0
    assert capsys.readouterr().out.splitlines() == [
        "==> attempt 1: pod demo-train-aaaaa <==",
        "INFO stage: training",
        "INFO step 10/40 (25%) | loss 0.9",
        "Killed",
        "==> attempt 2: pod demo-train-bbbbb <==",
        "INFO resuming from checkpoint at step 10",
        "INFO step 20/40 (50%) | loss 0.5000",
        "INFO stage: evaluating",
    ]
    assert main(kubectl(kubeconfig, "logs", "demo", "-n", namespace, "--raw")) == 0
    assert record in capsys.readouterr().out


def test_logs_follow_prints_new_lines_until_the_job_finishes(
    api: KubeClient,
    namespace: str,
    kubeconfig: Path,
    kubelet: TestKubelet,
    s3_server: S3Endpoint,
    bucket: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    create_ftj(api, namespace, "demo", s3_server, bucket)
    set_status(api, namespace, "demo", running_status(10))
    pod = trainer_pod(api, namespace, "demo", "demo-train-aaaaa", "INFO stage: training\n", kubelet)

    def finish() -> None:
        time.sleep(0.6)
        kubelet.set_log(namespace, "demo-train-aaaaa", "INFO stage: training\nINFO stage: done\n")
        time.sleep(0.6)
        actors.pod_terminated(api, pod, 0)
        set_status(api, namespace, "demo", succeeded_status())

    writer = threading.Thread(target=finish)
    writer.start()
    code = main(kubectl(kubeconfig, "logs", "demo", "-n", namespace, "-f", "--interval", "0.2"))
    writer.join()
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[:2] == ["INFO stage: training", "INFO stage: done"]
    assert out[2].startswith("Succeeded (TrainingSucceeded)")


def test_watch_exits_with_the_outcome(
    api: KubeClient,
    namespace: str,
    kubeconfig: Path,
    s3_server: S3Endpoint,
    bucket: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    create_ftj(api, namespace, "ok", s3_server, bucket)
    set_status(api, namespace, "ok", running_status(10))
    create_ftj(api, namespace, "bad", s3_server, bucket)
    set_status(api, namespace, "bad", failed_status())

    def progress() -> None:
        for step in (20, 30):
            time.sleep(0.4)
            set_status(api, namespace, "ok", running_status(step))
        time.sleep(0.4)
        set_status(api, namespace, "ok", succeeded_status())

    writer = threading.Thread(target=progress)
    writer.start()
    code = main(kubectl(kubeconfig, "watch", "ok", "-n", namespace, "--interval", "0.1"))
    writer.join()
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    # Not a terminal: one line per change, never a carriage return.
    assert [line.split("%")[0][-3:].strip() for line in lines if "step" in line] == ["25", "50", "75", "100"]
    assert "ok: Succeeded" in lines[-3] and lines[-2].startswith("Succeeded (TrainingSucceeded)")
    assert lines[-1] == "exactMatch 0.00 -> 1.00"

    assert main(kubectl(kubeconfig, "watch", "bad", "-n", namespace)) == 1
    assert "Failed (DataInvalid): too little usable data: 3 examples kept of 50" in capsys.readouterr().out

    set_status(api, namespace, "ok", running_status(10))
    assert (
        main(kubectl(kubeconfig, "watch", "ok", "-n", namespace, "--timeout", "0.3", "--interval", "0.1"))
        == 124
    )
    assert "still Running after 0.3 s" in capsys.readouterr().out


def test_results_downloads_the_reports_with_the_users_credentials(
    api: KubeClient,
    namespace: str,
    kubeconfig: Path,
    s3_server: S3Endpoint,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    ftj = create_ftj(api, namespace, "demo", s3_server, bucket)
    set_status(api, namespace, "demo", succeeded_status())
    output = parse_s3_uri(ftj["spec"]["output"]["uri"])
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key=f"{output.key}eval/report.md", Body=b"# Evaluation: demo\n")
    client.put_object(Bucket=bucket, Key=f"{output.key}eval/loss_curve.png", Body=b"\x89PNG")
    client.put_object(Bucket=bucket, Key=f"{output.key}data-report.json", Body=b"{}")
    client.put_object(Bucket=bucket, Key=f"{output.key}adapter/adapter_model.safetensors", Body=b"big")

    dest = tmp_path / "out"
    assert main(kubectl(kubeconfig, "results", "demo", "-n", namespace, "--to", str(dest))) == 0
    captured = capsys.readouterr()
    assert (dest / "eval" / "report.md").read_text() == "# Evaluation: demo\n"
    assert (dest / "eval" / "loss_curve.png").read_bytes() == b"\x89PNG"
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "data-report.json",
        "eval/loss_curve.png",
        "eval/report.md",
    ]
    assert "not there (yet): eval/eval.json" in captured.err

    # `describe --report` shows the report under the status (plain Markdown when not in a terminal).
    assert main(kubectl(kubeconfig, "describe", "demo", "-n", namespace, "--report")) == 0
    assert capsys.readouterr().out.endswith("\n# Evaluation: demo\n")

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert main(kubectl(kubeconfig, "results", "demo", "-n", namespace, "--to", str(tmp_path / "x"))) == 1
    assert "no credentials" in capsys.readouterr().err


def test_logs_of_a_pod_not_started_yet_are_empty_not_an_error(
    api: KubeClient,
    namespace: str,
    kubeconfig: Path,
    s3_server: S3Endpoint,
    bucket: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    create_ftj(api, namespace, "demo", s3_server, bucket)
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "demo-train-ccccc", "labels": {"ftjob.dev/finetunejob": "demo"}},
        "spec": {"containers": [{"name": "trainer", "image": "trainer"}], "restartPolicy": "Never"},
    }
    api.create(path(CORE, "pods", namespace), body)  # not scheduled: no node, no container
    assert main(kubectl(kubeconfig, "logs", "demo", "-n", namespace)) == 0
    assert capsys.readouterr().out == ""
