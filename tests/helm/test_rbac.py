"""RBAC, judged by the real API server: the chart's operator ServiceAccount, with a TokenRequest token, may do
what the operator does (real requests succeed), no more (real requests get 403; the server's
SelfSubjectRulesReview lists exactly permissions.EXPECTED), and in namespaced mode nothing outside the
watched namespaces. test_operator_as_service_account.py runs the operator itself with that token."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from ftjob_operator.events import Event, event_body
from ftjob_operator.names import LABEL_MANAGED_BY
from ftjob_operator.render import render_job
from tests.support.control_plane import ControlPlane
from tests.support.kube_client import BATCH, CORE, JsonDict

from .conftest import Installations
from .permissions import EXPECTED, Permission, expand
from .server import Api, Installation, other_namespace, service_account_token, username

FTJS = "/apis/ftjob.dev/v1alpha1"
MODES = ["cluster", "namespaced"]
CONFIGURATION = {"cluster": "default", "namespaced": "namespaced"}


@dataclass
class Scene:
    installation: Installation
    operator: Api
    """The operator's ServiceAccount, with a TokenRequest token."""
    user: str
    work: str
    """A namespace the operator works in (cluster mode: a namespace of no installation)."""
    elsewhere: tuple[str, ...]
    """Namespaces where it may do nothing (namespaced mode: its own and one it does not watch)."""


@pytest.fixture(params=MODES)
def scene(
    request: pytest.FixtureRequest, installed: Installations, admin: Api, control_plane: ControlPlane
) -> Scene:
    installation = installed[CONFIGURATION[request.param]]
    token = service_account_token(admin, installation.namespace, installation.operator_account)
    user = username(installation.namespace, installation.operator_account)
    other = other_namespace(admin, installation)
    elsewhere: tuple[str, ...] = ()
    work = other
    if installation.watched:
        work, elsewhere = installation.watched[0], (installation.namespace, other)
    return Scene(installation, Api(control_plane, token), user, work, elsewhere)


def rules_review(api: Api, namespace: str) -> set[Permission]:
    """What the server says the caller may do in `namespace` (its own RBAC evaluation, cluster roles too)."""
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": namespace},
    }
    status = api.post("/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", body).ok()["status"]
    assert not status.get("incomplete"), status
    return expand(status["resourceRules"])


def baseline(admin: Api, control_plane: ControlPlane, namespace: str) -> set[Permission]:
    """What any ServiceAccount may do (system:basic-user and friends): one with no binding of its own."""
    name = f"nobody-{uuid.uuid4().hex[:6]}"
    admin.post(
        f"{CORE}/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
    ).ok()
    nobody = Api(control_plane, service_account_token(admin, namespace, name))
    return rules_review(nobody, namespace)


def can_i(api: Api, namespace: str, group: str, resource: str, verb: str) -> bool:
    resource, _, sub = resource.partition("/")
    attrs = {"namespace": namespace, "group": group, "resource": resource, "subresource": sub, "verb": verb}
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attrs},
    }
    status = api.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body).ok()["status"]
    return bool(status["allowed"])


def assert_forbidden(scene: Scene, method: str, url: str, body: JsonDict | None = None) -> str:
    reply = scene.operator.request(method, url, body, dry_run=method in ("POST", "PATCH"))
    assert reply.status == 403, f"{method} {url}: {reply.status} {reply.message}"
    assert f'is forbidden: User "{scene.user}" cannot ' in reply.message, reply.message
    return reply.message


def finetunejob(admin: Api, namespace: str) -> JsonDict:
    name = f"rbac-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": "ftjob.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "baseModel": {"uri": "s3://models/smollm2/"},
            "data": {"trainUri": "s3://data/train.jsonl"},
            "output": {"uri": "s3://results/demo/"},
            "suspend": True,  # no trainer pod: only the API calls matter here
        },
    }
    return admin.post(f"{FTJS}/namespaces/{namespace}/finetunejobs", body).ok()


# -- exactly the contract, as the server evaluates it -------------------------------------------------------
def test_the_server_grants_the_operator_exactly_the_contract(
    scene: Scene, admin: Api, control_plane: ControlPlane
) -> None:
    nothing = baseline(admin, control_plane, scene.installation.namespace)
    assert not nothing & EXPECTED
    granted = rules_review(scene.operator, scene.work) - nothing
    assert granted == EXPECTED, f"more: {sorted(granted - EXPECTED)}; less: {sorted(EXPECTED - granted)}"
    for namespace in scene.installation.watched:
        assert rules_review(scene.operator, namespace) - nothing == EXPECTED
    for namespace in scene.elsewhere:
        assert rules_review(scene.operator, namespace) - nothing == set(), namespace


