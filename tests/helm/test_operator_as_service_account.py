"""The operator process, started with the args the chart renders and a token of the chart's ServiceAccount,
does its work on the real API server without one denial: it watches FineTuneJobs, Jobs and pods, creates the
trainer Job (whose pod kube-controller-manager's Job controller then creates through Pod Security
`restricted`), writes the status and posts Events; in cluster mode and in namespaced mode."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ftjob_operator.names import COMPONENT, job_name
from tests.support.control_plane import ControlPlane
from tests.support.kube_client import BATCH, CORE, JsonDict, wait_for
from tests.support.operator_process import OperatorProcess

from .conftest import Installations
from .server import RESTRICTED, Api, create_namespace, service_account_token, username

FTJS = "/apis/ftjob.dev/v1alpha1"
# kopf retries (and logs at ERROR) a watch the API server answers with 429 while its watch cache for a
# resource is still initialising: the server's start-up, not a permission.
WATCH_CACHE_WARMING = r"Request attempt #\d+/\d+ failed; will retry: .*storage is \(re\)initializing"


def about_other_namespaces(namespace: str) -> str:
    """Log lines about an object of another namespace (`[ns/name]` from kopf, `ns/name:` from the operator): a
    cluster-mode operator also meets what other tests of the session leave behind, e.g. in a namespace being
    deleted. A denial would still show in the RBAC check, which reads every line."""
    return rf"(\[|\] )(?!{re.escape(namespace)}/)[a-z0-9][-a-z0-9]*/[-a-z0-9.]+(\]|:)"


@pytest.fixture
def restricted_namespace(admin: Api) -> Iterator[str]:
    name = f"h{uuid.uuid4().hex[:8]}-work"
    create_namespace(admin, name, RESTRICTED)
    yield name
    admin.delete(f"{CORE}/namespaces/{name}")


@pytest.mark.parametrize("mode", ["cluster", "namespaced"])
def test_the_operator_does_its_work_as_the_charts_service_account(
    mode: str,
    installed: Installations,
    admin: Api,
    control_plane: ControlPlane,
    restricted_namespace: str,
    tmp_path: Path,
) -> None:
    installation = installed["default" if mode == "cluster" else "namespaced"]
    namespace = restricted_namespace if mode == "cluster" else installation.watched[-1]
    token = service_account_token(admin, installation.namespace, installation.operator_account)
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "kubeconfig", token=token)
    process = OperatorProcess(kubeconfig, tmp_path / "operator.log", installation.operator_args())
    name = f"demo-{uuid.uuid4().hex[:6]}"
    ftj = {
        "apiVersion": "ftjob.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "baseModel": {"uri": "s3://models/smollm2/"},
            "data": {"trainUri": "s3://data/train.jsonl"},
            "output": {"uri": "s3://results/demo/"},
        },
    }
    process.start()
    try:
        admin.post(f"{FTJS}/namespaces/{namespace}/finetunejobs", ftj).ok()

        def job() -> JsonDict | None:
            reply = admin.get(f"{BATCH}/namespaces/{namespace}/jobs/{job_name(name)}")
            return reply.body if reply.status == 200 else None

        created = wait_for(job, timeout=30, what="the trainer Job")
        assert created["metadata"]["ownerReferences"][0]["name"] == name

        def status() -> JsonDict | None:
            doc = admin.get(f"{FTJS}/namespaces/{namespace}/finetunejobs/{name}").ok()
            st: JsonDict = doc.get("status") or {}
            return st if st.get("conditions") else None

        assert wait_for(status, timeout=30, what="the status")["observedGeneration"] == 1

        def events() -> list[JsonDict]:
            items = admin.get(f"{CORE}/namespaces/{namespace}/events").ok()["items"]
            return [
                e
                for e in items
                if e.get("reportingComponent") == COMPONENT and e["involvedObject"]["name"] == name
            ]

        assert wait_for(events, timeout=30, what="the operator's Events")

        def pods() -> list[JsonDict]:
            selector = f"batch.kubernetes.io/job-name={job_name(name)}"
            return list(
                admin.get(f"{CORE}/namespaces/{namespace}/pods", labelSelector=selector).ok()["items"]
            )

        # The Job controller created the trainer pod: Pod Security `restricted` admitted it.
        (pod,) = wait_for(pods, timeout=30, what="the trainer pod")
        expected_account = installation.settings.trainer_service_account or "default"
        assert pod["spec"]["serviceAccountName"] == expected_account
    finally:
        process.stop()
    log = process.log_text()
    assert "ftjob-operator watching" in log
    denial = re.compile(
        rf'User "{re.escape(username(installation.namespace, installation.operator_account))}" cannot'
    )
    assert not denial.search(log), [line for line in log.splitlines() if denial.search(line)]
    assert "Forbidden" not in "\n".join(line for line in log.splitlines() if namespace in line)
    assert process.problems([WATCH_CACHE_WARMING, about_other_namespaces(namespace)]) == []
