"""The operator as a running process against a real control plane (kube-apiserver, kube-controller-manager).

The real Job controller creates the trainer pods, applies podFailurePolicy and backoffLimit and writes the
Jobs' conditions; the real garbage collector deletes what a FineTuneJob owns. The tests play the scheduler
and the kubelet (binding pods to the test Node, writing container states and termination messages, serving
the trainer's log through `pods/log`) and Kueue (unsuspending a Job). The operator talks to the API server
through the fault-injecting proxy, which counts its requests and injects errors where a test asks.

Every test ends by scanning the operator's log for errors and tracebacks it did not expect, and by checking
that the API server refused none of the operator's writes as invalid (422): its Events and status are
validated for real.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import urllib3

from ftjob import contract
from ftjob.api.status import Artifacts, DatasetStats, Metrics
from ftjob.contract import ProgressRecord, TerminationSummary, format_progress_line
from ftjob.schema.crd import CRD_NAME, build_crd
from ftjob_operator.render import render_job
from ftjob_operator.settings import OperatorSettings
from tests.support import kube_actors as actors
from tests.support.fault_proxy import Cut, Delay, Drop, FaultProxy, Match, Reply, Reset, resource_path
from tests.support.kube_client import (
    BATCH,
    CORE,
    FTJ,
    ApiError,
    JsonDict,
    KubeClient,
    condition,
    ftj_status,
    path,
    wait_for,
)
from tests.support.kube_fixtures import CRD_PATH
from tests.support.kubelet import TestKubelet
from tests.support.operator_process import OperatorProcess, free_port

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


# -- the cluster as a test sees it -----------------------------------------------------------------------
@dataclass
class Cluster:
    """One test's namespace on the real control plane, the test kubelet, and the proxy the operator uses."""

    api: KubeClient
    ns: str
    kubelet: TestKubelet
    proxy: FaultProxy
    seen_pods: set[str] = field(default_factory=set)
    bound: set[str] = field(default_factory=set)

    # -- FineTuneJobs ---------------------------------------------------------------------------------
    def create(self, spec: JsonDict | None = None, name: str = NAME) -> JsonDict:
        body = {
            "apiVersion": "ftjob.dev/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": name},
            "spec": spec or SPEC,
        }
        return self.api.create(path(FTJ, "finetunejobs", self.ns), body)

    def set_spec(self, patch: JsonDict) -> JsonDict:
        return self.api.patch(path(FTJ, "finetunejobs", self.ns, NAME), {"spec": patch})

    def status(self, name: str = NAME) -> JsonDict:
        return ftj_status(self.api, self.ns, name)

    def wait_status(
        self, check: Callable[[JsonDict], bool], what: str, timeout: float = 20, name: str = NAME
    ) -> JsonDict:
        def probe() -> JsonDict | None:
            st = self.status(name)
            return st if st and check(st) else None

        try:
            return wait_for(probe, timeout=timeout, what=what)
        except AssertionError as err:
            raise AssertionError(f"{err}\nstatus now: {self.status(name)}") from None

    def wait_condition(
        self, type_: str, value: str, reason: str, timeout: float = 20, name: str = NAME
    ) -> JsonDict:
        return self.wait_status(
            lambda st: condition(st, type_) == (value, reason), f"{type_}={value}/{reason}", timeout, name
        )

    def event_reasons(self, name: str = NAME) -> list[tuple[str, str]]:
        return [(e["type"], e["reason"]) for e in self.api.events(self.ns, involved=name)]

    def wait_event(self, type_: str, reason: str) -> None:
        wait_for(
            lambda: (type_, reason) in self.event_reasons(),
            what=f"Event {type_}/{reason}; seen {self.event_reasons()}",
        )

    # -- Jobs and their pods ------------------------------------------------------------------------
    def job(self, name: str = JOB) -> JsonDict | None:
        return self.api.job(self.ns, name)

    def wait_job(self, check: Callable[[JsonDict], bool] = lambda job: True, name: str = JOB) -> JsonDict:
        def probe() -> JsonDict | None:
            job = self.job(name)
            return job if job is not None and check(job) else None

        return wait_for(probe, what=f"Job {name}")

    def wait_job_gone(self, name: str = JOB, timeout: float = 20) -> None:
        wait_for(lambda: self.job(name) is None, timeout=timeout, what=f"Job {name} deleted")

    def job_condition(self, type_: str) -> JsonDict | None:
        for c in ((self.job() or {}).get("status") or {}).get("conditions") or []:
            if c["type"] == type_ and c["status"] == "True":
                return dict(c)
        return None

    def pods(self) -> list[JsonDict]:
        return self.api.pods(self.ns, f"ftjob.dev/finetunejob={NAME}")

    def next_pod(self, timeout: float = 30) -> JsonDict:
        """The next pod the Job controller creates (one this test has not been given yet)."""

        def probe() -> JsonDict | None:
            fresh = [p for p in self.pods() if p["metadata"]["name"] not in self.seen_pods]
            return fresh[0] if fresh else None

        pod = wait_for(probe, timeout=timeout, what="a new trainer pod from the Job controller")
        self.seen_pods.add(pod["metadata"]["name"])
        return pod

    # -- the scheduler and the kubelet -----------------------------------------------------------
    def bind(self, pod: JsonDict) -> JsonDict:
        if pod["metadata"]["name"] not in self.bound:
            actors.bind_pod(self.api, pod, self.kubelet.node)
            self.bound.add(pod["metadata"]["name"])
        return pod

    def start(self, pod: JsonDict, log: str = "") -> JsonDict:
        """Schedule the pod on the test Node and run its trainer, whose log `pods/log` then serves."""
        self.kubelet.set_log(self.ns, pod["metadata"]["name"], log)
        self.bind(pod)
        return actors.pod_running(self.api, pod)

    def set_log(self, pod: JsonDict, text: str) -> None:
        self.kubelet.set_log(self.ns, pod["metadata"]["name"], text)

    def finish_deleted_pods(self) -> None:
        """The kubelet's part of a graceful deletion: the container stops (SIGTERM), the pod is removed."""
        for pod in self.api.pods(self.ns):
            meta = pod["metadata"]
            if not meta.get("deletionTimestamp"):
                continue
            try:
                if (pod.get("spec") or {}).get("nodeName") and (pod.get("status") or {}).get("phase") not in (
                    "Succeeded",
                    "Failed",
                ):
                    actors.pod_terminated(self.api, pod, 143, reason="Error")
                actors.delete_pod(self.api, pod, grace_period_seconds=0)
            except ApiError as err:
                if err.status not in (404, 409):
                    raise

    # -- what the operator sent ---------------------------------------------------------------------
    def requests(self, method: str, plural: str, name: str | None = None, sub: str | None = None) -> int:
        return self.proxy.count(Match(method, resource_path(plural, name, sub, namespace=self.ns)))


