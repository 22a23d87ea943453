"""The chart renders, lints and validates with the default, a namespaced and a non-default configuration;
its values schema refuses unknown keys and wrong types; the operator accepts the flags the chart passes."""

from __future__ import annotations

import tomllib
from typing import Any

import helm_python
import pytest
import yaml

from ftjob_operator.settings import OperatorSettings, settings_from

from .rendering import (
    CHART_DIR,
    CONFIGURATIONS,
    CUSTOM,
    DIGEST,
    KUBE_VERSION,
    NAMESPACED,
    RELEASE_NAMESPACE,
    JsonDict,
    of_kind,
    one,
    render,
    render_templates,
)

# Kinds kubernetes-validate has no schema for (CRDs of other projects). Each is checked by hand below, and
# test_unknown_kinds_are_really_unknown fails if the library learns one, so the skip cannot hide anything.
CLUSTER_SCOPED_KINDS = {
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


def container(deployment: JsonDict) -> JsonDict:
    containers: list[JsonDict] = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]


def operator_settings(deployment: JsonDict) -> OperatorSettings:
    """The settings the operator would run with: its own parser applied to the rendered args and env."""
    c = container(deployment)
    assert "command" not in c, "the image's ENTRYPOINT (ftjob-operator) must stay in charge"
    env = {item["name"]: item["value"] for item in c.get("env") or []}
    return settings_from(c["args"], env)


def named_port(c: JsonDict, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in c.get("ports") or []}
    assert name in ports, f"no container port named {name}: {ports}"
    port: int = ports[name]
    return port


# --- rendering and lint --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_values_pass_the_schema_and_helm_lint(name: str, chart: helm_python.Chart) -> None:
    values = CONFIGURATIONS[name]
    chart.validate_schema(values)
    report = helm_python.lint(
        CHART_DIR, values, strict=True, namespace=RELEASE_NAMESPACE, kube_version=f"v{KUBE_VERSION}.0"
    )
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # Severity 1 is informational ("icon is recommended"); warnings (2) and errors (3) fail.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_namespaced_objects_name_their_namespace(name: str, rendered: dict[str, list[JsonDict]]) -> None:
    """`helm template | kubectl apply` and GitOps tools must not depend on a -n flag."""
    for obj in rendered[name]:
        meta = obj["metadata"]
        if obj["kind"] in CLUSTER_SCOPED_KINDS:
            assert "namespace" not in meta, f"{obj['kind']}/{meta['name']}"
        else:
            assert meta.get("namespace"), f"{obj['kind']}/{meta['name']} has no namespace"
        assert meta["labels"]["app.kubernetes.io/part-of"] == "ftjob"


def test_notes_render(chart: helm_python.Chart) -> None:
    notes = render_templates(chart, NAMESPACED)["ftjob/templates/NOTES.txt"]
    assert "team-a, team-b (namespaced mode)" in notes
    assert "ServiceAccount ftjob-trainer" in notes