def test_the_trainer_account_may_do_nothing(
    installed: Installations, admin: Api, control_plane: ControlPlane
) -> None:
    installation = installed["namespaced"]
    namespace = installation.watched[0]
    trainer = Api(control_plane, service_account_token(admin, namespace, "ftjob-trainer"))
    assert rules_review(trainer, namespace) == baseline(admin, control_plane, namespace)
    assert trainer.get(f"{CORE}/namespaces/{namespace}/pods").status == 403


# -- enough: every call the operator makes, made for real as its ServiceAccount ---------------------------
def test_the_operator_account_can_do_the_operators_work(scene: Scene, admin: Api) -> None:
    api, ns = scene.operator, scene.work
    ftj = finetunejob(admin, ns)
    meta = ftj["metadata"]
    assert isinstance(meta, dict)
    url = f"{FTJS}/namespaces/{ns}/finetunejobs/{meta['name']}"
    # FineTuneJobs: read, kopf's watch, the status; never the object itself (kopf writes nothing on it).
    assert api.get(url).status == 200
    assert api.get(f"{FTJS}/namespaces/{ns}/finetunejobs").status == 200
    assert api.watch(f"{FTJS}/namespaces/{ns}/finetunejobs") == 200
    annotations = {"metadata": {"annotations": {"ftjob.dev/last-handled-configuration": "{}"}}}
    assert_forbidden(scene, "PATCH", url, annotations)
    assert api.patch(f"{url}/status", {"status": {"observedGeneration": 1}}).ok()["status"] == {
        "observedGeneration": 1
    }
    # The trainer Job, as the operator renders it with the chart's settings (ownerReference with
    # blockOwnerDeletion): the test server runs OwnerReferencesPermissionEnforcement, which refuses it
    # without `update` on finetunejobs/finalizers.
    assert can_i(api, ns, "ftjob.dev", "finetunejobs/finalizers", "update")
    job = render_job(ftj, scene.installation.settings)
    jobs = f"{BATCH}/namespaces/{ns}/jobs"
    created = api.post(jobs, job)
    assert created.status == 201, created.message
    job_url = f"{jobs}/{job['metadata']['name']}"
    managed = f"{LABEL_MANAGED_BY}=ftjob-operator"
    assert api.get(job_url).status == 200
    assert api.get(jobs, labelSelector=managed).status == 200
    assert api.watch(jobs, labelSelector=managed) == 200
    assert api.patch(job_url, {"spec": {"suspend": True}}).status == 200
    # Pods: list and watch the trainer pods; pods/log is authorized (404: there is no such pod).
    pods = f"{CORE}/namespaces/{ns}/pods"
    assert api.get(pods, labelSelector=managed).status == 200
    assert api.watch(pods, labelSelector=managed) == 200
    log = api.get(f"{pods}/demo-train-abcde/log", container="trainer", tailLines="10")
    assert log.status == 404, log.message
    # Events (core/v1, the only kind the operator posts; kopf's posting is off).
    event = event_body(ftj, Event("Normal", "JobCreated", "Created Job."), datetime.now(UTC))
    assert api.post(f"{CORE}/namespaces/{ns}/events", event).status == 201
    deleted = api.request("DELETE", job_url, {"propagationPolicy": "Background"})
    assert deleted.status == 200, deleted.message
    if not scene.installation.watched:
        # Cluster mode: kopf watches every namespace at once.
        for collection in (f"{FTJS}/finetunejobs", f"{BATCH}/jobs", f"{CORE}/pods"):
            assert api.get(collection, labelSelector=managed, limit="1").status == 200, collection
            assert api.watch(collection, labelSelector=managed) == 200, collection


