"""One guarded installation of the chart on the real control plane, for the whole session: cluster mode,
guardrails on (only for namespaces labelled with this installation's own selector, so they judge nothing
else of the session), a cloud identity per team and the trainer NetworkPolicy. Namespaces: `team` (with a
FineTuneJobPolicy), `bare` (guarded, no policy). Identities: the admin, the operator's ServiceAccount and
`alice`, a tenant with the built-in `edit` role and the FineTuneJob editor Role of docs/multi-tenant.md."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import pytest

from tests.helm.rendering import JsonDict, load_chart
from tests.helm.server import Api, Installation, install, service_account_token, uninstall
from tests.support.control_plane import ControlPlane
from tests.support.kube_client import BATCH, CORE, wait_for

from .objects import finetunejob, policy

SELECTOR_LABEL: Final = "ftjob.dev/tenancy-test"
TEAM: Final = "team"
BARE: Final = "bare"
FTJS: Final = "/apis/ftjob.dev/v1alpha1"
RBAC: Final = "/apis/rbac.authorization.k8s.io/v1"
# A Job the operator would never render (no FineTuneJob labels or owner): the Jobs guardrail refuses it.
STRAY_JOB: Final[JsonDict] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "stray"},
    "spec": {
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "docker.io/library/busybox:1", "command": ["true"]}],
            }
        }
    },
}


@dataclass
class Tenancy:
    installation: Installation
    admin: Api
    operator: Api
    alice: Api
    team: str
    bare: str

    def finetunejobs(self, namespace: str) -> str:
        return f"{FTJS}/namespaces/{namespace}/finetunejobs"


def values(prefix: str) -> JsonDict:
    return {
        "guardrails": {"enabled": True, "namespaceSelector": {"matchLabels": {SELECTOR_LABEL: prefix}}},
        "trainerServiceAccount": {
            "useAsDefault": "always",
            "perNamespace": {
                TEAM: {
                    "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/ftjob-team"}
                },
                BARE: {},
            },
        },
        "trainerNetworkPolicy": {
            "enabled": True,
            "storage": [
                {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "minio-system"}
                            }
                        }
                    ],
                    "ports": [{"port": 9000, "protocol": "TCP"}],
                }
            ],
        },
    }


def tenant(admin: Api, control_plane: ControlPlane, namespace: str) -> Api:
    """`alice`: `edit` (ConfigMaps, Secrets, Pods...) and the FineTuneJob editor Role of the docs."""
    admin.post(
        f"{CORE}/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "alice"}},
    ).ok()
    admin.post(
        f"{RBAC}/namespaces/{namespace}/roles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "finetunejob-editor"},
            "rules": [
                {
                    "apiGroups": ["ftjob.dev"],
                    "resources": ["finetunejobs"],
                    "verbs": ["get", "list", "watch", "create", "delete", "patch"],
                }
            ],
        },
    ).ok()
    subject = [{"kind": "ServiceAccount", "name": "alice", "namespace": namespace}]
    for kind, role in (("ClusterRole", "edit"), ("Role", "finetunejob-editor")):
        admin.post(
            f"{RBAC}/namespaces/{namespace}/rolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": f"alice-{role}"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
                "subjects": subject,
            },
        ).ok()
    return Api(control_plane, service_account_token(admin, namespace, "alice"))


@pytest.fixture(scope="session")
def tenancy(control_plane: ControlPlane) -> Iterator[Tenancy]:
    admin = Api(control_plane)
    chart = load_chart()
    prefix = f"g{uuid.uuid4().hex[:8]}"
    installation = install(
        admin, chart, values(prefix), prefix=prefix, namespace_labels={SELECTOR_LABEL: prefix}
    )
    try:
        team, bare = f"{prefix}-{TEAM}", f"{prefix}-{BARE}"
        operator = Api(
            control_plane, service_account_token(admin, installation.namespace, installation.operator_account)
        )
        scene = Tenancy(installation, admin, operator, tenant(admin, control_plane, team), team, bare)
        # The API server loads policies, bindings and parameters through informers: wait until it refuses
        # where no FineTuneJobPolicy exists, then until it admits a good FineTuneJob where one does.
        wait_for(
            lambda: admin.post(scene.finetunejobs(bare), finetunejob(), dry_run=True).status == 422,
            timeout=30,
            what="the guardrails to be enforced",
        )
        admin.post(f"{FTJS}/namespaces/{team}/finetunejobpolicies", policy()).ok()
        wait_for(
            lambda: admin.post(scene.finetunejobs(team), finetunejob(), dry_run=True).status == 201,
            timeout=30,
            what="the FineTuneJobPolicy to be used",
        )
        # The Jobs policy is loaded on its own: seeing the FineTuneJobs policy enforced says nothing about it.
        jobs_policy = f"ValidatingAdmissionPolicy '{installation.release}-jobs'"

        def stray_job_refused() -> bool:
            reply = operator.post(f"{BATCH}/namespaces/{team}/jobs", STRAY_JOB, dry_run=True)
            return (
                reply.status == 403
                and jobs_policy in reply.message
                and "rule trainerJobIdentity" in reply.message
            )

        wait_for(stray_job_refused, timeout=30, what="the guardrail on the operator's Jobs to be enforced")
        # `edit` is an aggregated ClusterRole, filled in by the controller manager some time after a fresh
        # control plane starts, and the authorizer sees new RoleBindings through its own informers.
        configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe"}}
        wait_for(
            lambda: (
                scene.alice.post(f"{CORE}/namespaces/{team}/configmaps", configmap, dry_run=True).status
                == 201
            ),
            timeout=60,
            what="alice's `edit` role to take effect",
        )
        yield scene
    finally:
        uninstall(admin, installation)
