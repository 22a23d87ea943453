"""kube.py: error classification, retries, and the verbs, against the emulated API over HTTP."""

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
from tests.support.kube_client import CORE, FTJ, KubeClient, path
from tests.support.kube_emulator import EmulatorServer, request_matches

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
def kube(kubeconfig: Path, sleeps: list[float]) -> Kube:
    return Kube(load_api_client(str(kubeconfig)), sleep=sleeps.append)


def test_throttling_honours_retry_after(cluster: EmulatorServer, kube: Kube, sleeps: list[float]) -> None:
    cluster.emulator.fail(request_matches("GET", "jobs"), 429, times=2, headers={"Retry-After": "3"})
    assert kube.get_job("ns", "missing") is None
    assert sleeps == [3.0, 3.0]


def test_server_errors_back_off_then_surface(
    cluster: EmulatorServer, kube: Kube, sleeps: list[float]
) -> None:
    cluster.emulator.fail(request_matches("GET", "jobs"), 503, times=10)
    with pytest.raises(KubeError) as raised:
        kube.get_job("ns", "x")
    assert raised.value.kind is ErrorKind.UNAVAILABLE
    assert sleeps == [0.5, 1.0, 2.0]


def test_conflicts_and_rejections_are_not_retried(
    cluster: EmulatorServer, kube: Kube, sleeps: list[float]
) -> None:
    body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {}}
    kube.create_job("ns", body)
    with pytest.raises(KubeError) as conflict:
        kube.create_job("ns", body)
    assert (conflict.value.kind, conflict.value.reason) == (ErrorKind.CONFLICT, "AlreadyExists")
    cluster.emulator.fail(
        request_matches("POST", "jobs"), 422, reason="Invalid", message="spec.template: Required value"
    )
    with pytest.raises(KubeError) as rejected:
        kube.create_job("ns", {**body, "metadata": {"name": "k"}})
    assert (rejected.value.kind, rejected.value.message) == (
        ErrorKind.REJECTED,
        "spec.template: Required value",
    )
    assert sleeps == []


def test_status_write_on_a_stale_version_is_refused(api: KubeClient, kube: Kube) -> None:
    created = api.create(path(FTJ, "finetunejobs", "ns"), {**f.ftj(), "metadata": {"name": "demo"}})
    stale = created["metadata"]["resourceVersion"]
    kube.patch_finetunejob_status("ns", "demo", {"phase": "Pending"}, stale)
    with pytest.raises(KubeError) as raised:
        kube.patch_finetunejob_status("ns", "demo", {"phase": "Running"}, stale)
    assert raised.value.kind is ErrorKind.CONFLICT
    current = kube.get_finetunejob("ns", "demo")
    assert current is not None
    assert current["status"] == {"phase": "Pending"}
    assert current["metadata"]["generation"] == 1  # status writes leave the generation alone


def test_pods_by_label_and_log_tail(cluster: EmulatorServer, api: KubeClient, kube: Kube) -> None:
    for name, owner in (("a", "demo"), ("b", "other")):
        api.create(
            path(CORE, "pods", "ns"),
            {"metadata": {"name": name, "labels": {"ftjob.dev/finetunejob": owner}}, "spec": {}},
        )
    assert [p["metadata"]["name"] for p in kube.list_pods("ns", "ftjob.dev/finetunejob=demo")] == ["a"]
    cluster.emulator.set_pod_log("ns", "a", "one\ntwo\nthree\n")
    assert kube.read_pod_log("ns", "a", "trainer", tail_lines=2, limit_bytes=1000) == "two\nthree\n"


def test_deleting_a_missing_job_is_not_an_error(kube: Kube) -> None:
    assert kube.delete_job("ns", "never-existed", "Background") is False
