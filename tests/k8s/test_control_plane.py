"""The test control plane itself: real binaries, the generated CRD served, namespaces per test."""

from __future__ import annotations

from tests.support import kube_actors as actors
from tests.support.control_plane import ControlPlane
from tests.support.kube_client import CORE, KubeClient, path
from tests.support.kubelet import TestKubelet


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


def test_pod_logs_reach_the_test_kubelet_through_the_api_server(
    api: KubeClient, namespace: str, kubelet: TestKubelet
) -> None:
    pod = api.create(
        path(CORE, "pods", namespace),
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "trainer", "image": "busybox"}]},
        },
    )
    actors.bind_pod(api, pod, kubelet.node)
    kubelet.set_log(namespace, "p", "one\ntwo\nthree\n")
    assert api.text(path(CORE, "pods", namespace, "p", "log")) == "one\ntwo\nthree\n"
    assert api.text(path(CORE, "pods", namespace, "p", "log"), query={"tailLines": "1"}) == "three\n"
    node = api.get(f"{CORE}/nodes/{kubelet.node}") or {}
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "True"