@pytest.fixture
def cluster(
    api: KubeClient, namespace: str, kubelet: TestKubelet, fault_proxy: FaultProxy
) -> Iterator[Cluster]:
    env = Cluster(api, namespace, kubelet, fault_proxy)
    # The kubelet finishes every graceful deletion at once (the Job controller's on suspension, the garbage
    # collector's): a test that needs a pod to stay sets its status itself before deleting anything.
    stop = threading.Event()
    errors: list[str] = []

    def finisher() -> None:
        while not stop.wait(0.2):
            try:
                env.finish_deleted_pods()
            except Exception as exc:  # reported below, never silently lost
                errors.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=finisher, name="kubelet-finisher", daemon=True)
    thread.start()
    yield env
    # Leave nothing for the namespace's deletion to wait on: bound pods go only when a kubelet says so.
    for pod in api.pods(namespace):
        with contextlib.suppress(ApiError):
            actors.delete_pod(api, pod, grace_period_seconds=0)
    stop.set()
    thread.join(10)
    assert not errors, errors


@pytest.fixture
def log_allowances() -> list[str]:
    """Patterns of log lines a test expects to be reported as errors (e.g. an injected 503)."""
    return []


@pytest.fixture
def operator_args(namespace: str) -> list[str]:
    return [*FAST, "--namespace", namespace]


@pytest.fixture
def operator_process(
    namespace: str,
    proxy_kubeconfig: Path,
    tmp_path: Path,
    operator_args: list[str],
    log_allowances: list[str],
    fault_proxy: FaultProxy,
) -> Iterator[OperatorProcess]:
    """The operator, not started yet: tests that prepare the cluster first start it themselves."""
    process = OperatorProcess(proxy_kubeconfig, tmp_path / "operator.log", operator_args)
    yield process
    process.stop()
    if "--namespace" not in operator_args:
        # Watching every namespace, it also finds what earlier tests left in namespaces being deleted.
        log_allowances.append(rf"\b(?!{namespace}/)t-[0-9a-f]{{10}}/")
    problems = process.problems(log_allowances)
    assert not problems, "unexpected errors in the operator log:\n" + "\n".join(problems)
    # The real API server validated every write: Events, the status (CRD schema), Jobs.
    invalid = [r for r in fault_proxy.records if r.status == 422 and r.action is None]
    assert not invalid, f"the API server refused the operator's requests as invalid: {invalid}"
    unrecorded = [line for line in process.log_text().splitlines() if "could not record Event" in line]
    assert not [line for line in unrecorded if f"{namespace}/" in line], unrecorded


@pytest.fixture
def operator(operator_process: OperatorProcess) -> OperatorProcess:
    operator_process.start()
    return operator_process


# -- helpers -------------------------------------------------------------------------------------------
def stays(probe: Callable[[], Any], seconds: float = 2.0) -> Any:
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


