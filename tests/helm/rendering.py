"""Render the chart offline with Helm's Go SDK (helm-python-sdk, no helm binary) and parse what comes out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import helm_python
import yaml

ROOT: Final = Path(__file__).resolve().parents[2]
CHART_DIR: Final = ROOT / "helm" / "ftjob"
RELEASE: Final = "ftjob"
RELEASE_NAMESPACE: Final = "ftjob-system"
KUBE_VERSION: Final = "1.31"

JsonDict = dict[str, Any]

DIGEST: Final = "sha256:" + "ab" * 32

# The three configurations the issue asks for: the defaults (cluster mode), namespaced mode, and one
# that turns on everything optional.
DEFAULT: Final[JsonDict] = {}
NAMESPACED: Final[JsonDict] = {"watch": {"namespaces": ["team-a", "team-b"]}}
CUSTOM: Final[JsonDict] = {
    "image": {"repository": "registry.example.com/ml/ftjob-operator", "digest": DIGEST},
    "imagePullSecrets": [{"name": "regcred"}],
    "crds": {"install": False},
    "logLevel": "DEBUG",
    "serviceAccount": {"name": "ftjob-controller", "annotations": {"example.com/owner": "platform"}},
    "trainer": {
        "image": {
            "repository": "registry.example.com/ml/ftjob-trainer",
            "tag": "0.1.0-cu130",
            "digest": DIGEST,
        },
        "imagePullPolicy": "Always",
        "terminationGracePeriodSeconds": 300,
        "progressIntervalSeconds": 7.5,
        "imagePullGraceSeconds": 600,
    },
    "trainerServiceAccount": {
        "name": "llm-trainer",
        "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/ftjob-trainer"},
        "labels": {"team": "ml"},
        "namespaces": ["ml-team", "research"],
        "useAsDefault": "always",
    },
    "resources": {"requests": {"cpu": "200m", "memory": "384Mi"}, "limits": {"cpu": 2, "memory": "1Gi"}},
    "nodeSelector": {"node-role.kubernetes.io/control-services": "true"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "platform", "effect": "NoSchedule"},
        {
            "key": "node.kubernetes.io/unreachable",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 60,
        },
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
                        ]
                    }
                ]
            }
        }
    },
    "priorityClassName": "system-cluster-critical",
    "podAnnotations": {"example.com/scrape": "true"},
    "podLabels": {"team": "platform"},
    "securityContext": {"runAsUser": 1000680000, "runAsGroup": 1000680000},
    "health": {"port": 8081},
    "metrics": {
        "port": 9100,
        "service": {"annotations": {"example.com/metrics": "true"}},
        "serviceMonitor": {
            "enabled": True,
            "interval": "15s",
            "scrapeTimeout": "5s",
            "labels": {"release": "kube-prometheus"},
        },
    },
    "networkPolicy": {
        "enabled": True,
        "metricsFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
        "apiServer": {"ports": [6443], "cidrs": ["10.0.0.1/32", "192.168.10.0/24"]},
        "extraEgress": [
            {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 3128}]}
        ],
    },
}
# Multi-tenancy (docs/multi-tenant.md): guardrails, a cloud identity per team, trainer egress. Its policies
# guard only namespaces with this label, which no namespace of tests/helm carries: installed for the whole
# session, they must not judge other tests' objects (tests/tenancy installs its own, on its namespaces).
GUARDED_SELECTOR: Final = {"matchLabels": {"ftjob.dev/guardrails": "helm-guarded-configuration"}}
GUARDED: Final[JsonDict] = {
    "watch": {"namespaces": ["team-a"]},
    "guardrails": {
        "enabled": True,
        "namespaceSelector": GUARDED_SELECTOR,
        "validationActions": ["Warn", "Audit"],
    },
    "trainerServiceAccount": {
        "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/ftjob-shared"},
        "perNamespace": {
            "team-a": {
                "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/ftjob-team-a"}
            },
            "team-b": {
                "annotations": {"iam.gke.io/gcp-service-account": "team-b@example.iam.gserviceaccount.com"},
                "labels": {"team": "b"},
            },
        },
    },
    "trainerNetworkPolicy": {
        "enabled": True,
        "storage": [
            {
                "to": [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "minio-system"}}}
                ],
                "ports": [{"port": 9000, "protocol": "TCP"}],
            }
        ],
        "publicHttps": {"enabled": True},
    },
}
CONFIGURATIONS: Final[dict[str, JsonDict]] = {
    "default": DEFAULT,
    "namespaced": NAMESPACED,
    "custom": CUSTOM,
    "guarded": GUARDED,
}


def load_chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART_DIR)


def render_templates(
    chart: helm_python.Chart, values: JsonDict, *, release: str = RELEASE, namespace: str = RELEASE_NAMESPACE
) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would produce it (NOTES.txt included)."""
    return chart.render(values, name=release, namespace=namespace, is_install=True)


def render(
    chart: helm_python.Chart, values: JsonDict, *, release: str = RELEASE, namespace: str = RELEASE_NAMESPACE
) -> list[JsonDict]:
    """Every Kubernetes object the chart renders with `values` (as release `release` installed into
    `namespace`), parsed."""
    objects: list[JsonDict] = []
    templates = render_templates(chart, values, release=release, namespace=namespace)
    for path, text in sorted(templates.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            assert isinstance(doc, dict), f"{path}: not an object: {doc!r}"
            objects.append(doc)
    return objects


def of_kind(objects: list[JsonDict], kind: str) -> list[JsonDict]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[JsonDict], kind: str) -> JsonDict:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def pod_templates(objects: list[JsonDict]) -> Iterator[tuple[str, JsonDict]]:
    """(object, pod template: metadata and spec) of everything that runs pods."""
    for obj in objects:
        kind = obj["kind"]
        where = f"{kind}/{obj['metadata']['name']}"
        if kind == "Pod":
            yield where, {"metadata": obj["metadata"], "spec": obj["spec"]}
        elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            yield where, obj["spec"]["template"]
        elif kind == "CronJob":
            yield where, obj["spec"]["jobTemplate"]["spec"]["template"]
