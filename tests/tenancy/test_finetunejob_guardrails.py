"""The FineTuneJob guardrail, judged by the real API server (a ValidatingAdmissionPolicy with the
FineTuneJobPolicy of the namespace as parameters): a tenant with the built-in `edit` role gets every
FineTuneJob outside its policy refused at creation, with the field, the value and the rule in the message;
one inside is accepted; a guarded namespace without a policy admits none; and the tenant cannot loosen its
own policy."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.kube_client import CORE

from .conftest import FTJS, Tenancy
from .objects import LOOPBACK, finetunejob, policy

REFUSED: list[tuple[str, Any, str, str]] = [
    # (field, value, rule named, value quoted)
    ("baseModel.uri", "s3://team-models/unvetted/m/", "baseModelPrefixes", "s3://team-models/unvetted/m/"),
    ("baseModel.uri", "hf://someone-else/model@main", "hfOrganizations", "hf://someone-else/model@main"),
    ("data.trainUri", "s3://other-team/data.jsonl", "dataPrefixes", "s3://other-team/data.jsonl"),
    ("data.validationUri", "s3://team-datax/v.jsonl", "dataPrefixes", "s3://team-datax/v.jsonl"),
    ("output.uri", "s3://team-results/elsewhere/", "outputPrefixes", "s3://team-results/elsewhere/"),
    ("storage.endpointUrl", "http://10.0.0.12:9000", "storageEndpoints", "http://10.0.0.12:9000"),
    ("storage.endpointUrl", LOOPBACK, "noLoopbackOrLinkLocalEndpoint", LOOPBACK),
    (
        "storage.endpointUrl",
        "http://localhost:9000",
        "noLoopbackOrLinkLocalEndpoint",
        "http://localhost:9000",
    ),
    ("storage.endpointUrl", None, "allowDefaultEndpoint", "unset: AWS S3"),
    ("image", "docker.io/someone/trainer:latest", "images", "docker.io/someone/trainer:latest"),
    ("serviceAccountName", "ftjob-trainer-finance", "serviceAccountNames", "ftjob-trainer-finance"),
    ("resources.gpus", 1, "maxGpusPerJob=0", "spec.resources.gpus 1"),
    ("activeDeadlineSeconds", None, "maxActiveDeadlineSeconds=86400", "(unset)"),
    ("activeDeadlineSeconds", 172_800, "maxActiveDeadlineSeconds=86400", "172800"),
]


@pytest.mark.parametrize(
    ("field", "value", "rule", "quoted"), REFUSED, ids=[f"{f}={v}" for f, v, _, _ in REFUSED]
)
def test_a_finetunejob_outside_the_policy_is_refused_naming_the_rule(
    tenancy: Tenancy, field: str, value: Any, rule: str, quoted: str
) -> None:
    reply = tenancy.alice.post(tenancy.finetunejobs(tenancy.team), finetunejob({field: value}), dry_run=True)
    assert reply.status == 403, reply.message
    assert reply.body["reason"] == "Forbidden"
    assert "ValidatingAdmissionPolicy 'ftjob-" in reply.message, reply.message
    assert f"spec.{field}" in reply.message and quoted in reply.message and rule in reply.message, (
        reply.message
    )
    assert f"(FineTuneJobPolicy {tenancy.team}/default)" in reply.message or "noLoopback" in rule


def test_a_finetunejob_inside_the_policy_is_accepted(tenancy: Tenancy) -> None:
    accepted: list[dict[str, Any]] = [
        {},
        {"baseModel.uri": "s3://team-models/approved/smollm2/", "image": "registry.example.com/ml/trainer:1"},
        {
            "data.validationUri": "s3://team-data/orders/val.jsonl",
            "serviceAccountName": "ftjob-trainer-research",
        },
        {"activeDeadlineSeconds": 86_400},
    ]
    for changes in accepted:
        reply = tenancy.alice.post(
            tenancy.finetunejobs(tenancy.team), finetunejob(changes, name="accepted"), dry_run=True
        )
        assert reply.status == 201, f"{changes}: {reply.message}"
    created = tenancy.alice.post(tenancy.finetunejobs(tenancy.team), finetunejob(name="kept"))
    assert created.status == 201, created.message
    # The spec is decided at creation: later writes (suspend, the operator's annotations) are not judged.
    url = f"{tenancy.finetunejobs(tenancy.team)}/kept"
    assert tenancy.alice.patch(url, {"spec": {"suspend": False}}).status == 200


def test_a_guarded_namespace_without_a_policy_admits_no_finetunejob(tenancy: Tenancy) -> None:
    reply = tenancy.admin.post(tenancy.finetunejobs(tenancy.bare), finetunejob(), dry_run=True)
    assert reply.status == 422
    assert "no params found for policy binding with `Deny` parameterNotFoundAction" in reply.message, (
        reply.message
    )


def test_the_tenant_cannot_loosen_its_own_policy(tenancy: Tenancy) -> None:
    """`edit` writes ConfigMaps (which is why the parameters are not one) but no FineTuneJobPolicy."""
    ns = tenancy.team
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mine"}}
    assert tenancy.alice.post(f"{CORE}/namespaces/{ns}/configmaps", configmap, dry_run=True).status == 201
    url = f"{FTJS}/namespaces/{ns}/finetunejobpolicies"
    loose = {"spec": {"dataPrefixes": ["s3://other-team/"]}}
    for method, path, body in [
        ("PATCH", f"{url}/default", loose),
        ("DELETE", f"{url}/default", None),
        ("POST", url, {**policy(), "metadata": {"name": "mine"}}),
    ]:
        kind = "application/merge-patch+json" if method == "PATCH" else "application/json"
        reply = tenancy.alice.request(method, path, body, content_type=kind, dry_run=method != "DELETE")
        assert reply.status == 403, f"{method} {path}: {reply.status} {reply.message}"
        assert "cannot" in reply.message and '"finetunejobpolicies"' in reply.message
    assert tenancy.alice.get(f"{url}/default").status == 403


def test_the_policy_refuses_loose_prefixes(tenancy: Tenancy) -> None:
    """A prefix must end in '/': s3://team would also admit s3://team-other/."""
    url = f"{FTJS}/namespaces/{tenancy.team}/finetunejobpolicies"
    loose = policy()
    loose["metadata"]["name"] = "loose"
    loose["spec"]["dataPrefixes"] = ["s3://team-data"]
    reply = tenancy.admin.post(url, loose, dry_run=True)
    assert reply.status == 422 and "spec.dataPrefixes[0]" in reply.message, reply.message