def assert_subset(expected: Any, actual: Any, where: str = "") -> None:
    """Everything in `expected` is in `actual` (which the API server may have completed with defaults)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not an object"
        for key, value in expected.items():
            assert key in actual, f"{where}.{key} is missing"
            assert_subset(value, actual[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual!r}"
        for index, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_subset(e, a, f"{where}[{index}]")
    else:
        assert expected == actual, f"{where}: expected {expected!r}, got {actual!r}"


# -- tests ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("operator_args", [FAST], ids=["all-namespaces"])
def test_creates_the_job_as_rendered(cluster: Cluster, operator: OperatorProcess) -> None:
    ftj = cluster.create()
    job = cluster.wait_job()
    expected = render_job(ftj, SETTINGS)
    # The API server accepted the rendered Job as it is (it only adds defaults and the controller's labels).
    assert_subset(expected["spec"], job["spec"], "spec")
    assert {k: job["metadata"][k] for k in ("name", "labels", "ownerReferences")} == {
        k: expected["metadata"][k] for k in ("name", "labels", "ownerReferences")
    }
    assert job["metadata"]["ownerReferences"][0]["uid"] == ftj["metadata"]["uid"]

    # The real Job controller made the pod from the template: tracked by its finalizer, labelled for the
    # operator's watch, controlled by the Job.
    pod = cluster.next_pod()
    assert "batch.kubernetes.io/job-tracking" in pod["metadata"]["finalizers"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ftjob-operator"
    assert pod["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]

    st = cluster.wait_condition("Running", "False", "PodPending")
    assert (st["phase"], st["jobName"], st["observedGeneration"]) == ("Pending", JOB, 1)
    assert condition(st, "Validated") == ("True", "SpecValid")
    assert condition(st, "Admitted") == ("True", "NoQueue")
    cluster.wait_event("Normal", "JobCreated")

    # kopf keeps no bookkeeping on the object (the operator has only watch-event handlers): no annotation,
    # no finalizer, no status.kopf. The user's object is written only through its status subresource.
    meta = (cluster.api.finetunejob(cluster.ns, NAME) or {})["metadata"]
    assert "finalizers" not in meta
    assert not meta.get("annotations")
    assert "kopf" not in (cluster.api.finetunejob(cluster.ns, NAME) or {})["status"]
    assert cluster.requests("PATCH", "finetunejobs", NAME) == 0


def test_watches_only_the_namespaces_it_is_given_and_exports_metrics(
    cluster: Cluster, proxy_kubeconfig: Path, tmp_path: Path
) -> None:
    api = cluster.api
    elsewhere = f"t-{uuid.uuid4().hex[:10]}"
    api.create(
        f"{CORE}/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": elsewhere}}
    )
    metrics_port = free_port()
    args = [*FAST, "--namespace", cluster.ns, "--metrics-port", str(metrics_port)]
    process = OperatorProcess(proxy_kubeconfig, tmp_path / "namespaced.log", args)
    process.start()
    try:
        api.create(
            path(FTJ, "finetunejobs", elsewhere),
            {
                "apiVersion": "ftjob.dev/v1alpha1",
                "kind": "FineTuneJob",
                "metadata": {"name": NAME},
                "spec": SPEC,
            },
        )
        cluster.create()
        cluster.wait_job()
        assert stays(lambda: api.jobs(elsewhere)) == []
        assert (api.finetunejob(elsewhere, NAME) or {}).get("status") is None
        scraped = urllib3.request("GET", f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).data.decode()
        assert 'ftjob_finetunejobs{phase="Pending"} 1.0' in scraped
        assert "ftjob_reconcile_duration_seconds_count" in scraped
    finally:
        process.stop()
        api.delete(f"{CORE}/namespaces/{elsewhere}")
    assert process.problems() == []
    # It never even listed another namespace.
    assert cluster.proxy.count(Match(path=rf".*/namespaces/{elsewhere}/.*")) == 0


def test_status_follows_the_job_and_its_pods(cluster: Cluster, operator: OperatorProcess) -> None:
    cluster.create({**SPEC, "backoffLimit": 1})  # one preemption tolerated (it counts: see below)
    first = cluster.bind(cluster.next_pod())
    actors.pod_waiting(cluster.api, first, "ContainerCreating")
    cluster.wait_condition("Running", "False", "PodPending")

    cluster.start(first)
    st = cluster.wait_condition("Running", "True", "Training")
    assert st["phase"] == "Running" and st["startTime"]
    cluster.wait_event("Normal", "TrainingStarted")

    # Progress comes from the trainer's log, read by the operator's poll through the real pods/log.
    cluster.set_log(
        first,
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
    st = cluster.wait_status(lambda s: (s.get("progress") or {}).get("step") == 20, "progress step 20", 10)
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

    # Preempted: the pod is a disruption target; podFailurePolicy counts it against backoffLimit (1) and the
    # Job starts another.
    actors.pod_disrupted(cluster.api, first)
    st = cluster.wait_condition("Running", "False", "Preempted")
    assert st["phase"] == "Running"
    cluster.wait_event("Warning", "Preempted")
    # (after the Job controller's back-off, which it applies to ignored failures too: about 10 s)
    second = cluster.start(cluster.next_pod(timeout=40))
    cluster.wait_condition("Running", "True", "Training")

    actors.pod_terminated(cluster.api, second, 0, SUCCESS.to_message())
    st = cluster.wait_condition("Succeeded", "True", "TrainingSucceeded")
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
    cluster.wait_event("Normal", "TrainingSucceeded")
    job_status = (cluster.job() or {})["status"]
    assert (job_status.get("succeeded"), job_status.get("failed", 0)) == (1, 1)  # the preemption counted

    # The Job's TTL deletes it: the FineTuneJob keeps its results and is never trained again.
    cluster.api.delete(path(BATCH, "jobs", cluster.ns, JOB), propagation="Background")
    assert stays(lambda: (cluster.job(), cluster.status()["phase"])) == (None, "Succeeded")
    assert cluster.requests("POST", "jobs") == 1


def _data_invalid(cluster: Cluster, pod: JsonDict) -> None:
    summary = TerminationSummary(
        outcome="Failed",
        reason="DataInvalid",
        message="Only 4 usable examples after cleaning (minExamples 10).",
        dataset=DatasetStats(total_lines=30, train_examples=4, dropped=26),
    )
    actors.pod_terminated(cluster.api, pod, 3, summary.to_message())


def _oom_killed(cluster: Cluster, pod: JsonDict) -> None:
    actors.pod_terminated(cluster.api, pod, 137, reason="OOMKilled")


@pytest.mark.parametrize(
    ("backoff_limit", "script", "reason", "message", "job_reason"),
    [
        # podFailurePolicy FailJob on exit code 3, although backoffLimit would allow two more attempts.
        pytest.param(
            2, _data_invalid, "DataInvalid", "Only 4 usable examples", "PodFailurePolicy", id="data-invalid"
        ),
        pytest.param(
            0, _oom_killed, "OOMKilled", "ran out of memory (limit 24Gi)", "BackoffLimitExceeded", id="oom"
        ),
    ],
)
def test_failures_are_explained(
    cluster: Cluster,
    operator: OperatorProcess,
    backoff_limit: int,
    script: Callable[[Cluster, JsonDict], None],
    reason: str,
    message: str,
    job_reason: str,
) -> None:
    cluster.create({**SPEC, "backoffLimit": backoff_limit})
    pod = cluster.start(cluster.next_pod())
    cluster.wait_condition("Running", "True", "Training")

    script(cluster, pod)
    st = cluster.wait_condition("Failed", "True", reason)
    assert st["phase"] == "Failed" and message in st["message"]
    cluster.wait_event("Warning", "TrainingFailed")
    # The real Job controller decided, by its own rules.
    assert (cluster.job_condition("FailureTarget") or cluster.job_condition("Failed") or {})[
        "reason"
    ] == job_reason
    assert cluster.job() is not None  # a finished Job is left for its logs and its TTL
    assert [p["metadata"]["name"] for p in cluster.pods()] == [pod["metadata"]["name"]]  # no retry


def test_retries_then_gives_up(cluster: Cluster, operator: OperatorProcess) -> None:
    cluster.create({**SPEC, "backoffLimit": 1})
    first = cluster.start(cluster.next_pod())
    cluster.wait_condition("Running", "True", "Training")
    actors.pod_terminated(cluster.api, first, 1, reason="Error")
    st = cluster.wait_condition("Running", "False", "Retrying")
    assert "exit code 1" in st["message"]
    cluster.wait_event("Warning", "TrainingRetrying")

    # The Job controller's own back-off (10 s) before the second attempt.
    second = cluster.start(cluster.next_pod(timeout=40))
    st = cluster.wait_condition("Running", "True", "Training")
    assert st["attempts"] == 2
    crash = TerminationSummary(
        outcome="Failed", reason="TrainerFailed", message="CUDA error: device-side assert"
    )
    actors.pod_terminated(cluster.api, second, 1, crash.to_message())
    st = cluster.wait_condition("Failed", "True", "BackoffLimitExceeded")
    assert "backoffLimit (1)" in st["message"] and "CUDA error" in st["message"]
    assert (cluster.job() or {})["status"].get("failed") == 2


def test_deadline_exceeded(cluster: Cluster, operator: OperatorProcess) -> None:
    cluster.create({**SPEC, "activeDeadlineSeconds": 3})
    cluster.start(cluster.next_pod())
    # The Job controller stops the Job after 3 s; its pod is deleted (the kubelet stops it).
    st = cluster.wait_condition("Failed", "True", "DeadlineExceeded")
    assert "activeDeadlineSeconds (3 s)" in st["message"]
    cluster.wait_event("Warning", "TrainingFailed")
    wait_for(lambda: cluster.job_condition("Failed"), what="the Job Failed once its pod is gone")


def test_image_pull_failure_fails_and_frees_the_gpu(cluster: Cluster, operator: OperatorProcess) -> None:
    cluster.create({**SPEC, "image": "registry.example/trainer:typo"})
    pod = cluster.bind(cluster.next_pod())
    actors.pod_waiting(
        cluster.api, pod, "ImagePullBackOff", 'Back-off pulling image "registry.example/trainer:typo"'
    )
    cluster.wait_condition("Running", "False", "PodPending")
    # Found by the poll once the grace period (2 s here) is over: no event announces it.
    st = cluster.wait_condition("Failed", "True", "ImagePullFailed", timeout=15)
    assert "registry.example/trainer:typo" in st["message"]
    cluster.wait_job_gone()
    wait_for(lambda: cluster.pods() == [], what="the garbage collector deleting the pod")
    assert stays(lambda: cluster.status()["phase"]) == "Failed"  # not JobDeleted: it was the operator's doing


def test_invalid_spec(cluster: Cluster, operator: OperatorProcess) -> None:
    cluster.create({**SPEC, "peft": {"method": "qlora", "r": 8, "alpha": 256}})
    st = cluster.wait_condition("Failed", "True", "InvalidSpec")
    assert condition(st, "Validated") == ("False", "InvalidSpec")
    assert (
        "spec.peft.alpha: is more than 16x the rank (r=8)" in st["message"] and "(got 256)" in st["message"]
    )
    cluster.wait_event("Warning", "SpecInvalid")
    assert stays(lambda: cluster.api.jobs(cluster.ns)) == []
    assert cluster.requests("POST", "jobs") == 0


def test_adopts_a_job_it_controls_after_a_conflict(
    cluster: Cluster, operator_process: OperatorProcess, log_allowances: list[str]
) -> None:
    log_allowances.append(r"(failed|error).*/jobs\b.*503|503.*/jobs\b")
    ftj = cluster.create()
    # The Job exists (say, created by an operator that died), but the operator's cache misses it: its
    # list and watch of Jobs fail for a while. The create then meets the API server's 409 and must adopt
    # the Job it controls, not fail.
    existing = cluster.api.create(path(BATCH, "jobs", cluster.ns), render_job(ftj, SETTINGS))
    cluster.proxy.add(Match("GET", resource_path("jobs", namespace=cluster.ns)), Reply(503), times=4)
    operator_process.start()

    st = cluster.wait_status(lambda s: s.get("jobName") == JOB, "jobName")
    assert condition(st, "Running") in (("False", "JobCreated"), ("False", "PodPending"))
    cluster.wait_event("Normal", "JobAdopted")
    assert (cluster.job() or {})["metadata"]["uid"] == existing["metadata"]["uid"]
    assert cluster.proxy.count(Match("POST", resource_path("jobs", namespace=cluster.ns)), status=409) == 1
    assert "JobConflict" not in str(cluster.status())


def test_refuses_a_job_it_does_not_control(cluster: Cluster, operator: OperatorProcess) -> None:
    foreign = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": JOB, "labels": {"team": "someone-else"}},
        "spec": {
            "suspend": True,
            "template": {
                "spec": {"containers": [{"name": "x", "image": "busybox"}], "restartPolicy": "Never"}
            },
        },
    }
    before = cluster.api.create(path(BATCH, "jobs", cluster.ns), foreign)
    cluster.create()
    st = cluster.wait_condition("Failed", "True", "JobConflict")
    assert "not controlled by this FineTuneJob" in st["message"]
    cluster.wait_event("Warning", "JobConflict")
    # Untouched: not adopted, suspended or deleted.
    after = stays(lambda: (cluster.job() or {})["metadata"]["resourceVersion"])
    assert after == (cluster.job() or {})["metadata"]["resourceVersion"]
    assert (cluster.job() or {})["metadata"]["uid"] == before["metadata"]["uid"]
    assert cluster.requests("PATCH", "jobs", JOB) == cluster.requests("DELETE", "jobs", JOB) == 0


@pytest.mark.parametrize(
    ("method", "plural", "sub", "forward_first"),
    [
        pytest.param("POST", "jobs", None, True, id="after-the-job-was-created"),
        pytest.param("PATCH", "finetunejobs", "status", False, id="before-the-status-was-written"),
    ],
)
def test_killed_mid_reconcile_and_restarted(
    cluster: Cluster,
    operator: OperatorProcess,
    method: str,
    plural: str,
    sub: str | None,
    forward_first: bool,
) -> None:
    name = NAME if sub else None
    hold = cluster.proxy.hold(
        Match(method, resource_path(plural, name, sub, namespace=cluster.ns)), forward_first=forward_first
    )
    cluster.create()
    assert hold.arrived.wait(20), "the operator never got that far"
    operator.kill()
    hold.release()
    job = cluster.job()
    assert job is not None  # the Job was created before the crash
    assert "jobName" not in cluster.status()  # and the crash came before its status was written

    operator.start()
    cluster.wait_status(lambda s: s.get("jobName") == JOB, "jobName after the restart")
    assert stays(lambda: (cluster.job() or {})["metadata"]["uid"]) == job["metadata"]["uid"]
    assert cluster.requests("POST", "jobs") == 1  # adopted on the first read after the restart
    assert cluster.requests("DELETE", "jobs", JOB) == 0


def test_suspend_and_resume(cluster: Cluster, operator: OperatorProcess) -> None:
    cluster.create()
    first = cluster.start(cluster.next_pod())
    cluster.wait_condition("Running", "True", "Training")

    cluster.set_spec({"suspend": True})
    cluster.wait_job(lambda j: j["spec"]["suspend"] is True)
    # The Job controller deletes the running pod (SIGTERM: the trainer checkpoints), the kubelet stops it.
    wait_for(
        lambda: cluster.api.get(path(CORE, "pods", cluster.ns, first["metadata"]["name"])) is None,
        what="pod gone",
    )
    st = cluster.wait_status(
        lambda s: condition(s, "Suspended") == ("True", "SuspendRequested") and "SIGTERM" not in s["message"],
        "Suspended, pod stopped",
    )
    assert (st["phase"], st["observedGeneration"]) == ("Suspended", 2)
    cluster.wait_event("Normal", "Suspended")
    assert cluster.pods() == []

    cluster.set_spec({"suspend": False})
    cluster.wait_job(lambda j: j["spec"]["suspend"] is False)
    st = cluster.wait_condition("Suspended", "False", "Resumed")
    assert st["observedGeneration"] == 3
    cluster.wait_event("Normal", "Resumed")
    cluster.start(cluster.next_pod())
    cluster.wait_condition("Running", "True", "Training")
    assert cluster.requests("POST", "jobs") == 1  # suspended and resumed in place
    assert (cluster.job() or {})["status"].get("failed", 0) == 0  # a suspension is not a failure


def test_suspend_and_resume_through_kueue(cluster: Cluster, operator: OperatorProcess) -> None:
    cluster.create({**SPEC, "scheduling": {"queueName": "team-gpus"}})
    job = cluster.wait_job()
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-gpus"
    st = cluster.wait_condition("Admitted", "False", "Queued")
    assert st["phase"] == "Queued"
    assert stays(cluster.pods, 1.0) == []  # suspended: the Job controller starts nothing

    job = actors.kueue_admit(cluster.api, job)
    cluster.start(cluster.next_pod())
    cluster.wait_condition("Admitted", "True", "Admitted")
    cluster.wait_condition("Running", "True", "Training")

    # The operator never toggles suspend of a Kueue-managed Job: it takes the Job out of the queue
    # (Foreground: the Job stays until its pod has stopped).
    cluster.set_spec({"suspend": True})
    cluster.wait_job_gone()
    assert cluster.pods() == []
    cluster.wait_condition("Suspended", "True", "SuspendRequested")
    assert stays(lambda: cluster.status()["phase"]) == "Suspended"  # not mistaken for JobDeleted

    cluster.set_spec({"suspend": False})
    job2 = cluster.wait_job()
    assert job2["spec"]["suspend"] is True  # queued again, for Kueue to admit
    assert job2["metadata"]["uid"] != job["metadata"]["uid"]
    st = cluster.wait_condition("Suspended", "False", "Resumed")
    assert condition(st, "Admitted") == ("False", "Queued")
    assert cluster.requests("POST", "jobs") == 2
    assert cluster.requests("DELETE", "jobs", JOB) == 1
    assert cluster.requests("PATCH", "jobs", JOB) == 0


def test_a_deleted_job_is_not_recreated(cluster: Cluster, operator: OperatorProcess) -> None:
    cluster.create()
    cluster.start(cluster.next_pod())
    cluster.wait_condition("Running", "True", "Training")

    cluster.api.delete(path(BATCH, "jobs", cluster.ns, JOB), propagation="Background")
    st = cluster.wait_condition("Failed", "True", "JobDeleted")
    assert "not recreated" in st["message"]
    cluster.wait_event("Warning", "JobDeleted")
    assert stays(cluster.job) is None
    wait_for(lambda: cluster.pods() == [], what="the garbage collector deleting the pod")
    assert cluster.requests("POST", "jobs") == 1


def test_deleting_the_finetunejob_leaves_the_rest_to_the_garbage_collector(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    cluster.create()
    cluster.start(cluster.next_pod())
    cluster.wait_condition("Running", "True", "Training")

    cluster.api.delete(path(FTJ, "finetunejobs", cluster.ns, NAME))
    # No finalizer: gone at once; the Job and its pod follow through their ownerReferences.
    assert cluster.api.finetunejob(cluster.ns, NAME) is None
    cluster.wait_job_gone()
    wait_for(lambda: cluster.pods() == [], what="the garbage collector deleting the pod")
    assert stays(lambda: (cluster.api.jobs(cluster.ns), cluster.pods())) == ([], [])
    assert cluster.requests("POST", "jobs") == 1
    assert cluster.requests("DELETE", "jobs", JOB) == 0  # the garbage collector's doing, not the operator's
    assert operator.running


def test_api_errors(cluster: Cluster, operator: OperatorProcess) -> None:
    jobs = Match("POST", resource_path("jobs", namespace=cluster.ns))
    # 429 with Retry-After on the Job's creation, then a 500 on the status write: retried, not failed.
    cluster.proxy.add(jobs, Reply(429, "TooManyRequests", headers={"Retry-After": "1"}))
    cluster.proxy.add(
        Match("PATCH", resource_path("finetunejobs", NAME, "status", namespace=cluster.ns)), Reply(500)
    )
    cluster.create()
    cluster.wait_status(lambda s: s.get("jobName") == JOB, "jobName")
    assert cluster.requests("POST", "jobs") == 2

    # A server that keeps failing: the reconcile is queued again after a backoff, as often as it takes.
    cluster.proxy.add(jobs, Reply(503), times=4)
    cluster.create(name="second")
    wait_for(lambda: cluster.job("second-train"), what="second Job after 503s", timeout=30)

    # A real refusal that retrying cannot fix: a ResourceQuota allowing no more Jobs.
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "jobs"},
        "spec": {"hard": {"count/jobs.batch": "2"}},
    }
    cluster.api.create(path(CORE, "resourcequotas", cluster.ns), quota)
    wait_for(
        lambda: (
            ((cluster.api.get(path(CORE, "resourcequotas", cluster.ns, "jobs")) or {}).get("status") or {})
            .get("used", {})
            .get("count/jobs.batch")
            == "2"
        ),
        what="the quota controller counting the Jobs",
    )
    cluster.create(name="third")
    st = cluster.wait_condition("Failed", "True", "JobRejected", name="third")
    assert "exceeded quota" in st["message"]
    assert cluster.job("third-train") is None


def test_recovers_from_lost_connections_and_cut_watches(
    cluster: Cluster, operator_process: OperatorProcess
) -> None:
    proxy, ns = cluster.proxy, cluster.ns
    watches = Match("GET", query={"watch": "true"})
    rules = [
        # The first watch streams break right after their headers (connection reset), the next ones end
        # after one event or two seconds: kopf must watch again each time, without losing an event.
        proxy.add(watches, Reset(), times=2),
        proxy.add(watches, Cut(events=1, seconds=2.0), times=6),
        # The Job's creation: served by the API server, but the connection is reset before the answer gets
        # back: the operator retries, meets 409 AlreadyExists and adopts the Job it did create.
        proxy.add(Match("POST", resource_path("jobs", namespace=ns)), Reset()),
        # The first status write is lost on the way (the connection closes with no answer).
        proxy.add(Match("PATCH", resource_path("finetunejobs", NAME, "status", namespace=ns)), Drop()),
        # Slow pod lists.
        proxy.add(Match("GET", resource_path("pods", namespace=ns)), Delay(1.0), times=3),
    ]
    operator_process.start()
    cluster.create()
    pod = cluster.start(cluster.next_pod())
    cluster.wait_condition("Running", "True", "Training")
    actors.pod_terminated(cluster.api, pod, 0, SUCCESS.to_message())
    st = cluster.wait_condition("Succeeded", "True", "TrainingSucceeded")
    assert st["metrics"]["evalLoss"] == 0.87
    assert [(type(r.action).__name__, r.hits) for r in rules] == [
        (type(r.action).__name__, r.times) for r in rules
    ]
    assert len(cluster.api.jobs(ns)) == 1
    # The reset one; then either its watch event reached the cache before the retry (no second POST), or
    # the retry met 409 and adopted the Job it did create.
    posts = cluster.requests("POST", "jobs")
    assert posts == 1 or (posts == 2 and any(e["reason"] == "JobAdopted" for e in cluster.api.events(ns)))


# -- trust: forward compatibility, local outputs, TTL, disruptions --------------------------------------
UPGRADE_FIELD = "trustUpgradeProbeField"  # used by no other test: the CRD is shared by the whole session


def _crd_with_defaulted_field() -> JsonDict:
    crd = build_crd()
    for version in crd["spec"]["versions"]:
        spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        spec_schema["properties"][UPGRADE_FIELD] = {"type": "string", "default": "newer-crd-default"}
    return crd


def test_a_crd_upgrade_under_a_running_job_leaves_it_running(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    cluster.create()
    job = cluster.wait_job()
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[contract.ENV_CONTRACT_VERSION] == str(contract.CONTRACT_VERSION)
    cluster.start(cluster.next_pod())
    cluster.wait_condition("Running", "True", "Training")

    crd_path = f"{CRD_PATH}/{CRD_NAME}"
    try:
        # A newer CRD adds a defaulted field: the API server now returns it in every read of the object.
        cluster.api.apply(crd_path, _crd_with_defaulted_field(), field_manager="ftjob-tests")
        wait_for(
            lambda: (
                UPGRADE_FIELD in (cluster.api.get(path(FTJ, "finetunejobs", cluster.ns, NAME)) or {})["spec"]
            ),
            timeout=30,
            what=f"spec.{UPGRADE_FIELD} defaulted by the upgraded CRD",
        )
        wait_for(
            lambda: f"spec.{UPGRADE_FIELD}" in operator.log_text(),
            timeout=15,
            what="the operator reading the upgraded object",
        )
        # Before: Failed/InvalidSpec ("extra inputs are not permitted") with the Job left holding its GPU.
        phase, running, deleting = stays(
            lambda: (
                cluster.status()["phase"],
                condition(cluster.status(), "Running"),
                bool(((cluster.job() or {}).get("metadata") or {}).get("deletionTimestamp")),
            ),
            seconds=3,
        )
        assert (phase, running, deleting) == ("Running", ("True", "Training"), False)
        assert cluster.job() is not None
        assert operator.log_text().count(f"ignoring the field spec.{UPGRADE_FIELD}") == 1  # once per field
    finally:
        cluster.api.apply(crd_path, build_crd(), field_manager="ftjob-tests")
        wait_for(
            lambda: (
                UPGRADE_FIELD not in str((cluster.api.get(crd_path) or {}).get("spec", {}).get("versions"))
            ),
            timeout=30,
            what="the original CRD restored",
        )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"output": {"uri": "file:///results/demo/"}}, "spec.output.uri", id="file-output"),
        pytest.param({"baseModel": {"uri": "/models/smollm2/"}}, "spec.baseModel.uri", id="local-model"),
    ],
)
def test_pod_local_paths_are_refused_on_a_cluster(
    cluster: Cluster, operator: OperatorProcess, change: JsonDict, field: str
) -> None:
    # Before: a Job was created; the results went to the pod's emptyDir and vanished, the job Succeeded.
    cluster.create({**SPEC, **change})
    st = cluster.wait_condition("Failed", "True", "LocalPathOnCluster")
    assert condition(st, "Validated") == ("False", "LocalPathOnCluster")
    assert field in st["message"] and "ftjob local" in st["message"]
    cluster.wait_event("Warning", "SpecInvalid")
    assert stays(lambda: cluster.api.jobs(cluster.ns)) == []
    assert cluster.requests("POST", "jobs") == 0


def test_the_ttl_runs_from_the_final_status_and_is_the_operator_s(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    ttl = 5
    cluster.create({**SPEC, "ttlSecondsAfterFinished": ttl})
    job = cluster.wait_job()
    assert "ttlSecondsAfterFinished" not in job["spec"]  # the TTL controller never races the operator
    pod = cluster.start(cluster.next_pod())
    cluster.wait_condition("Running", "True", "Training")

    # The operator is slow to list pods when the run ends. Before: the TTL controller deleted the Job 5 s
    # after it completed, the garbage collector its pod and the summary with it, and the operator recorded a
    # Succeeded without metrics (or a Failed/JobDeleted).
    cluster.proxy.add(
        Match("GET", resource_path("pods", namespace=cluster.ns), {"labelSelector": None}),
        Delay(6.0),  # longer than the TTL
        times=None,
    )
    actors.pod_terminated(cluster.api, pod, 0, SUCCESS.to_message())
    st = cluster.wait_status(lambda s: s.get("phase") in ("Succeeded", "Failed"), "a final status", 30)
    assert condition(st, "Succeeded") == ("True", "TrainingSucceeded"), st
    assert st["metrics"]["evalLoss"] == 0.87 and st["artifacts"]["adapter"] == "s3://results/demo/adapter/"
    assert cluster.job() is not None  # kept until the final status is written ...
    cluster.proxy.clear()
    final = next(c for c in st["conditions"] if c["type"] == "Succeeded")["lastTransitionTime"]
    cluster.wait_job_gone(timeout=20)  # ... then deleted by the operator, after the TTL
    gone_at = time.time()
    written = time.mktime(time.strptime(final, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert gone_at >= written + ttl - 1  # (second precision of lastTransitionTime)
    assert any(
        "spec.ttlSecondsAfterFinished after the final status" in line
        for line in operator.log_text().splitlines()
    )
    # The FineTuneJob keeps its results and is never trained again.
    st = stays(cluster.status)
    assert st["phase"] == "Succeeded" and st["metrics"]["evalLoss"] == 0.87
    assert cluster.requests("POST", "jobs") == 1


def test_disruptions_are_tolerated_a_bounded_number_of_times(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    # Before: podFailurePolicy ignored every DisruptionTarget, so a pod evicted for node pressure (a full
    # disk) was replaced, evicted again, forever; even with backoffLimit 0.
    cluster.create({**SPEC, "backoffLimit": 0})
    job = cluster.wait_job()
    assert job["spec"]["activeDeadlineSeconds"] == SETTINGS.default_active_deadline_seconds
    workspace = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "workspace")
    assert workspace["emptyDir"] == {"sizeLimit": "96Gi"}  # 4 x the 24Gi of memory
    pod = cluster.start(cluster.next_pod())
    cluster.wait_condition("Running", "True", "Training")
    actors.pod_disrupted(cluster.api, pod, reason="TerminationByKubelet")
    # The real Job controller counts the disruption against backoffLimit and fails the Job.
    st = cluster.wait_condition("Failed", "True", "BackoffLimitExceeded", timeout=30)
    assert "disrupted (TerminationByKubelet" in st["message"], st["message"]
    assert (cluster.job_condition("Failed") or {}).get("reason") == "BackoffLimitExceeded"
    assert stays(lambda: [p["metadata"]["name"] for p in cluster.pods()]) == [pod["metadata"]["name"]]


def test_a_workspace_that_outgrows_its_limit_is_not_retried(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    # Before: the eviction was ignored (DisruptionTarget) and the Job started a pod that filled the same
    # workspace again, forever.
    cluster.create({**SPEC, "backoffLimit": 2})
    pod = cluster.start(cluster.next_pod())
    cluster.wait_condition("Running", "True", "Training")
    evicted = 'Usage of EmptyDir volume "workspace" exceeds the limit "96Gi". '
    actors.patch_pod_status(
        cluster.api,
        pod,
        {
            "phase": "Failed",
            "reason": "Evicted",
            "message": evicted,
            "conditions": [
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "TerminationByKubelet",
                    "message": evicted,
                    "lastTransitionTime": actors.now(),
                }
            ],
            "containerStatuses": [
                {
                    "name": "trainer",
                    "image": pod["spec"]["containers"][0]["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": {
                        "terminated": {
                            "exitCode": 137,
                            "reason": "Error",
                            "startedAt": actors.now(),
                            "finishedAt": actors.now(),
                        }
                    },
                }
            ],
        },
    )
    st = cluster.wait_condition("Failed", "True", "WorkspaceFull")
    assert "spec.resources.scratchSize" in st["message"] and "96Gi" in st["message"]
    cluster.wait_job_gone()
    assert [p["metadata"]["name"] for p in cluster.pods()] in ([], [pod["metadata"]["name"]])
    assert stays(lambda: cluster.status()["phase"]) == "Failed"
    assert cluster.requests("POST", "jobs") == 1


def _run_that_loses_its_pod(cluster: Cluster, operator: OperatorProcess) -> None:
    """The run succeeds while the operator is down, and its pod is removed (pod garbage collection, a
    person) before the operator is back: the termination message, which held the summary, is gone."""
    cluster.create()
    pod = cluster.start(cluster.next_pod())
    cluster.wait_condition("Running", "True", "Training")
    operator.kill()
    actors.pod_terminated(cluster.api, pod, 0, SUCCESS.to_message())
    cluster.wait_job(lambda job: any(c["type"] == "Complete" for c in job["status"].get("conditions") or []))
    actors.delete_pod(cluster.api, pod, grace_period_seconds=0)
    wait_for(lambda: not cluster.pods(), what="the trainer pod removed")
    operator.start()


def _collector_pod(cluster: Cluster) -> JsonDict:
    st = cluster.wait_condition("Running", "False", "CollectingResults")
    assert "re-reading it from s3://results/demo/summary.json" in st["message"]
    assert st["phase"] == "Running" and "metrics" not in st
    pod = cluster.next_pod()
    assert pod["metadata"]["labels"]["job-name"] == f"{NAME}-collect"
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["ftjob-train", "collect"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    env = {e["name"]: e for e in container["env"]}
    ftj = cluster.api.get(path(FTJ, "finetunejobs", cluster.ns, NAME))
    assert ftj is not None and env["FTJOB_UID"]["value"] == ftj["metadata"]["uid"]
    # The trainer's credentials, as references the kubelet resolves: the operator never holds them.
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "minio-creds"
    return cluster.start(pod)


def test_a_run_whose_pod_vanished_is_re_read_from_the_output_prefix(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    _run_that_loses_its_pod(cluster, operator)
    collector = _collector_pod(cluster)
    actors.pod_terminated(cluster.api, collector, 0, SUCCESS.to_message())
    st = cluster.wait_condition("Succeeded", "True", "TrainingSucceeded")
    assert st["metrics"]["evalLoss"] == 0.87 and st["artifacts"]["adapter"] == "s3://results/demo/adapter/"
    assert st["dataset"]["trainExamples"] == 430
    assert "(re-read from s3://results/demo/summary.json: the trainer pod was gone)" in st["message"]
    cluster.wait_job_gone(f"{NAME}-collect")  # its work is done once the final status is written
    cluster.wait_event("Normal", "CollectingResults")
    assert stays(lambda: cluster.status()["phase"]) == "Succeeded"
    assert cluster.requests("POST", "jobs") == 2  # the trainer's Job and the collector, never a retraining


def test_a_summary_that_cannot_be_re_read_is_said_so(cluster: Cluster, operator: OperatorProcess) -> None:
    _run_that_loses_its_pod(cluster, operator)
    collector = _collector_pod(cluster)
    lost = TerminationSummary(
        outcome="Failed",
        reason="ResultsNotFound",
        message="s3://results/demo/summary.json does not exist: the trainer did not finish writing its results",
    )
    actors.pod_terminated(cluster.api, collector, int(contract.ExitCode.RESULTS_NOT_FOUND), lost.to_message())
    st = cluster.wait_condition("Succeeded", "True", "TrainingSucceeded")
    assert "metrics" not in st
    assert (
        "could not be re-read (ResultsNotFound: s3://results/demo/summary.json does not exist"
        in st["message"]
    )
    cluster.wait_job_gone(f"{NAME}-collect")
    assert cluster.requests("POST", "jobs") == 2  # not retried: reading again cannot help


def test_a_multi_node_run_is_an_indexed_job_that_succeeds_with_index_0(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    cluster.create({**SPEC, "resources": {"gpus": 1, "nodes": 2, "memory": "24Gi"}})
    service = wait_for(lambda: cluster.api.get(path(CORE, "services", cluster.ns, JOB)), what="the Service")
    assert service["spec"]["clusterIP"] == "None"
    job = cluster.wait_job()
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["parallelism"] == 2
    # The real Job controller makes one pod per index, named for the rendezvous: <job>-<index>.<service>.
    first, second = cluster.next_pod(), cluster.next_pod()
    pods = {
        int(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]): p
        for p in (first, second)
    }
    assert {i: (p["spec"]["hostname"], p["spec"]["subdomain"]) for i, p in pods.items()} == {
        0: (f"{JOB}-0", JOB),
        1: (f"{JOB}-1", JOB),
    }
    for pod in pods.values():
        cluster.start(pod)
    cluster.wait_condition("Running", "True", "Training")
    # Index 0 (global rank 0) publishes and exits; the success policy ends the Job without waiting for index 1.
    worker = TerminationSummary(outcome="Succeeded", reason="WorkerFinished", message="rank 1 finished")
    actors.pod_terminated(cluster.api, pods[0], 0, SUCCESS.to_message())
    st = cluster.wait_condition("Succeeded", "True", "TrainingSucceeded", timeout=40)
    assert st["metrics"]["evalLoss"] == 0.87  # from index 0's termination message, not a worker's
    assert cluster.job_condition("SuccessCriteriaMet") is not None
    with contextlib.suppress(ApiError):  # the controller may already be stopping it
        actors.pod_terminated(cluster.api, pods[1], 0, worker.to_message())
    assert cluster.requests("POST", "services") == 1 and cluster.requests("POST", "jobs") == 1
