"""The second guardrail: Jobs created by the operator's ServiceAccount. What the operator's own code renders
(the trainer Job and the collector Job of an admitted FineTuneJob) is accepted; the same Job bent into
anything else (another image or command, host access, a Secret as files, no owner, over the caps) is
refused with the rule named, so the operator's identity cannot be used to run arbitrary Jobs. Judged by
the real API server, with a TokenRequest token of the chart's ServiceAccount."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable

import pytest

from ftjob_operator.render import render_job
from ftjob_operator.render_collector import render_collector_job
from tests.helm.rendering import JsonDict
from tests.support.kube_client import BATCH

from .conftest import Tenancy
from .objects import MAX_DEADLINE, finetunejob


@pytest.fixture(scope="module")
def admitted(tenancy: Tenancy) -> JsonDict:
    """A FineTuneJob the first guardrail admitted (created for real: render_job needs its uid)."""
    name = f"job-{uuid.uuid4().hex[:6]}"
    return tenancy.admin.post(tenancy.finetunejobs(tenancy.team), finetunejob(name=name)).ok()


def create(tenancy: Tenancy, job: JsonDict) -> tuple[int, str]:
    reply = tenancy.operator.post(f"{BATCH}/namespaces/{tenancy.team}/jobs", job, dry_run=True)
    return reply.status, reply.message


def test_the_jobs_the_operator_renders_are_accepted(tenancy: Tenancy, admitted: JsonDict) -> None:
    settings = tenancy.installation.settings
    for job in (render_job(admitted, settings), render_collector_job(admitted, settings)):
        status, message = create(tenancy, job)
        assert status == 201, f"{job['metadata']['name']}: {message}"


def _pod(job: JsonDict) -> JsonDict:
    pod: JsonDict = job["spec"]["template"]["spec"]
    return pod


def _container(job: JsonDict) -> JsonDict:
    container: JsonDict = _pod(job)["containers"][0]
    return container


BENT: dict[str, tuple[Callable[[JsonDict], object], str]] = {
    "another-name": (lambda j: j["metadata"].update(name="miner"), "rule trainerJobIdentity"),
    "no-ftjob-label": (
        lambda j: j["metadata"]["labels"].pop("ftjob.dev/finetunejob"),
        "rule trainerJobIdentity",
    ),
    "no-owner": (lambda j: j["metadata"].pop("ownerReferences"), "rule trainerJobOwner"),
    # Without blockOwnerDeletion, which OwnerReferencesPermissionEnforcement would refuse first.
    "another-owner-kind": (
        lambda j: j["metadata"]["ownerReferences"][0].update(
            apiVersion="apps/v1", kind="Deployment", blockOwnerDeletion=False
        ),
        "rule trainerJobOwner",
    ),
    "another-image": (
        lambda j: _container(j).update(image="docker.io/library/busybox:1"),
        "image 'docker.io/library/busybox:1' is refused by rule images",
    ),
    "another-command": (lambda j: _container(j).update(command=["sh", "-c", "env"]), "rule trainerJobShape"),
    "a-second-container": (
        lambda j: _pod(j)["containers"].append({**_container(j), "name": "side"}),
        "rule trainerJobShape",
    ),
    "an-init-container": (
        lambda j: _pod(j).update(initContainers=[{**_container(j), "name": "init"}]),
        "rule trainerJobShape",
    ),
    "a-whole-secret-as-env": (
        lambda j: _container(j).update(envFrom=[{"secretRef": {"name": "other-team-keys"}}]),
        "rule trainerJobShape",
    ),
    "a-secret-volume": (
        lambda j: _pod(j)["volumes"].append({"name": "keys", "secret": {"secretName": "other-team-keys"}}),
        "rule trainerPodIsolation",
    ),
    "a-host-path": (
        lambda j: _pod(j)["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
        "rule trainerPodIsolation",
    ),
    "host-network": (lambda j: _pod(j).update(hostNetwork=True), "rule trainerPodIsolation"),
    "an-api-token": (lambda j: _pod(j).update(automountServiceAccountToken=True), "rule trainerPodIsolation"),
    # (privileged: true itself is refused by this API server's --allow-privileged=false first.)
    "escalation-and-capabilities": (
        lambda j: _container(j)["securityContext"].update(
            allowPrivilegeEscalation=True, capabilities={"add": ["NET_ADMIN"]}
        ),
        "rule trainerContainerSecurity",
    ),
    "another-service-account": (
        lambda j: _pod(j).update(serviceAccountName="ftjob-trainer-finance"),
        "serviceAccountName 'ftjob-trainer-finance' is refused by rule serviceAccountNames",
    ),
    "a-gpu-over-the-cap": (
        lambda j: _container(j)["resources"]["limits"].update({"nvidia.com/gpu": "1"}),
        "rule maxGpusPerJob",
    ),
    "a-longer-deadline": (
        lambda j: j["spec"].update(activeDeadlineSeconds=MAX_DEADLINE + 1),
        f"spec.activeDeadlineSeconds {MAX_DEADLINE + 1} is refused by rule maxActiveDeadlineSeconds",
    ),
}


@pytest.mark.parametrize("change", sorted(BENT))
def test_a_job_the_operator_would_never_render_is_refused(
    tenancy: Tenancy, admitted: JsonDict, change: str
) -> None:
    job = copy.deepcopy(render_job(admitted, tenancy.installation.settings))
    bend, rule = BENT[change]
    bend(job)
    status, message = create(tenancy, job)
    assert status == 403, message
    assert f"ValidatingAdmissionPolicy '{tenancy.installation.release}-jobs'" in message, message
    assert rule in message, message


def test_only_the_operators_jobs_are_judged(tenancy: Tenancy, admitted: JsonDict) -> None:
    """Other identities' Jobs are their RBAC's business: the admin creates a busybox Job unhindered."""
    job = copy.deepcopy(render_job(admitted, tenancy.installation.settings))
    _container(job).update(image="docker.io/library/busybox:1", command=["true"])
    reply = tenancy.admin.post(f"{BATCH}/namespaces/{tenancy.team}/jobs", job, dry_run=True)
    assert reply.status == 201, reply.message


def test_a_multi_node_job_is_accepted_and_only_with_the_trainer_s_launcher(
    tenancy: Tenancy, admitted: JsonDict
) -> None:
    """Two CPU nodes (the team may use no GPU): `ftjob-train launch` with torchrun's rendezvous flags, an
    Indexed Job; any other torchrun option is refused."""
    two_nodes = copy.deepcopy(admitted)
    two_nodes["spec"]["resources"]["nodes"] = 2
    job = render_job(two_nodes, tenancy.installation.settings)
    assert job["spec"]["completionMode"] == "Indexed"
    status, message = create(tenancy, job)
    assert status == 201, message
    for bent in (["--no-python"], ["--run-path=/tmp/x.py"]):
        other = copy.deepcopy(job)
        _container(other)["command"] = [*_container(other)["command"], *bent]
        status, message = create(tenancy, other)
        assert status == 403 and "rule trainerJobShape" in message, (bent, status, message)
