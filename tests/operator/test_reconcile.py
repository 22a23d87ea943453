"""Reconciler in-process against the real API server (through the proxy, which counts the requests):
idempotence, and a real resourceVersion conflict on the status write."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ftjob_operator.kube import Kube, load_api_client
from ftjob_operator.reconcile import Reconciler
from ftjob_operator.settings import OperatorSettings
from tests.support.fault_proxy import FaultProxy, Match, resource_path
from tests.support.kube_client import FTJ, KubeClient, path

from . import factories as f


@pytest.fixture
def reconciler(proxy_kubeconfig: Path) -> Reconciler:
    return Reconciler(Kube(load_api_client(str(proxy_kubeconfig)), sleep=lambda _: None), OperatorSettings())


def create(api: KubeClient, namespace: str) -> None:
    # Queued for Kueue: the Job is created suspended, so the Job controller starts no pod that would
    # change what the next reconcile observes.
    spec = {"scheduling": {"queueName": "team-gpus"}}
    api.create(path(FTJ, "finetunejobs", namespace), {**f.ftj(spec), "metadata": {"name": "demo"}})


def test_reconcile_is_idempotent(
    fault_proxy: FaultProxy, api: KubeClient, namespace: str, reconciler: Reconciler
) -> None:
    create(api, namespace)
    phases = [reconciler.reconcile(namespace, "demo", trigger="test") for _ in range(3)]
    assert phases == ["Queued", "Queued", "Queued"]
    assert fault_proxy.count(Match("POST", resource_path("jobs", namespace=namespace))) == 1
    status_writes = Match("PATCH", resource_path("finetunejobs", "demo", "status", namespace=namespace))
    assert fault_proxy.count(status_writes) == 1
    reasons = sorted(e["reason"] for e in api.events(namespace, involved="demo"))
    assert reasons == ["JobCreated", "Queued"]  # once each; the API server accepted both


def status_write_of(namespace: str) -> Match:
    return Match("PATCH", resource_path("finetunejobs", "demo", "status", namespace=namespace))


def reconcile_while_the_status_write_is_held(
    fault_proxy: FaultProxy, reconciler: Reconciler, namespace: str, meanwhile: Callable[[], object]
) -> list[str | None]:
    """Reconcile `demo`, and do `meanwhile` between its reads and its status write; returns its phase."""
    hold = fault_proxy.hold(status_write_of(namespace), forward_first=False)
    phases: list[str | None] = []
    worker = threading.Thread(
        target=lambda: phases.append(reconciler.reconcile(namespace, "demo", trigger="test"))
    )
    worker.start()
    assert hold.arrived.wait(20), "the reconcile never wrote the status"
    meanwhile()
    hold.release()
    worker.join(20)
    return phases


def test_a_stale_status_write_is_redone_on_a_fresh_read(
    fault_proxy: FaultProxy, api: KubeClient, namespace: str, reconciler: Reconciler
) -> None:
    create(api, namespace)
    status_write = status_write_of(namespace)
    # Someone changes the object between the reconcile's read and its status write.
    phases = reconcile_while_the_status_write_is_held(
        fault_proxy,
        reconciler,
        namespace,
        lambda: api.patch(
            path(FTJ, "finetunejobs", namespace, "demo"), {"metadata": {"labels": {"team": "a"}}}
        ),
    )
    assert phases == ["Queued"]
    assert fault_proxy.count(status_write, status=409) == 1  # the API server's own refusal
    assert fault_proxy.count(status_write, status=200) == 1
    ftj_reads = Match("GET", resource_path("finetunejobs", "demo", namespace=namespace))
    assert fault_proxy.count(ftj_reads) == 2
    # The retry found the Job it had created: no second creation, no conflict.
    assert fault_proxy.count(Match("POST", resource_path("jobs", namespace=namespace))) == 1
    assert (api.finetunejob(namespace, "demo") or {})["status"]["jobName"] == "demo-train"


def test_a_gone_finetunejob_is_nothing_to_do(reconciler: Reconciler, namespace: str) -> None:
    assert reconciler.reconcile(namespace, "never-existed", trigger="test") is None


def test_a_finetunejob_deleted_during_the_reconcile_is_gone_not_an_error(
    fault_proxy: FaultProxy, api: KubeClient, namespace: str, reconciler: Reconciler
) -> None:
    create(api, namespace)
    status_write = status_write_of(namespace)
    phases = reconcile_while_the_status_write_is_held(
        fault_proxy, reconciler, namespace, lambda: api.delete(path(FTJ, "finetunejobs", namespace, "demo"))
    )
    assert fault_proxy.count(status_write, status=404) == 1  # the API server's answer to the late write
    assert phases == [None]  # read again: gone, nothing left to do
