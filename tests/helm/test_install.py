"""The chart on the real API server: every object of the default (cluster mode), namespaced and custom
configuration is accepted by server-side apply into namespaces that enforce Pod Security `restricted`, and the
chart's CRD is accepted and is the one the session serves."""

from __future__ import annotations

import pytest

from tests.support.kube_client import CORE, wait_for

from .conftest import Installations
from .rendering import CONFIGURATIONS, of_kind, one
from .server import RESTRICTED, Api

CRD_URL = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/finetunejobs.ftjob.dev"


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_every_object_is_accepted_by_the_api_server(name: str, installed: Installations, admin: Api) -> None:
    installation = installed[name]
    # The ServiceMonitor is the Prometheus Operator's kind, not served here (test_chart.py checks it by hand).
    assert [o["kind"] for o in installation.unserved] == (["ServiceMonitor"] if name == "custom" else [])
    applied = len(installation.objects) - len(installation.unserved)
    assert len(installation.replies) == applied >= 5
    for url, reply in installation.replies.items():
        # Pod Security warns on workloads whose pods it would refuse: not one warning.
        assert reply.warnings == (), f"{url}: {reply.warnings}"
        if reply.body.get("kind") != "CustomResourceDefinition":
            assert admin.get(url).status == 200, url
    for namespace in {o["metadata"].get("namespace") for o in installation.objects} - {None}:
        labels = admin.get(f"{CORE}/namespaces/{namespace}").ok()["metadata"]["labels"]
        assert RESTRICTED.items() <= labels.items()


def test_namespaced_mode_creates_nothing_cluster_scoped_but_the_crd(installed: Installations) -> None:
    """Scope as the server's discovery says (install() checks every object's namespace against it)."""
    installation = installed["namespaced"]
    cluster_scoped = [url for url in installation.replies if "/namespaces/" not in url]
    assert cluster_scoped == [CRD_URL]
    assert sorted(r["metadata"]["namespace"] for r in of_kind(installation.objects, "Role")) == sorted(
        installation.watched
    )


def test_the_chart_crd_is_accepted_and_is_the_served_one(installed: Installations, admin: Api) -> None:
    """Its server-side apply (forced, dry-run) is accepted, and after the server's defaulting its spec is the
    spec of the CRD the session serves (generated from the API model by `ftjob generate`)."""
    installation = installed["default"]
    crd = one(installation.objects, "CustomResourceDefinition")
    dry_run = installation.replies[CRD_URL]
    assert dry_run.status == 200, dry_run.message
    served = admin.get(CRD_URL).ok()
    assert dry_run.body["spec"] == served["spec"]
    assert dry_run.body["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["name"] == served["metadata"]["name"]


def test_the_deployment_controller_creates_the_operator_pod(installed: Installations, admin: Api) -> None:
    """kube-controller-manager's ReplicaSet controller creates the pod through Pod Security's enforce mode and
    the ServiceAccount admission plugin (which mounts the operator's token, and only the operator's)."""
    installation = installed["default"]
    selector = ",".join(
        f"{k}={v}" for k, v in installation.deployment["spec"]["selector"]["matchLabels"].items()
    )
    pods_url = f"{CORE}/namespaces/{installation.namespace}/pods"

    def pods() -> list[dict[str, object]]:
        return list(admin.get(pods_url, labelSelector=selector).ok()["items"])

    (pod,) = wait_for(pods, timeout=30, what="the operator pod")
    spec = pod["spec"]
    assert isinstance(spec, dict)
    assert spec["serviceAccountName"] == installation.operator_account
    assert any(v["name"].startswith("kube-api-access-") for v in spec["volumes"]), spec["volumes"]
