"""Reconciler in-process against the emulated API: idempotence and the conflict path."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftjob_operator.kube import Kube, load_api_client
from ftjob_operator.reconcile import Reconciler
from ftjob_operator.settings import OperatorSettings
from tests.support.kube_client import FTJ, KubeClient, path
from tests.support.kube_emulator import EmulatorServer, request_matches

from . import factories as f


@pytest.fixture
def reconciler(kubeconfig: Path) -> Reconciler:
    return Reconciler(Kube(load_api_client(str(kubeconfig)), sleep=lambda _: None), OperatorSettings())


def create(api: KubeClient) -> None:
    api.create(path(FTJ, "finetunejobs", "ns"), {"metadata": {"name": "demo"}, "spec": f.minimal_spec()})


def test_reconcile_is_idempotent(cluster: EmulatorServer, api: KubeClient, reconciler: Reconciler) -> None:
    create(api)
    phases = [reconciler.reconcile("ns", "demo", trigger="test") for _ in range(3)]
    assert phases == ["Pending", "Pending", "Pending"]
    assert cluster.count_requests(request_matches("POST", "jobs")) == 1
    assert cluster.count_requests(request_matches("PATCH", "finetunejobs", subresource="status")) == 1
    assert len(api.events("ns", involved="demo")) == 1  # JobCreated, once


def test_a_stale_status_write_is_redone_on_a_fresh_read(
    cluster: EmulatorServer, api: KubeClient, reconciler: Reconciler
) -> None:
    create(api)
    cluster.emulator.fail(
        request_matches("PATCH", "finetunejobs", subresource="status"), 409, reason="Conflict"
    )
    assert reconciler.reconcile("ns", "demo", trigger="test") == "Pending"
    assert cluster.count_requests(request_matches("GET", "finetunejobs", name="demo")) == 2
    assert cluster.count_requests(request_matches("POST", "jobs")) == 1  # the retry found the Job it created
    assert (api.finetunejob("ns", "demo") or {})["status"]["jobName"] == "demo-train"


def test_a_gone_finetunejob_is_nothing_to_do(reconciler: Reconciler) -> None:
    assert reconciler.reconcile("ns", "never-existed", trigger="test") is None
