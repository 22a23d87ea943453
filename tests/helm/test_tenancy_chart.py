"""The multi-tenancy parts of the chart, offline (tests/tenancy has the real API server enforce them): a
cloud identity per team that replaces the shared one, a trainer NetworkPolicy beside every trainer
ServiceAccount, and guardrails that match only what they should."""

from __future__ import annotations

import helm_python

from .rendering import GUARDED, GUARDED_SELECTOR, JsonDict, of_kind, one, render

SHARED_ROLE = "arn:aws:iam::123456789012:role/ftjob-shared"


def by_namespace(objects: list[JsonDict], kind: str) -> dict[str, JsonDict]:
    return {o["metadata"]["namespace"]: o for o in of_kind(objects, kind)}


def test_a_team_gets_its_own_identity_and_never_the_shared_one(rendered: dict[str, list[JsonDict]]) -> None:
    accounts = {
        ns: sa
        for ns, sa in by_namespace(rendered["guarded"], "ServiceAccount").items()
        if sa["metadata"]["name"] == "ftjob-trainer"
    }
    assert sorted(accounts) == ["team-a", "team-b"]
    assert accounts["team-a"]["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/ftjob-team-a"
    }
    assert accounts["team-b"]["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": "team-b@example.iam.gserviceaccount.com"
    }
    assert accounts["team-b"]["metadata"]["labels"]["team"] == "b"
    for sa in accounts.values():
        assert sa["automountServiceAccountToken"] is False


def test_the_shared_identity_applies_only_where_no_team_has_its_own(chart: helm_python.Chart) -> None:
    values = {
        "trainerServiceAccount": {
            "annotations": {"eks.amazonaws.com/role-arn": SHARED_ROLE},
            "namespaces": ["lab"],
            "perNamespace": {"team-a": {"annotations": {}}},
        }
    }
    accounts = by_namespace(render(chart, values), "ServiceAccount")
    assert accounts["lab"]["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": SHARED_ROLE}
    # An explicit empty map: no cloud identity at all, still not the shared one.
    assert "annotations" not in accounts["team-a"]["metadata"]


def test_trainer_egress_is_dns_the_store_and_public_https_only(rendered: dict[str, list[JsonDict]]) -> None:
    policies = {
        ns: p
        for ns, p in by_namespace(rendered["guarded"], "NetworkPolicy").items()
        if p["metadata"]["name"].endswith("-trainer")
    }
    assert sorted(policies) == ["team-a", "team-b"]
    spec = policies["team-a"]["spec"]
    assert spec["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "ftjob", "app.kubernetes.io/managed-by": "ftjob-operator"}
    }
    assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["ingress"] == []
    dns, store, https = spec["egress"]
    assert dns["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert store == GUARDED["trainerNetworkPolicy"]["storage"][0]
    (block,) = https["to"]
    assert block["ipBlock"]["cidr"] == "0.0.0.0/0" and "169.254.0.0/16" in block["ipBlock"]["except"]
    assert https["ports"] == [{"port": 443, "protocol": "TCP"}]


def test_guardrails_are_off_by_default_and_scoped_when_on(rendered: dict[str, list[JsonDict]]) -> None:
    for name in ("default", "namespaced", "custom"):
        kinds = {o["kind"] for o in rendered[name]}
        assert not kinds & {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}, name
        assert of_kind(rendered[name], "NetworkPolicy") == [] or name == "custom"
    objects = rendered["guarded"]
    policies = of_kind(objects, "ValidatingAdmissionPolicy")
    bindings = of_kind(objects, "ValidatingAdmissionPolicyBinding")
    assert sorted(p["metadata"]["name"] for p in policies) == ["ftjob-finetunejobs", "ftjob-jobs"]
    for policy in policies:
        assert policy["spec"]["failurePolicy"] == "Fail"
        assert policy["spec"]["paramKind"] == {
            "apiVersion": "ftjob.dev/v1alpha1",
            "kind": "FineTuneJobPolicy",
        }
        assert policy["spec"]["matchConstraints"]["namespaceSelector"] == GUARDED_SELECTOR
    for binding in bindings:
        assert binding["spec"]["paramRef"] == {"name": "default", "parameterNotFoundAction": "Deny"}
        assert binding["spec"]["matchResources"]["namespaceSelector"] == GUARDED_SELECTOR
        assert binding["spec"]["validationActions"] == ["Warn", "Audit"]
    jobs = one([p for p in policies if p["metadata"]["name"] == "ftjob-jobs"], "ValidatingAdmissionPolicy")
    (condition,) = jobs["spec"]["matchConditions"]
    account = one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    assert (
        condition["expression"]
        == f"request.userInfo.username == 'system:serviceaccount:ftjob-system:{account}'"
    )
    crd = [
        o
        for o in of_kind(objects, "CustomResourceDefinition")
        if o["spec"]["names"]["kind"] == "FineTuneJobPolicy"
    ]
    assert crd and crd[0]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
