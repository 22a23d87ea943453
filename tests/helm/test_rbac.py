"""RBAC: explicit verbs only, no Secrets or ConfigMaps, and exactly what the operator's code uses (derived from
that code in rbac.py, not copied)."""

from __future__ import annotations

import pytest

from .rbac import EXPECTED, FORBIDDEN_RESOURCES, Permission, permission_of, required_permissions
from .rendering import CONFIGURATIONS, RELEASE_NAMESPACE, JsonDict, of_kind, one


def permissions(rules: list[JsonDict]) -> set[Permission]:
    out: set[Permission] = set()
    for rule in rules:
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    out.add((group, resource, verb))
    return out


def roles(objects: list[JsonDict]) -> list[JsonDict]:
    return [o for o in objects if o["kind"] in ("Role", "ClusterRole")]


# --- tests ----------------------------------------------------------------------------------------------------
def test_the_path_parser_maps_requests_to_permissions() -> None:
    assert permission_of("GET", "/api/v1/namespaces/a/pods") == ("", "pods", "list")
    assert permission_of("GET", "/api/v1/namespaces/a/pods/p/log") == ("", "pods/log", "get")
    assert permission_of("PATCH", "/apis/ftjob.dev/v1alpha1/namespaces/a/finetunejobs/x/status") == (
        "ftjob.dev",
        "finetunejobs/status",
        "patch",
    )
    assert permission_of("DELETE", "/apis/batch/v1/namespaces/a/jobs/j") == ("batch", "jobs", "delete")
    assert permission_of("DELETE", "/apis/batch/v1/namespaces/a/jobs") == (
        "batch",
        "jobs",
        "deletecollection",
    )
    assert permission_of("PUT", "/apis/batch/v1/namespaces/a/jobs/j") == ("batch", "jobs", "update")


def test_the_contract_is_what_the_operator_code_needs() -> None:
    required = required_permissions()
    assert required == EXPECTED, (
        f"missing from the chart: {sorted(required - EXPECTED)}; unused: {sorted(EXPECTED - required)}"
    )


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_chart_rules_match_the_contract_exactly(name: str, rendered: dict[str, list[JsonDict]]) -> None:
    found = roles(rendered[name])
    assert found
    for role in found:
        assert permissions(role["rules"]) == EXPECTED, f"{role['kind']}/{role['metadata']['name']}"


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_no_wildcards_no_secrets_no_configmaps(name: str, rendered: dict[str, list[JsonDict]]) -> None:
    for role in roles(rendered[name]):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert not any("*" in item for item in rule.get(field) or []), f"wildcard in {field}: {rule}"
            assert not set(rule.get("resources") or []) & FORBIDDEN_RESOURCES, rule
            assert "nonResourceURLs" not in rule
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_cluster_mode_binds_one_cluster_role_to_the_operator(rendered: dict[str, list[JsonDict]]) -> None:
    objects = rendered["default"]
    assert of_kind(objects, "Role") == []
    assert of_kind(objects, "RoleBinding") == []
    role = one(objects, "ClusterRole")
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    operator_sa = one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": operator_sa, "namespace": RELEASE_NAMESPACE}
    ]


def test_namespaced_mode_has_a_role_per_namespace_and_nothing_cluster_scoped(
    rendered: dict[str, list[JsonDict]],
) -> None:
    objects = rendered["namespaced"]
    # The only cluster-scoped object is the CRD itself (crds.install=false removes it too).
    assert {o["kind"] for o in objects if "namespace" not in o["metadata"]} == {"CustomResourceDefinition"}
    assert of_kind(objects, "ClusterRole") == of_kind(objects, "ClusterRoleBinding") == []
    operator_sa = one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    role_namespaces = sorted(r["metadata"]["namespace"] for r in of_kind(objects, "Role"))
    assert role_namespaces == ["team-a", "team-b"]
    for binding in of_kind(objects, "RoleBinding"):
        namespace = binding["metadata"]["namespace"]
        (role,) = [r for r in of_kind(objects, "Role") if r["metadata"]["namespace"] == namespace]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": operator_sa, "namespace": RELEASE_NAMESPACE}
        ]
    assert len(of_kind(objects, "RoleBinding")) == 2


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_trainer_account_has_no_permissions_and_no_token(
    name: str, rendered: dict[str, list[JsonDict]]
) -> None:
    objects = rendered[name]
    trainer_sa_name = CONFIGURATIONS[name].get("trainerServiceAccount", {}).get("name", "ftjob-trainer")
    trainer_sas = [o for o in of_kind(objects, "ServiceAccount") if o["metadata"]["name"] == trainer_sa_name]
    for sa in trainer_sas:
        assert sa["automountServiceAccountToken"] is False
        assert sa["metadata"]["labels"]["app.kubernetes.io/component"] == "trainer"
    for binding in of_kind(objects, "RoleBinding") + of_kind(objects, "ClusterRoleBinding"):
        assert all(s["name"] != trainer_sa_name for s in binding["subjects"]), binding


def test_trainer_account_carries_a_cloud_identity(rendered: dict[str, list[JsonDict]]) -> None:
    """Cluster mode creates it only where listed; its annotations are what IRSA/workload identity read."""
    trainer_sas = [
        o for o in of_kind(rendered["custom"], "ServiceAccount") if o["metadata"]["name"] == "llm-trainer"
    ]
    assert sorted(sa["metadata"]["namespace"] for sa in trainer_sas) == ["ml-team", "research"]
    for sa in trainer_sas:
        assert sa["metadata"]["annotations"] == {
            "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/ftjob-trainer"
        }
        assert sa["metadata"]["labels"]["team"] == "ml"
    assert [
        o for o in of_kind(rendered["default"], "ServiceAccount") if o["metadata"]["name"] == "ftjob-trainer"
    ] == []


def test_operator_token_is_mounted_only_into_the_operator_pod(rendered: dict[str, list[JsonDict]]) -> None:
    objects = rendered["default"]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (operator_sa,) = [
        o for o in of_kind(objects, "ServiceAccount") if o["metadata"]["name"] == pod["serviceAccountName"]
    ]
    assert operator_sa["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is True