# --- the operator Deployment -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_one_replica_recreated_never_rolled(name: str, rendered: dict[str, list[JsonDict]]) -> None:
    deployment = one(rendered[name], "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_probe_and_service_ports_are_the_ones_the_operator_listens_on(
    name: str, rendered: dict[str, list[JsonDict]]
) -> None:
    deployment = one(rendered[name], "Deployment")
    settings = operator_settings(deployment)
    c = container(deployment)
    probe = c["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert named_port(c, probe["port"]) == settings.liveness_port
    service = one(rendered[name], "Service")
    (port,) = service["spec"]["ports"]
    assert named_port(c, port["targetPort"]) == settings.metrics_port
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_default_configuration_runs_the_operator_cluster_wide(
    chart: helm_python.Chart, rendered: dict[str, list[JsonDict]]
) -> None:
    deployment = one(rendered["default"], "Deployment")
    app_version = chart.metadata["appVersion"]
    assert container(deployment)["image"] == f"ghcr.io/ftjob/operator:{app_version}"
    settings = operator_settings(deployment)
    assert settings.all_namespaces
    assert settings.trainer_image == f"ghcr.io/ftjob/trainer:{app_version}"
    # In cluster mode the trainer ServiceAccount would be missing in most namespaces: no default.
    assert settings.trainer_service_account is None
    assert settings.log_level == "INFO"
    assert (settings.liveness_port, settings.metrics_port) == (8080, 9090)
    assert of_kind(rendered["default"], "ServiceMonitor") == []
    assert of_kind(rendered["default"], "NetworkPolicy") == []


def test_namespaced_configuration_watches_the_listed_namespaces(rendered: dict[str, list[JsonDict]]) -> None:
    settings = operator_settings(one(rendered["namespaced"], "Deployment"))
    assert settings.namespaces == ("team-a", "team-b")
    assert settings.trainer_service_account == "ftjob-trainer"
    trainer_sas = [
        o
        for o in of_kind(rendered["namespaced"], "ServiceAccount")
        if o["metadata"]["name"] == "ftjob-trainer"
    ]
    assert sorted(sa["metadata"]["namespace"] for sa in trainer_sas) == ["team-a", "team-b"]


def test_custom_configuration_reaches_the_operator(rendered: dict[str, list[JsonDict]]) -> None:
    objects = rendered["custom"]
    deployment = one(objects, "Deployment")
    c = container(deployment)
    assert c["image"] == f"registry.example.com/ml/ftjob-operator@{DIGEST}"
    settings = operator_settings(deployment)
    assert settings.all_namespaces
    # A digest wins over the tag, for the trainer too.
    assert settings.trainer_image == f"registry.example.com/ml/ftjob-trainer@{DIGEST}"
    assert settings.trainer_service_account == "llm-trainer"
    assert settings.image_pull_policy == "Always"
    assert settings.termination_grace_period_seconds == 300
    assert settings.progress_interval_seconds == 7.5
    assert settings.image_pull_grace_seconds == 600
    assert settings.log_level == "DEBUG"
    assert (settings.liveness_port, settings.metrics_port) == (8081, 9100)

    pod = deployment["spec"]["template"]["spec"]
    assert pod["tolerations"] == CUSTOM["tolerations"]
    assert pod["nodeSelector"] == CUSTOM["nodeSelector"]
    assert pod["affinity"] == CUSTOM["affinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["serviceAccountName"] == "ftjob-controller"
    # A large (OpenShift-style) uid stays an integer: Helm reads numbers as floats.
    assert pod["securityContext"]["runAsUser"] == 1000680000
    assert c["resources"] == CUSTOM["resources"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "platform"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert of_kind(objects, "CustomResourceDefinition") == []


def test_metrics_can_be_turned_off(chart: helm_python.Chart) -> None:
    objects = render(chart, {"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}})
    settings = operator_settings(one(objects, "Deployment"))
    assert settings.metrics_port == 0
    assert of_kind(objects, "Service") == []
    assert of_kind(objects, "ServiceMonitor") == []


def test_openshift_can_choose_the_uid(chart: helm_python.Chart) -> None:
    objects = render(chart, {"securityContext": {"runAsUser": None, "runAsGroup": None}})
    pod_sc = one(objects, "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert "runAsUser" not in pod_sc
    assert "runAsGroup" not in pod_sc
    assert pod_sc["runAsNonRoot"] is True


# --- CRD, ServiceMonitor, NetworkPolicy ----------------------------------------------------------------------
def test_crd_is_templated_and_kept_on_uninstall(rendered: dict[str, list[JsonDict]]) -> None:
    crd = one(rendered["default"], "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "finetunejobs.ftjob.dev"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    committed = yaml.safe_load((CHART_DIR.parents[1] / "crds" / "finetunejobs.ftjob.dev.yaml").read_text())
    assert crd["spec"] == committed["spec"]
    assert not (CHART_DIR / "crds").exists(), "Helm never upgrades crds/: the CRD is a template instead"


def test_service_monitor_scrapes_the_metrics_service(rendered: dict[str, list[JsonDict]]) -> None:
    objects = rendered["custom"]
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "5s"}
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]


def test_network_policy_admits_probes_and_scrapes_and_reaches_only_the_api_server(
    rendered: dict[str, list[JsonDict]],
) -> None:
    objects = rendered["custom"]
    policy = one(objects, "NetworkPolicy")
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    health, metrics = spec["ingress"]
    assert health == {"ports": [{"port": "health", "protocol": "TCP"}]}
    assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert metrics["from"] == CUSTOM["networkPolicy"]["metricsFrom"]
    api, extra = spec["egress"]
    assert api["ports"] == [{"port": 6443, "protocol": "TCP"}]
    assert api["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}, {"ipBlock": {"cidr": "192.168.10.0/24"}}]
    assert extra == CUSTOM["networkPolicy"]["extraEgress"][0]


def test_network_policy_defaults_allow_any_api_server_address(chart: helm_python.Chart) -> None:
    policy = one(render(chart, {"networkPolicy": {"enabled": True}}), "NetworkPolicy")
    (api,) = policy["spec"]["egress"]
    assert api == {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}
    assert all("from" not in rule for rule in policy["spec"]["ingress"])


# --- the values schema refuses what it does not know --------------------------------------------------------
BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown top-level key", {"replicaCount": 2}, "replicaCount"),
    ("unknown nested key", {"image": {"repo": "x"}}, "repo"),
    ("unknown key in trainer", {"trainer": {"gpus": 1}}, "gpus"),
    ("namespaces as a string", {"watch": {"namespaces": "team-a"}}, "/watch/namespaces"),
    ("namespace not a DNS label", {"watch": {"namespaces": ["Team_A"]}}, "/watch/namespaces/0"),
    ("duplicate namespaces", {"watch": {"namespaces": ["a", "a"]}}, "/watch/namespaces"),
    ("log level", {"logLevel": "VERBOSE"}, "/logLevel"),
    ("port as a string", {"metrics": {"port": "9090"}}, "/metrics/port"),
    ("port out of range", {"health": {"port": 70000}}, "/health/port"),
    ("boolean as a string", {"crds": {"install": "yes"}}, "/crds/install"),
    ("digest", {"image": {"digest": "latest"}}, "/image/digest"),
    ("tag with a colon", {"trainer": {"image": {"tag": "a:b"}}}, "/trainer/image/tag"),
    ("toleration operator", {"tolerations": [{"key": "a", "operator": "Maybe"}]}, "/tolerations/0/operator"),
    ("tolerations as a map", {"tolerations": {"key": "a"}}, "/tolerations"),
    ("node selector value", {"nodeSelector": {"gpu": True}}, "/nodeSelector/gpu"),
    ("quantity", {"resources": {"requests": {"memory": "lots"}}}, "/resources/requests/memory"),
    ("network policy flag", {"networkPolicy": {"enabled": "true"}}, "/networkPolicy/enabled"),
    ("cidr", {"networkPolicy": {"apiServer": {"cidrs": ["10.0.0.1"]}}}, "/networkPolicy/apiServer/cidrs/0"),
    (
        "default trainer account",
        {"trainerServiceAccount": {"useAsDefault": True}},
        "/trainerServiceAccount/useAsDefault",
    ),
    ("root uid", {"securityContext": {"runAsUser": 0}}, "/securityContext/runAsUser"),
    (
        "guardrails without parameters",
        {"guardrails": {"parameterNotFoundAction": "Ignore"}},
        "/guardrails/parameterNotFoundAction",
    ),
    ("guardrail action", {"guardrails": {"validationActions": ["Block"]}}, "/guardrails/validationActions/0"),
    (
        "per-namespace identity of a bad namespace",
        {"trainerServiceAccount": {"perNamespace": {"Team_A": {}}}},
        "invalid propertyName 'Team_A'",
    ),
    (
        "per-namespace unknown key",
        {"trainerServiceAccount": {"perNamespace": {"team-a": {"role": "x"}}}},
        "role",
    ),
    ("trainer egress cidr", {"trainerNetworkPolicy": {"publicHttps": {"except": ["169.254"]}}}, "except/0"),
    (
        "scrape interval",
        {"metrics": {"serviceMonitor": {"interval": "often"}}},
        "/metrics/serviceMonitor/interval",
    ),
    (
        "grace period",
        {"trainer": {"terminationGracePeriodSeconds": -1}},
        "/trainer/terminationGracePeriodSeconds",
    ),
]


@pytest.mark.parametrize(
    ("values", "names"), [(v, n) for _, v, n in BAD_VALUES], ids=[i for i, _, _ in BAD_VALUES]
)
def test_schema_rejects_unknown_and_wrong_typed_values(
    values: dict[str, Any], names: str, chart: helm_python.Chart
) -> None:
    with pytest.raises(helm_python.HelmValuesError) as schema_error:
        chart.validate_schema(values)
    assert names in str(schema_error.value)
    # `helm install/upgrade/template` refuse them the same way.
    with pytest.raises(helm_python.HelmValuesError):
        render_templates(chart, values)
    report = helm_python.lint(CHART_DIR, values, namespace=RELEASE_NAMESPACE)
    assert any(m["severity"] == 3 for m in report["messages"])


def test_equal_health_and_metrics_ports_are_refused(chart: helm_python.Chart) -> None:
    with pytest.raises(helm_python.HelmRenderError, match="must differ"):
        render_templates(chart, {"metrics": {"port": 8080}})


def test_an_existing_operator_account_must_be_named(chart: helm_python.Chart) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=r"serviceAccount\.name is required"):
        render_templates(chart, {"serviceAccount": {"create": False}})
    objects = render(chart, {"serviceAccount": {"create": False, "name": "existing"}})
    assert [sa["metadata"]["name"] for sa in of_kind(objects, "ServiceAccount")] == []
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing"
    assert one(objects, "ClusterRoleBinding")["subjects"][0]["name"] == "existing"


def test_chart_app_version_is_the_package_version(chart: helm_python.Chart) -> None:
    """Image tags default to appVersion: it must name the code this repository builds."""
    project = tomllib.loads((CHART_DIR.parents[1] / "pyproject.toml").read_text())["project"]
    assert chart.metadata["appVersion"] == project["version"]
    assert chart.metadata["kubeVersion"] == f">={KUBE_VERSION}.0-0"
