"""The operator as a running process against an emulated Kubernetes API over HTTP.

The tests play the Job controller, the kubelet and Kueue through the API (tests/support/kube_actors.py)
and assert what a user sees: the Job, the FineTuneJob's status, the Events. Every test ends by scanning
the operator's log for errors and tracebacks it did not expect.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from ftjob.api.status import Artifacts, DatasetStats, Metrics
from ftjob.contract import ProgressRecord, TerminationSummary, format_progress_line
from ftjob_operator.render import render_job
from ftjob_operator.settings import OperatorSettings
from tests.support import kube_actors as actors
from tests.support.kube_client import BATCH, FTJ, JsonDict, KubeClient, condition, ftj_status, path, wait_for
from tests.support.kube_emulator import EmulatorServer, request_matches
from tests.support.operator_process import OperatorProcess, free_port

NS = "ml-team"
NAME = "demo"
JOB = f"{NAME}-train"
FAST = ["--progress-interval", "1", "--image-pull-grace-period", "2", "--termination-grace-period", "5"]
# What the operator was started with, for comparing its Jobs with render_job's.
SETTINGS = OperatorSettings(
    progress_interval_seconds=1, image_pull_grace_seconds=2, termination_grace_period_seconds=5
)

SPEC: JsonDict = {
    "baseModel": {"uri": "s3://models/smollm2-135m-instruct/"},
    "data": {"trainUri": "s3://datasets/orders/train.jsonl"},
    "output": {"uri": "s3://results/demo/"},
    "training": {"epochs": 1, "maxSteps": 40},
    "storage": {
        "endpointUrl": "http://minio.minio:9000",
        "pathStyle": True,
        "credentialsSecretRef": {"name": "minio-creds"},
    },
    "resources": {"gpus": 1, "memory": "24Gi", "shmSize": "4Gi"},
    "backoffLimit": 2,
}

SUCCESS = TerminationSummary(
    outcome="Succeeded",
    reason="TrainingSucceeded",
    message="Adapter, evaluation and manifest written to s3://results/demo/.",
    metrics=Metrics(
        train_loss=1.1, eval_loss=0.87, perplexity=2.39, base_eval_loss=1.62, tuned={"jsonValid": 0.96}
    ),
    dataset=DatasetStats(total_lines=500, train_examples=430, validation_examples=48, dropped=22),
    artifacts=Artifacts(adapter="s3://results/demo/adapter/", eval_report="s3://results/demo/eval/report.md"),
)


# -- fixtures ------------------------------------------------------------------------------------------
@pytest.fixture
def log_allowances() -> list[str]:
    """Patterns of log lines a test expects to be reported as errors (e.g. an injected 503)."""
    return []


@pytest.fixture
def operator_process(
    kubeconfig: Path, tmp_path: Path, log_allowances: list[str]
) -> Iterator[OperatorProcess]:
    """The operator, not started yet: tests that prepare the cluster first start it themselves."""
    process = OperatorProcess(kubeconfig, tmp_path / "operator.log", FAST)
    yield process
    process.stop()
    problems = process.problems(log_allowances)
    assert not problems, "unexpected errors in the operator log:\n" + "\n".join(problems)


@pytest.fixture
def operator(operator_process: OperatorProcess) -> OperatorProcess:
    operator_process.start()
    return operator_process


# -- helpers -------------------------------------------------------------------------------------------
def create(api: KubeClient, spec: JsonDict | None = None, name: str = NAME) -> JsonDict:
    body = {
        "apiVersion": "ftjob.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": spec or SPEC,
    }
    return api.create(path(FTJ, "finetunejobs", NS), body)


def set_spec(api: KubeClient, patch: JsonDict) -> JsonDict:
    return api.patch(path(FTJ, "finetunejobs", NS, NAME), {"spec": patch})


def status(api: KubeClient, name: str = NAME) -> JsonDict:
    return ftj_status(api, NS, name)


def wait_status(
    api: KubeClient, check: Callable[[JsonDict], bool], what: str, timeout: float = 20
) -> JsonDict:
    def probe() -> JsonDict | None:
        st = status(api)
        return st if st and check(st) else None

    try:
        return wait_for(probe, timeout=timeout, what=what)
    except AssertionError as err:
        raise AssertionError(f"{err}\nstatus now: {status(api)}") from None


def wait_condition(api: KubeClient, type_: str, value: str, reason: str, timeout: float = 20) -> JsonDict:
    return wait_status(
        api, lambda st: condition(st, type_) == (value, reason), f"{type_}={value}/{reason}", timeout
    )


def wait_job(api: KubeClient, check: Callable[[JsonDict], bool] = lambda job: True) -> JsonDict:
    def probe() -> JsonDict | None:
        job = api.job(NS, JOB)
        return job if job is not None and check(job) else None

    return wait_for(probe, what=f"Job {JOB}")


def event_reasons(api: KubeClient, name: str = NAME) -> list[tuple[str, str]]:
    return [(e["type"], e["reason"]) for e in api.events(NS, involved=name)]


def wait_event(api: KubeClient, type_: str, reason: str) -> None:
    wait_for(
        lambda: (type_, reason) in event_reasons(api),
        what=f"Event {type_}/{reason}; seen {event_reasons(api)}",
    )


def stays(probe: Callable[[], Any], seconds: float = 2.5) -> Any:
    """`probe` keeps returning the same value for a few progress-poll intervals; returns that value."""
    first = probe()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert probe() == first
        time.sleep(0.2)
    return first


def progress_log(*records: ProgressRecord) -> str:
    return (
        "\n".join(["Loading model...", *(format_progress_line(r) for r in records), "{'loss': 0.9}"]) + "\n"
    )


def job_creations(cluster: EmulatorServer) -> int:
    return cluster.count_requests(request_matches("POST", "jobs", namespace=NS))


# -- tests ---------------------------------------------------------------------------------------------
def test_creates_the_job_as_rendered(api: KubeClient, operator: OperatorProcess) -> None:
    ftj = create(api)
    job = wait_job(api)
    expected = render_job(ftj, SETTINGS)
    assert job["spec"] == expected["spec"]
    assert {k: job["metadata"][k] for k in ("name", "labels", "ownerReferences")} == {
        k: expected["metadata"][k] for k in ("name", "labels", "ownerReferences")
    }
    assert job["metadata"]["ownerReferences"][0]["uid"] == ftj["metadata"]["uid"]

    st = wait_condition(api, "Running", "False", "JobCreated")
    assert (st["phase"], st["jobName"], st["observedGeneration"]) == ("Pending", JOB, 1)
    assert condition(st, "Validated") == ("True", "SpecValid")
    assert condition(st, "Admitted") == ("True", "NoQueue")
    wait_event(api, "Normal", "JobCreated")

    # kopf's bookkeeping lives in annotations under the project's prefix; no finalizer, no status.kopf.
    meta = (api.finetunejob(NS, NAME) or {})["metadata"]
    assert "finalizers" not in meta
    assert all(key.startswith("ftjob.dev/") for key in meta.get("annotations") or {})
    assert "ftjob.dev/last-handled-configuration" in meta["annotations"]


def test_watches_only_the_namespaces_it_is_given_and_exports_metrics(
    kubeconfig: Path, tmp_path: Path, api: KubeClient
) -> None:
    metrics_port = free_port()
    args = [*FAST, "--namespace", NS, "--metrics-port", str(metrics_port)]
    process = OperatorProcess(kubeconfig, tmp_path / "namespaced.log", args)
    process.start()
    try:
        api.create(path(FTJ, "finetunejobs", "elsewhere"), {"metadata": {"name": NAME}, "spec": SPEC})
        create(api)
        wait_job(api)
        assert stays(lambda: api.jobs("elsewhere")) == []
        assert (api.finetunejob("elsewhere", NAME) or {}).get("status") is None
        scraped = urllib3.request("GET", f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).data.decode()
        assert 'ftjob_finetunejobs{phase="Pending"} 1.0' in scraped
        assert "ftjob_reconcile_duration_seconds_count" in scraped
    finally:
        process.stop()
    assert process.problems() == []


def test_status_follows_the_job_and_its_pods(
    cluster: EmulatorServer, api: KubeClient, operator: OperatorProcess
) -> None:
    create(api)
    job = wait_job(api)

    first = actors.create_pod(api, job)
    actors.pod_waiting(api, first, "ContainerCreating")
    wait_condition(api, "Running", "False", "PodPending")

    actors.pod_running(api, first)
    st = wait_condition(api, "Running", "True", "Training")
    assert st["phase"] == "Running" and st["startTime"]
    wait_event(api, "Normal", "TrainingStarted")

    # Progress comes from the trainer's log, read by the operator's poll.
    cluster.emulator.set_pod_log(
        NS,
        first["metadata"]["name"],
        progress_log(
            ProgressRecord(
                stage="training", step=10, total_steps=40, epoch=0.25, loss=1.9, time=actors.now()
            ),
            ProgressRecord(
                stage="training",
                step=20,
                total_steps=40,
                epoch=0.5,
                loss=1.4,
                eta_seconds=95,
                time=actors.now(),
            ),
        ),
    )
    st = wait_status(
        api, lambda s: (s.get("progress") or {}).get("step") == 20, "progress step 20", timeout=10
    )
    assert {
        k: st["progress"][k] for k in ("step", "totalSteps", "percent", "etaSeconds", "loss", "stage")
    } == {
        "step": 20,
        "totalSteps": 40,
        "percent": 50,
        "etaSeconds": 95,
        "loss": 1.4,
        "stage": "training",
    }
    assert "step 20/40 (50%)" in st["message"]

    # Preempted: the pod is a disruption target; the Job (podFailurePolicy Ignore) starts another one.
    actors.pod_disrupted(api, first)
    st = wait_condition(api, "Running", "False", "Preempted")
    assert st["phase"] == "Running"
    wait_event(api, "Warning", "Preempted")
    second = actors.create_pod(api, job)
    actors.pod_running(api, second)
    wait_condition(api, "Running", "True", "Training")

    actors.pod_terminated(api, second, 0, SUCCESS.to_message())
    actors.job_condition(api, job, "Complete", "CompletionsReached", succeeded=1)
    st = wait_condition(api, "Succeeded", "True", "TrainingSucceeded")
    assert st["phase"] == "Succeeded"
    assert st["metrics"]["evalLoss"] == 0.87
    assert st["metrics"]["tuned"] == {"jsonValid": 0.96}
    assert st["artifacts"] == {
        "adapter": "s3://results/demo/adapter/",
        "evalReport": "s3://results/demo/eval/report.md",
    }
    assert st["dataset"]["trainExamples"] == 430
    assert (st["progress"]["percent"], st["progress"]["etaSeconds"]) == (100, 0)
    assert st["completionTime"]
    wait_event(api, "Normal", "TrainingSucceeded")

    # The Job's TTL deletes it: the FineTuneJob keeps its results and is never trained again.
    api.delete(path(BATCH, "jobs", NS, JOB), propagation="Background")
    assert stays(lambda: (api.job(NS, JOB), status(api)["phase"])) == (None, "Succeeded")
    assert job_creations(cluster) == 1


@pytest.mark.parametrize(
    ("script", "reason", "message"),
    [
        pytest.param(
            lambda api, pod, job: (
                actors.pod_terminated(
                    api,
                    pod,
                    3,
                    TerminationSummary(
                        outcome="Failed",
                        reason="DataInvalid",
                        message="Only 4 usable examples after cleaning (minExamples 10).",
                        dataset=DatasetStats(total_lines=30, train_examples=4, dropped=26),
                    ).to_message(),
                ),
                actors.job_condition(
                    api,
                    job,
                    "Failed",
                    "PodFailurePolicy",
                    "Container trainer failed with exit code 3",
                    failed=1,
                ),
            ),
            "DataInvalid",
            "Only 4 usable examples",
            id="data-invalid",
        ),
        pytest.param(
            lambda api, pod, job: (
                actors.pod_terminated(api, pod, 137, reason="OOMKilled"),
                actors.job_condition(
                    api,
                    job,
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                    failed=3,
                ),
            ),
            "OOMKilled",
            "ran out of memory (limit 24Gi)",
            id="oom-killed",
        ),
        pytest.param(
            lambda api, pod, job: actors.job_condition(
                api,
                job,
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
                failed=1,
            ),
            "DeadlineExceeded",
            "activeDeadlineSeconds (600 s)",
            id="deadline-exceeded",
        ),
    ],
)
def test_failures_are_explained(
    api: KubeClient, operator: OperatorProcess, script: Callable[..., Any], reason: str, message: str
) -> None:
    create(api, {**SPEC, "activeDeadlineSeconds": 600})
    job = wait_job(api)
    pod = actors.create_pod(api, job)
    actors.pod_running(api, pod)
    wait_condition(api, "Running", "True", "Training")

    script(api, pod, job)
    st = wait_condition(api, "Failed", "True", reason)
    assert st["phase"] == "Failed" and message in st["message"]
    wait_event(api, "Warning", "TrainingFailed")
    assert api.job(NS, JOB) is not None  # a finished Job is left for its logs and its TTL


def test_image_pull_failure_fails_and_frees_the_gpu(api: KubeClient, operator: OperatorProcess) -> None:
    create(api, {**SPEC, "image": "registry.example/trainer:typo"})
    job = wait_job(api)
    pod = actors.create_pod(api, job)
    actors.pod_waiting(api, pod, "ImagePullBackOff", 'Back-off pulling image "registry.example/trainer:typo"')
    wait_condition(api, "Running", "False", "PodPending")
    # Found by the poll once the grace period (2 s here) is over: no event announces it.
    st = wait_condition(api, "Failed", "True", "ImagePullFailed", timeout=15)
    assert "registry.example/trainer:typo" in st["message"]
    wait_for(lambda: api.job(NS, JOB) is None, what="the Job deleted")
    assert stays(lambda: status(api)["phase"]) == "Failed"  # not JobDeleted: it was the operator's doing


def test_invalid_spec(cluster: EmulatorServer, api: KubeClient, operator: OperatorProcess) -> None:
    create(api, {**SPEC, "peft": {"method": "qlora", "r": 8, "alpha": 256}})
    st = wait_condition(api, "Failed", "True", "InvalidSpec")
    assert condition(st, "Validated") == ("False", "InvalidSpec")
    assert (
        "spec.peft.alpha: is more than 16x the rank (r=8)" in st["message"] and "(got 256)" in st["message"]
    )
    wait_event(api, "Warning", "SpecInvalid")
    assert stays(lambda: api.jobs(NS)) == []
    assert job_creations(cluster) == 0


def test_adopts_a_job_it_controls_after_a_conflict(
    cluster: EmulatorServer, api: KubeClient, operator_process: OperatorProcess
) -> None:
    ftj = create(api)
    # The Job exists (say, created by an operator that died), but the first read misses it, as a read
    # from a lagging cache would: the create then meets 409 and must adopt, not fail.
    existing = api.create(path(BATCH, "jobs", NS), render_job(ftj, SETTINGS))
    cluster.emulator.fail(request_matches("GET", "jobs", name=JOB, subresource=""), 404, reason="NotFound")
    operator_process.start()

    st = wait_condition(api, "Running", "False", "JobCreated")
    assert st["jobName"] == JOB
    wait_event(api, "Normal", "JobAdopted")
    assert (api.job(NS, JOB) or {})["metadata"]["uid"] == existing["metadata"]["uid"]
    assert job_creations(cluster) == 2  # the test's, and the operator's that met the conflict
    assert "JobConflict" not in str(status(api))


def test_refuses_a_job_it_does_not_control(
    cluster: EmulatorServer, api: KubeClient, operator: OperatorProcess
) -> None:
    foreign = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": JOB, "labels": {"team": "someone-else"}},
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "x", "image": "busybox"}], "restartPolicy": "Never"}
            }
        },
    }
    before = api.create(path(BATCH, "jobs", NS), foreign)
    create(api)
    st = wait_condition(api, "Failed", "True", "JobConflict")
    assert "not controlled by this FineTuneJob" in st["message"]
    wait_event(api, "Warning", "JobConflict")
    assert stays(lambda: api.job(NS, JOB)) == before  # untouched: not adopted, suspended or deleted


@pytest.mark.parametrize(
    ("plural", "method", "subresource", "apply_first"),
    [
        pytest.param("jobs", "POST", "", True, id="after-the-job-was-created"),
        pytest.param("finetunejobs", "PATCH", "status", False, id="before-the-status-was-written"),
    ],
)
def test_killed_mid_reconcile_and_restarted(
    cluster: EmulatorServer,
    api: KubeClient,
    operator: OperatorProcess,
    plural: str,
    method: str,
    subresource: str,
    apply_first: bool,
) -> None:
    hold = cluster.emulator.hold(
        request_matches(method, plural, subresource=subresource), apply_first=apply_first
    )
    create(api)
    assert hold.arrived.wait(20), "the operator never got that far"
    operator.kill()
    hold.release()
    assert api.job(NS, JOB) is not None  # the Job was created before the crash
    assert "jobName" not in status(api)  # and the crash came before its status was written

    operator.start()
    st = wait_condition(api, "Running", "False", "JobCreated")
    assert st["jobName"] == JOB
    assert job_creations(cluster) == 1
    history = cluster.history("batch/v1/jobs", NS, JOB)
    assert None not in history and len({v["metadata"]["uid"] for v in history if v}) == 1


def test_suspend_and_resume(cluster: EmulatorServer, api: KubeClient, operator: OperatorProcess) -> None:
    create(api)
    job = wait_job(api)
    pod = actors.create_pod(api, job)
    actors.pod_running(api, pod)
    wait_condition(api, "Running", "True", "Training")

    set_spec(api, {"suspend": True})
    job = wait_job(api, lambda j: j["spec"]["suspend"] is True)
    actors.delete_pod(api, pod)  # the Job controller's answer to suspend: SIGTERM, the trainer checkpoints
    st = wait_condition(api, "Suspended", "True", "SuspendRequested")
    assert (st["phase"], st["observedGeneration"]) == ("Suspended", 2)
    wait_event(api, "Normal", "Suspended")

    set_spec(api, {"suspend": False})
    job = wait_job(api, lambda j: j["spec"]["suspend"] is False)
    st = wait_condition(api, "Suspended", "False", "Resumed")
    assert st["observedGeneration"] == 3
    wait_event(api, "Normal", "Resumed")
    actors.pod_running(api, actors.create_pod(api, job))
    st = wait_condition(api, "Running", "True", "Training")
    assert job_creations(cluster) == 1  # suspended and resumed in place


def test_suspend_and_resume_through_kueue(
    cluster: EmulatorServer, api: KubeClient, operator: OperatorProcess
) -> None:
    create(api, {**SPEC, "scheduling": {"queueName": "team-gpus"}})
    job = wait_job(api)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-gpus"
    st = wait_condition(api, "Admitted", "False", "Queued")
    assert st["phase"] == "Queued"

    job = actors.kueue_admit(api, job)
    actors.pod_running(api, actors.create_pod(api, job))
    wait_condition(api, "Admitted", "True", "Admitted")
    wait_condition(api, "Running", "True", "Training")

    # The operator never toggles suspend of a Kueue-managed Job: it takes the Job out of the queue.
    set_spec(api, {"suspend": True})
    wait_for(lambda: api.job(NS, JOB) is None, what="the Job deleted")
    assert api.pods(NS) == []  # the emulator's garbage collector took the pod along
    st = wait_condition(api, "Suspended", "True", "SuspendRequested")
    assert stays(lambda: status(api)["phase"]) == "Suspended"  # not mistaken for JobDeleted

    set_spec(api, {"suspend": False})
    job = wait_job(api)
    assert job["spec"]["suspend"] is True  # queued again, for Kueue to admit
    st = wait_condition(api, "Suspended", "False", "Resumed")
    assert condition(st, "Admitted") == ("False", "Queued")
    history = cluster.history("batch/v1/jobs", NS, JOB)
    uids = [v["metadata"]["uid"] if v else None for v in history]
    assert uids.count(None) == 1 and uids[0] != uids[-1]  # deleted once, created anew
    assert job_creations(cluster) == 2


def test_a_deleted_job_is_not_recreated(
    cluster: EmulatorServer, api: KubeClient, operator: OperatorProcess
) -> None:
    create(api)
    job = wait_job(api)
    actors.pod_running(api, actors.create_pod(api, job))
    wait_condition(api, "Running", "True", "Training")

    api.delete(path(BATCH, "jobs", NS, JOB), propagation="Background")
    st = wait_condition(api, "Failed", "True", "JobDeleted")
    assert "not recreated" in st["message"]
    wait_event(api, "Warning", "JobDeleted")
    assert stays(lambda: api.job(NS, JOB)) is None
    assert job_creations(cluster) == 1


def test_deleting_the_finetunejob_leaves_the_rest_to_the_garbage_collector(
    cluster: EmulatorServer, api: KubeClient, operator: OperatorProcess
) -> None:
    create(api)
    job = wait_job(api)
    pod = actors.create_pod(api, job)
    actors.pod_running(api, pod)
    wait_condition(api, "Running", "True", "Training")

    api.delete(path(FTJ, "finetunejobs", NS, NAME))
    # No finalizer: gone at once; the Job and its pod follow through their ownerReferences.
    assert api.finetunejob(NS, NAME) is None
    assert api.job(NS, JOB) is None and api.pods(NS) == []
    assert stays(lambda: (api.jobs(NS), api.pods(NS))) == ([], [])
    history = cluster.history("ftjob.dev/v1alpha1/finetunejobs", NS, NAME)
    assert all(not (v or {}).get("metadata", {}).get("finalizers") for v in history)
    assert job_creations(cluster) == 1
    assert operator.running


def test_api_errors(
    cluster: EmulatorServer, api: KubeClient, operator: OperatorProcess, log_allowances: list[str]
) -> None:
    emulator = cluster.emulator
    # 429 with Retry-After on the Job's creation, then a 500 on the status write: retried, not failed.
    emulator.fail(
        request_matches("POST", "jobs"), 429, headers={"Retry-After": "1"}, reason="TooManyRequests"
    )
    emulator.fail(request_matches("PATCH", "finetunejobs", subresource="status"), 500)
    create(api)
    wait_condition(api, "Running", "False", "JobCreated")
    assert job_creations(cluster) == 2

    # A server that keeps failing: the handler is retried later by kopf (its log says so at ERROR).
    log_allowances.append(r"failed temporarily: Kubernetes API: 503")
    emulator.fail(request_matches("POST", "jobs"), 503, times=4)
    create(api, name="second")
    wait_for(lambda: api.job(NS, "second-train"), what="second Job after 503s", timeout=30)

    # A 4xx that retrying cannot fix: the FineTuneJob fails with the API server's reason.
    emulator.fail(
        request_matches("POST", "jobs"),
        403,
        reason="Forbidden",
        message='jobs.batch is forbidden: exceeded quota: "jobs"',
    )
    create(api, name="third")
    st = wait_for(
        lambda: (
            (s := (api.finetunejob(NS, "third") or {}).get("status"))
            and condition(s, "Failed") == ("True", "JobRejected")
            and s
        ),
        what="third Failed/JobRejected",
    )
    assert "exceeded quota" in st["message"]
    assert api.job(NS, "third-train") is None
