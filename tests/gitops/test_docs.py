"""The day-2 docs quote things that live elsewhere: the health check, kopf's annotation keys, metric names,
the RBAC rules, chart values. Each quote is checked against its source."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final, cast

import yaml
from kopf import AnnotationsDiffBaseStorage, AnnotationsProgressStorage
from prometheus_client import generate_latest

from ftjob_operator.handlers import build_registry, kopf_settings
from ftjob_operator.kube import Kube
from ftjob_operator.metrics import Metrics
from ftjob_operator.reconcile import Reconciler
from ftjob_operator.settings import OperatorSettings
from tests.helm.permissions import EXPECTED

from .argocd import HEALTH_LUA, ROOT

DOCS: Final = ROOT / "docs"


def yaml_blocks(path: Path) -> list[Any]:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S)]


def test_gitops_doc_embeds_the_health_check_verbatim() -> None:
    configmaps = [
        b for b in yaml_blocks(DOCS / "gitops.md") if isinstance(b, dict) and b.get("kind") == "ConfigMap"
    ]
    (argocd_cm,) = configmaps
    assert argocd_cm["metadata"]["name"] == "argocd-cm"
    assert argocd_cm["data"]["resource.customizations.health.ftjob.dev_FineTuneJob"] == HEALTH_LUA.read_text()


def test_gitops_doc_names_every_annotation_kopf_writes() -> None:
    settings = OperatorSettings()
    kopf = kopf_settings(settings)
    registry = build_registry(Reconciler(Kube(cast(Any, None)), settings), settings)
    progress = kopf.persistence.progress_storage
    diffbase = kopf.persistence.diffbase_storage
    assert isinstance(progress, AnnotationsProgressStorage)
    assert isinstance(diffbase, AnnotationsDiffBaseStorage)
    keys = set(diffbase.make_keys("last-handled-configuration"))
    keys |= set(progress.make_keys(progress.touch_key))
    for handler in registry._changing.get_all_handlers():
        keys |= set(progress.make_keys(handler.id))
    text = (DOCS / "gitops.md").read_text()
    for key in sorted(keys):
        assert key.startswith("ftjob.dev/"), key
        assert f"`{key}`" in text, f"docs/gitops.md does not list {key}"
        pointer = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
        assert pointer in text, f"docs/gitops.md has no ignoreDifferences pointer for {key}"


def test_metrics_doc_lists_every_metric_and_label() -> None:
    exposition = generate_latest(Metrics().registry).decode()
    families = re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M)
    assert len(families) >= 5
    table = re.findall(r"^\| `([a-z_]+)` \| (\w+) \| `(\w+)` \|", (DOCS / "metrics.md").read_text(), re.M)
    rows = {name: (kind, label) for name, kind, label in table}
    assert sorted(rows) == sorted(name for name, _ in families)
    for name, kind in families:
        assert rows[name][0] == kind, name
        sample = re.search(rf"^{name}(?:_bucket|_count|_sum|_total)?\{{([^}}]*)\}}", exposition, re.M)
        if sample is not None:
            labels = {
                part.split("=")[0] for part in sample[1].split(",") if part and not part.startswith("le=")
            }
            assert labels == {rows[name][1]}, name


def test_multi_tenant_doc_shows_the_rbac_the_chart_grants() -> None:
    text = (DOCS / "multi-tenant.md").read_text()
    documented: set[tuple[str, str, str]] = set()
    for group, resource, verbs in re.findall(r"^\| `([^`]*)` \| `([^`]+)` \| ([a-z, ]+) \|", text, re.M):
        for verb in verbs.split(","):
            documented.add(("" if group == '""' else group, resource, verb.strip()))
    assert documented == EXPECTED


def test_install_doc_values_exist() -> None:
    values = yaml.safe_load((ROOT / "helm" / "ftjob" / "values.yaml").read_text())
    text = (DOCS / "install.md").read_text()
    first_cells = re.findall(r"^\| (`[^|]+`) \|", text, re.M)
    assert first_cells
    for cell in first_cells:
        for key in re.findall(r"`([a-zA-Z.*]+)`", cell):
            node: Any = values
            for part in key.removesuffix(".*").split("."):
                assert isinstance(node, dict), f"docs/install.md: {key} goes below a leaf of values.yaml"
                assert part in node, f"docs/install.md names {key}, which values.yaml does not have"
                node = node[part]
