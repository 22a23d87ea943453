"""kube.py: error classification and retries (pure), and the verbs against the real API server, through the
fault-injecting proxy where a test needs an error the server would not give on its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftjob_operator.kube import (
    ErrorKind,
    Kube,
    KubeError,
    RetryPolicy,
    classify,
    load_api_client,
    parse_retry_after,
)
from tests.support import kube_actors as actors
from tests.support.fault_proxy import Drop, FaultProxy, Match, Reply, Reset, resource_path
from tests.support.kube_client import CORE, FTJ, KubeClient, path
from tests.support.kubelet import TestKubelet

from . import factories as f


@pytest.mark.parametrize(
    ("status", "headers", "body", "kind", "reason", "retry_after"),
    [
        pytest.param(
            409,
            {},
            b'{"reason": "AlreadyExists", "message": "jobs \\"x\\" already exists"}',
            ErrorKind.CONFLICT,
            "AlreadyExists",
            None,
            id="409-already-exists",
        ),
        pytest.param(
            409, {}, b'{"reason": "Conflict"}', ErrorKind.CONFLICT, "Conflict", None, id="409-stale-version"
        ),
        pytest.param(404, {}, b"{}", ErrorKind.NOT_FOUND, "NotFound", None, id="404"),
        pytest.param(
            429,
            {"Retry-After": "7"},
            b'{"reason": "TooManyRequests"}',
            ErrorKind.THROTTLED,
            "TooManyRequests",
            7.0,
            id="429-retry-after",
        ),
        pytest.param(429, {}, b"", ErrorKind.THROTTLED, "Throttled", None, id="429-bare"),
        pytest.param(500, {}, b"oops", ErrorKind.UNAVAILABLE, "Unavailable", None, id="500-not-json"),
        pytest.param(503, {"retry-after": "2"}, b"{}", ErrorKind.UNAVAILABLE, "Unavailable", 2.0, id="503"),
        pytest.param(
            403,
            {},
            b'{"reason": "Forbidden", "message": "cannot create jobs"}',
            ErrorKind.REJECTED,
            "Forbidden",
            None,
            id="403",
        ),
        pytest.param(422, {}, b'{"reason": "Invalid"}', ErrorKind.REJECTED, "Invalid", None, id="422"),
    ],
)
def test_classify(
    status: int, headers: dict[str, str], body: bytes, kind: ErrorKind, reason: str, retry_after: float | None
) -> None:
    err = classify(status, headers, body)
    assert (err.kind, err.status, err.reason, err.retry_after) == (kind, status, reason, retry_after)


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_retry_policy() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=3, max_retry_after=20)
    unavailable = KubeError(ErrorKind.UNAVAILABLE, 503, "x", "")
    assert [policy.delay(unavailable, n) for n in range(4)] == [0.5, 1.0, 2.0, 3]
    assert policy.delay(KubeError(ErrorKind.THROTTLED, 429, "x", "", retry_after=60), 0) == 20
    assert policy.delay(KubeError(ErrorKind.THROTTLED, 429, "x", ""), 0) == 1.0


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def kube(proxy_kubeconfig: Path, sleeps: list[float]) -> Kube:
    return Kube(load_api_client(str(proxy_kubeconfig)), sleep=sleeps.append)


def get_job(namespace: str, name: str) -> Match:
    return Match("GET", resource_path("jobs", name, namespace=namespace))


def test_throttling_honours_retry_after(
    fault_proxy: FaultProxy, kube: Kube, namespace: str, sleeps: list[float]
) -> None:
    fault_proxy.add(get_job(namespace, "missing"), Reply(429, headers={"Retry-After": "3"}), times=2)
    assert kube.get_job(namespace, "missing") is None  # the real server's 404, on the third attempt
    assert sleeps == [3.0, 3.0]
    assert fault_proxy.count(get_job(namespace, "missing"), status=404) == 1


def test_server_errors_back_off_then_surface(
    fault_proxy: FaultProxy, kube: Kube, namespace: str, sleeps: list[float]
) -> None:
    fault_proxy.add(get_job(namespace, "x"), Reply(503), times=10)
    with pytest.raises(KubeError) as raised:
        kube.get_job(namespace, "x")
    assert raised.value.kind is ErrorKind.UNAVAILABLE
    assert sleeps == [0.5, 1.0, 2.0]
    assert fault_proxy.count(get_job(namespace, "x")) == 4


@pytest.mark.parametrize("fault", [Drop(), Reset(after_bytes=20)], ids=["dropped", "reset-mid-response"])
def test_lost_connections_are_retried(
    fault_proxy: FaultProxy,
    api: KubeClient,
    kube: Kube,
    namespace: str,
    sleeps: list[float],
    fault: Drop | Reset,
) -> None:
    api.create(path(FTJ, "finetunejobs", namespace), {**f.ftj(), "metadata": {"name": "demo"}})
    match = Match("GET", resource_path("finetunejobs", "demo", namespace=namespace))
    fault_proxy.add(match, fault, times=2)
    got = kube.get_finetunejob(namespace, "demo")
    assert got is not None and got["metadata"]["name"] == "demo"
    assert sleeps == [0.5, 1.0]
    assert fault_proxy.count(match) == 3


def test_conflicts_and_rejections_are_not_retried(kube: Kube, namespace: str, sleeps: list[float]) -> None:
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j"},
        "spec": {
            "suspend": True,
            "template": {
                "spec": {"containers": [{"name": "c", "image": "busybox"}], "restartPolicy": "Never"}
            },
        },
    }
    kube.create_job(namespace, body)
    with pytest.raises(KubeError) as conflict:
        kube.create_job(namespace, body)
    assert (conflict.value.kind, conflict.value.reason) == (ErrorKind.CONFLICT, "AlreadyExists")
    invalid = {**body, "metadata": {"name": "k"}, "spec": {"template": {"spec": {"restartPolicy": "Never"}}}}
    with pytest.raises(KubeError) as rejected:
        kube.create_job(namespace, invalid)
    assert (rejected.value.kind, rejected.value.status, rejected.value.reason) == (
        ErrorKind.REJECTED,
        422,
        "Invalid",
    )
    assert "spec.template.spec.containers: Required value" in rejected.value.message
    assert sleeps == []


def test_status_write_on_a_stale_version_is_refused(api: KubeClient, kube: Kube, namespace: str) -> None:
    created = api.create(path(FTJ, "finetunejobs", namespace), {**f.ftj(), "metadata": {"name": "demo"}})
    stale = created["metadata"]["resourceVersion"]
    kube.patch_finetunejob_status(namespace, "demo", {"phase": "Pending"}, stale)
    with pytest.raises(KubeError) as raised:
        kube.patch_finetunejob_status(namespace, "demo", {"phase": "Running"}, stale)
    assert (raised.value.kind, raised.value.reason) == (ErrorKind.CONFLICT, "Conflict")
    current = kube.get_finetunejob(namespace, "demo")
    assert current is not None
    assert current["status"] == {"phase": "Pending"}
    assert current["metadata"]["generation"] == 1  # status writes leave the generation alone


def test_pods_by_label_and_log_tail(
    api: KubeClient, kube: Kube, namespace: str, kubelet: TestKubelet
) -> None:
    for name, owner in (("a", "demo"), ("b", "other")):
        api.create(
            path(CORE, "pods", namespace),
            {
                "metadata": {"name": name, "labels": {"ftjob.dev/finetunejob": owner}},
                "spec": {"containers": [{"name": "trainer", "image": "busybox"}]},
            },
        )
    assert [p["metadata"]["name"] for p in kube.list_pods(namespace, "ftjob.dev/finetunejob=demo")] == ["a"]
    pod = api.get(path(CORE, "pods", namespace, "a")) or {}
    actors.bind_pod(api, pod, kubelet.node)
    kubelet.set_log(namespace, "a", "one\ntwo\nthree\n")
    assert kube.read_pod_log(namespace, "a", "trainer", tail_lines=2, limit_bytes=1000) == "two\nthree\n"
    assert kube.read_pod_log(namespace, "a", "trainer", tail_lines=5, limit_bytes=4) == "one\n"


def test_deleting_a_missing_job_is_not_an_error(kube: Kube, namespace: str) -> None:
    assert kube.delete_job(namespace, "never-existed", "Background") is False
