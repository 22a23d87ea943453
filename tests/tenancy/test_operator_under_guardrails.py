"""The operator, run as the chart's ServiceAccount in cluster mode with the guardrails on, does its work
in a guarded namespace without a denial: its trainer Job passes the Job guardrail, kube-controller-manager
creates the trainer pod, which runs as the team's own ServiceAccount (the team's cloud role, not a shared
one) and is selected by the trainer NetworkPolicy (the API server evaluates the policy's selector)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from ftjob_operator.names import job_name
from tests.helm.rendering import JsonDict, of_kind
from tests.helm.server import service_account_token, username
from tests.helm.test_operator_as_service_account import WATCH_CACHE_WARMING, about_other_namespaces
from tests.support.control_plane import ControlPlane
from tests.support.kube_client import BATCH, CORE, wait_for
from tests.support.operator_process import OperatorProcess

from .conftest import Tenancy
from .objects import finetunejob


def test_the_operator_works_under_the_guardrails(
    tenancy: Tenancy, control_plane: ControlPlane, tmp_path: Path
) -> None:
    installation, admin, ns = tenancy.installation, tenancy.admin, tenancy.team
    user = username(installation.namespace, installation.operator_account)
    token = service_account_token(admin, installation.namespace, installation.operator_account)
    token_config = control_plane.write_kubeconfig(tmp_path / "kubeconfig", token=token)
    process = OperatorProcess(token_config, tmp_path / "operator.log", installation.operator_args())
    name = f"run-{uuid.uuid4().hex[:6]}"
    process.start()
    try:
        tenancy.alice.post(tenancy.finetunejobs(ns), finetunejob({"suspend": False}, name=name)).ok()

        def job() -> JsonDict | None:
            reply = admin.get(f"{BATCH}/namespaces/{ns}/jobs/{job_name(name)}")
            return reply.body if reply.status == 200 else None

        wait_for(job, timeout=30, what="the trainer Job")
        (policy,) = [
            o
            for o in of_kind(installation.objects, "NetworkPolicy")
            if o["metadata"]["namespace"] == ns and o["metadata"]["name"].endswith("-trainer")
        ]
        selector = ",".join(f"{k}={v}" for k, v in policy["spec"]["podSelector"]["matchLabels"].items())

        def pods() -> list[JsonDict]:
            items = admin.get(f"{CORE}/namespaces/{ns}/pods", labelSelector=selector).ok()["items"]
            return [p for p in items if p["metadata"]["labels"].get("ftjob.dev/finetunejob") == name]

        (pod,) = wait_for(pods, timeout=30, what="the trainer pod, selected by the trainer NetworkPolicy")
    finally:
        process.stop()
    account = pod["spec"]["serviceAccountName"]
    annotations = admin.get(f"{CORE}/namespaces/{ns}/serviceaccounts/{account}").ok()["metadata"][
        "annotations"
    ]
    assert annotations == {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/ftjob-team"}
    log = process.log_text()
    denial = re.compile(rf'User "{re.escape(user)}" cannot|denied request')
    assert not denial.search(log), [line for line in log.splitlines() if denial.search(line)]
    assert process.problems([WATCH_CACHE_WARMING, about_other_namespaces(ns)]) == []
