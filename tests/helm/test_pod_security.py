"""Pod Security `restricted`, judged by the API server's own PodSecurity admission (enforce-version latest):
the operator pod of every configuration and the trainer pods the operator renders with the chart's settings
are admitted (`dryRun=All` runs every admission plugin), and the same pods made unsafe are refused, which
shows the enforcement is real."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ftjob_operator.render import render_job
from tests.support.kube_client import BATCH, CORE

from .conftest import Installations
from .rendering import CONFIGURATIONS, ROOT, JsonDict, pod_templates
from .server import Api, Installation

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def pod_from(template: JsonDict, namespace: str, name: str) -> JsonDict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**copy.deepcopy(template.get("metadata") or {}), "name": name, "namespace": namespace},
        "spec": copy.deepcopy(template["spec"]),
    }


def operator_pod(installation: Installation) -> JsonDict:
    (where, template), *others = pod_templates(installation.objects)
    assert (where, others) == (f"Deployment/{installation.release}", []), "the chart runs one pod"
    return pod_from(template, installation.namespace, "operator-dry-run")


def dry_run_pod(api: Api, pod: JsonDict) -> tuple[int, str]:
    reply = api.post(f"{CORE}/namespaces/{pod['metadata']['namespace']}/pods", pod, dry_run=True)
    return reply.status, reply.message


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_the_operator_pod_is_admitted_under_restricted(
    name: str, installed: Installations, admin: Api
) -> None:
    installation = installed[name]
    pod = operator_pod(installation)
    reply = admin.post(f"{CORE}/namespaces/{installation.namespace}/pods", pod, dry_run=True)
    assert reply.status == 201, reply.message
    assert reply.warnings == ()
    # Admission filled in what the kubelet will get: the operator's own token, and nothing else mounted.
    volumes = {v["name"] for v in reply.body["spec"]["volumes"]}
    assert "tmp" in volumes and any(v.startswith("kube-api-access-") for v in volumes), volumes


# Changes to the operator container's securityContext (None: the field removed, from the pod's too), and what
# the server says about each.
UNSAFE: dict[str, tuple[JsonDict, str]] = {
    "capability added": (
        {"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}},
        'unrestricted capabilities (container "operator" must not include "SYS_ADMIN" in securityContext.capabilities.add)',
    ),
    "seccomp unconfined": (
        {"seccompProfile": {"type": "Unconfined"}},
        'seccompProfile (container "operator" must not set securityContext.seccompProfile.type to "Unconfined")',
    ),
    "runAsNonRoot removed": (
        {"runAsNonRoot": None},
        'runAsNonRoot != true (pod or container "operator" must set securityContext.runAsNonRoot=true)',
    ),
    "privilege escalation": (
        {"allowPrivilegeEscalation": True},
        'allowPrivilegeEscalation != false (container "operator" must set securityContext.allowPrivilegeEscalation=false)',
    ),
}


def make_unsafe(pod: JsonDict, change: JsonDict) -> None:
    container_sc = pod["spec"]["containers"][0]["securityContext"]
    for key, value in change.items():
        if value is None:
            container_sc.pop(key, None)
            pod["spec"]["securityContext"].pop(key, None)
        else:
            container_sc[key] = value


@pytest.mark.parametrize("change", sorted(UNSAFE))
def test_the_same_pod_made_unsafe_is_refused(change: str, installed: Installations, admin: Api) -> None:
    """The negative control: Pod Security really enforces in these namespaces."""
    installation = installed["default"]
    pod = operator_pod(installation)
    unsafe, violation = UNSAFE[change]
    make_unsafe(pod, unsafe)
    status, message = dry_run_pod(admin, pod)
    assert status == 403, message
    assert message.startswith(
        'pods "operator-dry-run" is forbidden: violates PodSecurity "restricted:latest": '
    ), message
    assert violation in message
    # On a Deployment Pod Security can only warn (its pods would be refused when created).
    deployment = copy.deepcopy(installation.deployment)
    deployment["metadata"]["name"] = "unsafe"
    deployment["spec"]["template"]["spec"] = pod["spec"]
    url = f"/apis/apps/v1/namespaces/{installation.namespace}/deployments/unsafe"
    reply = admin.apply(url, deployment, dry_run=True)
    assert reply.status == 201, reply.message
    assert any(violation in w for w in reply.warnings), reply.warnings


# -- trainer pods ------------------------------------------------------------------------------------------
@pytest.fixture
def priority_class(admin: Api) -> Iterator[str]:
    """qlora-full.yaml names a PriorityClass; the Priority admission plugin refuses pods naming a missing one."""
    name = f"training-{uuid.uuid4().hex[:8]}"
    body = {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": name},
        "value": 100,
    }
    admin.post("/apis/scheduling.k8s.io/v1/priorityclasses", body).ok()
    yield name
    admin.delete(f"/apis/scheduling.k8s.io/v1/priorityclasses/{name}")


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_trainer_pods_rendered_with_the_chart_settings_are_admitted(
    example: Path, installed: Installations, admin: Api, priority_class: str
) -> None:
    """Each example FineTuneJob (GPUs, tolerations, Secrets for S3 and the hub, Kueue), rendered by the
    operator's render_job with the settings the namespaced chart passes it (trainer image, default trainer
    ServiceAccount, which the chart creates there): the Job and its pod pass validation and admission."""
    installation = installed["namespaced"]
    namespace = installation.watched[0]
    ftj: JsonDict = yaml.safe_load(example.read_text())
    ftj["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()))
    ftj["spec"].pop("serviceAccountName", None)  # the chart's trainer ServiceAccount instead
    if ftj["spec"].get("scheduling", {}).get("priorityClassName"):
        ftj["spec"]["scheduling"]["priorityClassName"] = priority_class
    settings = installation.settings
    assert settings.trainer_service_account == "ftjob-trainer"
    job = render_job(ftj, settings)
    reply = admin.post(f"{BATCH}/namespaces/{namespace}/jobs", job, dry_run=True)
    assert reply.status == 201, reply.message
    pod = pod_from(job["spec"]["template"], namespace, f"{job['metadata']['name']}-dry-run")
    reply = admin.post(f"{CORE}/namespaces/{namespace}/pods", pod, dry_run=True)
    assert reply.status == 201, reply.message
    assert reply.warnings == ()
    spec = reply.body["spec"]
    assert spec["serviceAccountName"] == "ftjob-trainer"
    # No API token in trainer pods: the ServiceAccount admission plugin mounted none.
    assert not any(v["name"].startswith("kube-api-access-") for v in spec.get("volumes") or [])
    # The negative control: the same pod running as root is refused.
    pod["spec"]["securityContext"]["runAsUser"] = 0
    status, message = dry_run_pod(admin, pod)
    assert status == 403
    assert 'violates PodSecurity "restricted:latest": runAsUser=0 (pod must not set runAsUser=0)' in message
