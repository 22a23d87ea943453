"""The test control plane itself: real binaries, the generated CRD served, namespaces per test."""

from __future__ import annotations

import pytest

from tests.support import kube_actors as actors
from tests.support.control_plane import ControlPlane
from tests.support.kube_client import CORE, ApiError, KubeClient, path
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


def test_clients_act_as_the_identity_they_were_given(control_plane: ControlPlane, namespace: str) -> None:
    """Impersonation and tokens reach the server: a ServiceAccount with no Role cannot list Secrets."""
    secrets = path(CORE, "secrets", namespace)
    assert control_plane.client().list_items(secrets) == []
    as_sa = control_plane.client(impersonate=f"system:serviceaccount:{namespace}:default")
    with pytest.raises(ApiError) as refused:
        as_sa.list_items(secrets)
    assert refused.value.status == 403 and f"system:serviceaccount:{namespace}:default" in refused.value.body
    with pytest.raises(ApiError) as unknown:
        control_plane.client(token="not-a-token").list_items(secrets)
    assert unknown.value.status == 401


def test_owner_references_permission_enforcement_is_on(
    control_plane: ControlPlane, api: KubeClient, namespace: str
) -> None:
    """As on most clusters: blockOwnerDeletion needs `update` on the owner's finalizers (the chart grants
    it for FineTuneJobs); without it the server refuses the child."""
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "get"]}
    api.create(f"{rbac}/roles", {"metadata": {"name": "cm"}, "rules": [rule]})
    subject = {"kind": "ServiceAccount", "name": "default", "namespace": namespace}
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm"}
    api.create(f"{rbac}/rolebindings", {"metadata": {"name": "cm"}, "roleRef": ref, "subjects": [subject]})
    owner = api.create(path(CORE, "configmaps", namespace), {"metadata": {"name": "owner"}})
    child = {
        "metadata": {
            "name": "child",
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "owner",
                    "uid": owner["metadata"]["uid"],
                    "blockOwnerDeletion": True,
                }
            ],
        }
    }
    as_sa = control_plane.client(impersonate=f"system:serviceaccount:{namespace}:default")
    with pytest.raises(ApiError) as refused:
        as_sa.create(path(CORE, "configmaps", namespace), child)
    assert "cannot set blockOwnerDeletion" in refused.value.body, refused.value.body