# -- no more ---------------------------------------------------------------------------------------------------
def test_the_operator_account_can_do_nothing_more(scene: Scene, admin: Api) -> None:
    ns = scene.work
    # Never a Secret or a ConfigMap: credentials reach trainer pods as secretKeyRef, resolved by the kubelet.
    message = assert_forbidden(scene, "GET", f"{CORE}/namespaces/{ns}/secrets/hf-token")
    assert message == (
        f'secrets "hf-token" is forbidden: User "{scene.user}" cannot get resource "secrets" in API group "" '
        f'in the namespace "{ns}"'
    )
    assert_forbidden(scene, "GET", f"{CORE}/namespaces/{ns}/secrets")
    assert_forbidden(scene, "GET", f"{CORE}/namespaces/{ns}/configmaps")
    # No pods of its own making (the Job controller creates them), no exec, no single-pod reads.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    assert_forbidden(scene, "POST", f"{CORE}/namespaces/{ns}/pods", pod)
    assert_forbidden(scene, "GET", f"{CORE}/namespaces/{ns}/pods/p")
    assert_forbidden(scene, "POST", f"{CORE}/namespaces/{ns}/pods/p/exec")
    # FineTuneJobs are the users': never deleted, never replaced.
    ftj = finetunejob(admin, ns)
    meta = ftj["metadata"]
    assert isinstance(meta, dict)
    assert_forbidden(scene, "DELETE", f"{FTJS}/namespaces/{ns}/finetunejobs/{meta['name']}")
    assert_forbidden(scene, "PUT", f"{FTJS}/namespaces/{ns}/finetunejobs/{meta['name']}", ftj)
    # No tokens, no RBAC of its own, no events.k8s.io Events (it posts core/v1 ones).
    token = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
    assert_forbidden(scene, "POST", f"{CORE}/namespaces/{ns}/serviceaccounts/default/token", token)
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "escalate"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "User", "name": scene.user}],
    }
    assert_forbidden(
        scene, "POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", binding
    )
    assert_forbidden(
        scene,
        "POST",
        f"/apis/events.k8s.io/v1/namespaces/{ns}/events",
        {"apiVersion": "events.k8s.io/v1", "kind": "Event"},
    )
    # Never its own guardrails: not the parameters (FineTuneJobPolicy), not the policies or their bindings.
    policy = {
        "apiVersion": "ftjob.dev/v1alpha1",
        "kind": "FineTuneJobPolicy",
        "metadata": {"name": "default"},
    }
    assert_forbidden(scene, "POST", f"{FTJS}/namespaces/{ns}/finetunejobpolicies", policy)
    assert_forbidden(scene, "PATCH", f"{FTJS}/namespaces/{ns}/finetunejobpolicies/default", {"spec": {}})
    admission = "/apis/admissionregistration.k8s.io/v1"
    for kind in ("validatingadmissionpolicies", "validatingadmissionpolicybindings"):
        assert_forbidden(scene, "GET", f"{admission}/{kind}")
        assert_forbidden(scene, "DELETE", f"{admission}/{kind}/ftjob-jobs")
    # Nothing cluster-scoped: kopf's scanning of CRDs and Namespaces is off.
    assert_forbidden(scene, "GET", f"{CORE}/nodes")
    assert_forbidden(scene, "GET", f"{CORE}/namespaces")
    assert_forbidden(scene, "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")


def test_namespaced_mode_reaches_nothing_outside_the_watched_namespaces(
    installed: Installations, admin: Api, control_plane: ControlPlane
) -> None:
    installation = installed["namespaced"]
    user = username(installation.namespace, installation.operator_account)
    api = Api(
        control_plane, service_account_token(admin, installation.namespace, installation.operator_account)
    )
    outside = other_namespace(admin, installation)
    ftj = finetunejob(admin, outside)
    job = render_job(ftj, installation.settings)
    event = event_body(ftj, Event("Normal", "JobCreated", "Created Job."), datetime.now(UTC))
    for ns in (outside, installation.namespace):
        for method, url, body in [
            ("GET", f"{FTJS}/namespaces/{ns}/finetunejobs", None),
            ("POST", f"{BATCH}/namespaces/{ns}/jobs", job),
            ("GET", f"{BATCH}/namespaces/{ns}/jobs", None),
            ("GET", f"{CORE}/namespaces/{ns}/pods", None),
            ("POST", f"{CORE}/namespaces/{ns}/events", event),
        ]:
            reply = api.request(method, url, body, dry_run=body is not None)
            assert reply.status == 403, f"{method} {url}: {reply.status}"
            assert f'User "{user}" cannot' in reply.message
    # Nor across namespaces: kopf watches each listed namespace on its own.
    for collection in (f"{FTJS}/finetunejobs", f"{BATCH}/jobs", f"{CORE}/pods"):
        reply = api.get(collection)
        assert reply.status == 403
        assert reply.message.endswith("at the cluster scope"), reply.message
