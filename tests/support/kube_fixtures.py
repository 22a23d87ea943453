"""Fixtures of every test that involves Kubernetes: a real control plane, once per test session.

`control_plane` starts etcd, kube-apiserver and kube-controller-manager (tests/support/control_plane.py)
and applies the freshly generated CRD (server-side apply, then waits for `Established`); `namespace`
gives each test a namespace of its own; `api` is an admin client and `kubeconfig` an admin kubeconfig.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ftjob.schema.crd import CRD_NAME, build_crd
from tests.support.control_plane import (
    BIN_ENV,
    ControlPlane,
    binaries_folder,
    missing_binaries,
    start_control_plane,
)
from tests.support.kube_actors import NODE
from tests.support.kube_client import CORE, KubeClient, wait_for
from tests.support.kubelet import TestKubelet

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def _established(api: KubeClient) -> bool:
    crd = api.get(f"{CRD_PATH}/{CRD_NAME}") or {}
    return any(
        c.get("type") == "Established" and c.get("status") == "True"
        for c in (crd.get("status") or {}).get("conditions") or []
    )


def install_crd(api: KubeClient) -> None:
    """Server-side apply of the CRD as `ftjob generate` builds it now, then wait until it is served."""
    api.apply(f"{CRD_PATH}/{CRD_NAME}", build_crd(), field_manager="ftjob-tests")
    wait_for(lambda: _established(api), timeout=30, what=f"CRD {CRD_NAME} Established")


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    missing = missing_binaries(binaries_folder())
    if missing:
        why = (
            f"the real Kubernetes control plane is not available: missing {', '.join(missing)} "
            f"(set {BIN_ENV} to the folder holding etcd, kube-apiserver and kube-controller-manager)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    plane = start_control_plane()
    try:
        install_crd(plane.client())
        yield plane
    finally:
        plane.stop()
        if os.environ.get("FTJOB_KEEP_K8S") != "1":
            shutil.rmtree(plane.root, ignore_errors=True)


@pytest.fixture(scope="session")
def kubelet(control_plane: ControlPlane) -> Iterator[TestKubelet]:
    """The test Node, Ready for the whole session, serving container logs to the API server."""
    cert, key = control_plane.pki.leaf("kubelet", f"system:node:{NODE}", server=True)
    with TestKubelet(control_plane.client(), cert, key, NODE) as node:
        yield node
    assert not node.errors, node.errors


@pytest.fixture
def api(control_plane: ControlPlane) -> KubeClient:
    return control_plane.client()


@pytest.fixture
def namespace(api: KubeClient) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    api.create(f"{CORE}/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    # Pods are refused until the controller manager has made the namespace's `default` ServiceAccount.
    wait_for(lambda: api.get(f"{CORE}/namespaces/{name}/serviceaccounts/default"), what=f"{name}/default SA")
    yield name
    api.delete(f"{CORE}/namespaces/{name}")


@pytest.fixture
def kubeconfig(control_plane: ControlPlane, tmp_path: Path) -> Path:
    return control_plane.write_kubeconfig(tmp_path / "kubeconfig")
