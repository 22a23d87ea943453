"""The test control plane itself: real binaries, the generated CRD served, namespaces per test."""

from __future__ import annotations

from tests.support.control_plane import ControlPlane
from tests.support.kube_client import CORE, KubeClient


def test_the_api_server_is_real_and_serves_the_generated_crd(
    control_plane: ControlPlane, api: KubeClient
) -> None:
    version = api.get("/version") or {}
    assert version["gitVersion"].startswith("v1.36"), version
    crd = api.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/finetunejobs.ftjob.dev") or {}
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"


def test_each_test_gets_its_own_namespace(api: KubeClient, namespace: str) -> None:
    ns = api.get(f"{CORE}/namespaces/{namespace}") or {}
    assert ns["status"]["phase"] == "Active"
