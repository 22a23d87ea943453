"""Every pod the chart runs meets Pod Security Standard `restricted` plus the project's hardening; so do the
trainer pods the operator renders with the chart's defaults. The checker itself is tested on bad pods."""

from __future__ import annotations

import copy

import helm_python
import pytest
import yaml

from ftjob_operator.render import render_job
from ftjob_operator.settings import OperatorSettings

from .pss import hardening_violations, restricted_violations
from .rendering import CONFIGURATIONS, ROOT, JsonDict, load_chart, pod_templates, render

GOOD_POD: JsonDict = {
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [
        {
            "name": "app",
            "image": "example/app:1",
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "16Mi"}},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
        }
    ],
    "volumes": [{"name": "tmp", "emptyDir": {}}],
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[JsonDict]]:
    chart: helm_python.Chart = load_chart()
    return {name: render(chart, values) for name, values in CONFIGURATIONS.items()}


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_every_chart_pod_is_restricted_and_hardened(name: str, rendered: dict[str, list[JsonDict]]) -> None:
    pods = list(pod_templates(rendered[name]))
    assert [where for where, _ in pods] == ["Deployment/ftjob"]
    for where, pod in pods:
        assert restricted_violations(pod) == [], where
        assert hardening_violations(pod) == [], where
        assert not pod.get("hostNetwork")
        assert all(set(v) - {"name"} == {"emptyDir"} for v in pod.get("volumes") or []), "scratch only"


def test_trainer_pods_rendered_by_the_operator_are_restricted() -> None:
    """The chart's default trainer ServiceAccount and image reach pods that are restricted too (batch pods: no
    liveness probe; the Job's activeDeadlineSeconds and the operator's checks stand in for it)."""
    # The example that sets every section: GPUs, tolerations, a node selector, Secrets for S3 and the hub.
    ftj: JsonDict = yaml.safe_load((ROOT / "examples" / "qlora-full.yaml").read_text())
    ftj["metadata"]["uid"] = "8d4c2a52-0000-4000-8000-000000000001"
    del ftj["spec"]["serviceAccountName"]
    settings = OperatorSettings(
        trainer_image="ghcr.io/ftjob/trainer:0.1.0", trainer_service_account="ftjob-trainer"
    )
    pod = render_job(ftj, settings)["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert hardening_violations(pod, need_liveness_probe=False) == []
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "ftjob-trainer"


def test_a_compliant_pod_passes() -> None:
    assert restricted_violations(GOOD_POD) == []
    assert hardening_violations(GOOD_POD) == []


def _bad(change: str) -> JsonDict:
    pod = copy.deepcopy(GOOD_POD)
    c = pod["containers"][0]
    sc = c["securityContext"]
    if change == "privileged":
        sc["privileged"] = True
    elif change == "hostNetwork":
        pod["hostNetwork"] = True
    elif change == "hostPath":
        pod["volumes"].append({"name": "root", "hostPath": {"path": "/"}})
    elif change == "hostPort":
        c["ports"] = [{"containerPort": 80, "hostPort": 80}]
    elif change == "escalation":
        del sc["allowPrivilegeEscalation"]
    elif change == "root":
        pod["securityContext"]["runAsUser"] = 0
    elif change == "nonroot-unset":
        del pod["securityContext"]["runAsNonRoot"]
    elif change == "nonroot-overridden":
        sc["runAsNonRoot"] = False
    elif change == "seccomp-unset":
        del pod["securityContext"]["seccompProfile"]
    elif change == "seccomp-unconfined":
        sc["seccompProfile"] = {"type": "Unconfined"}
    elif change == "no-drop":
        sc["capabilities"] = {}
    elif change == "add-cap":
        sc["capabilities"]["add"] = ["SYS_ADMIN"]
    elif change == "sysctl":
        pod["securityContext"]["sysctls"] = [{"name": "kernel.msgmax", "value": "1"}]
    elif change == "init-escalation":
        pod["initContainers"] = [{"name": "init", "securityContext": {"capabilities": {"drop": ["ALL"]}}}]
    return pod


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("privileged", "containers[app]: privileged"),
        ("hostNetwork", "hostNetwork is true"),
        ("hostPath", "volume root has type ['hostPath']"),
        ("hostPort", "containers[app]: hostPort 80"),
        ("escalation", "containers[app]: allowPrivilegeEscalation is not false"),
        ("root", "securityContext.runAsUser is 0"),
        ("nonroot-unset", "containers[app]: runAsNonRoot is not true (on the pod or the container)"),
        ("nonroot-overridden", "containers[app]: runAsNonRoot is not true (on the pod or the container)"),
        ("seccomp-unset", "containers[app]: seccompProfile is not RuntimeDefault or Localhost"),
        ("seccomp-unconfined", "containers[app]: seccompProfile is not RuntimeDefault or Localhost"),
        ("no-drop", "containers[app]: capabilities.drop does not include ALL"),
        ("add-cap", "containers[app]: adds capabilities ['SYS_ADMIN']"),
        ("sysctl", "unsafe sysctl kernel.msgmax"),
        ("init-escalation", "initContainers[init]: allowPrivilegeEscalation is not false"),
    ],
)
def test_the_checker_catches_each_restricted_violation(change: str, expected: str) -> None:
    assert expected in restricted_violations(_bad(change))


def test_the_checker_catches_missing_hardening() -> None:
    pod = copy.deepcopy(GOOD_POD)
    c = pod["containers"][0]
    del c["securityContext"]["readOnlyRootFilesystem"]
    del c["resources"]["limits"]
    del c["livenessProbe"]
    assert hardening_violations(pod) == [
        "containers[app]: readOnlyRootFilesystem is not true",
        "containers[app]: no resources.limits.memory",
        "containers[app]: no livenessProbe",
    ]
