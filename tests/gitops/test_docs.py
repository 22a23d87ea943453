"""The day-2 docs quote things that live elsewhere: the health check, kopf's annotation keys, metric names,
the RBAC rules, chart values. Each quote is checked against its source."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final, cast

import yaml
from prometheus_client import generate_latest

from ftjob_operator.cache import ClusterCache
from ftjob_operator.controller import Controller
from ftjob_operator.handlers import NoDiffBase, build_registry, kopf_settings
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


def test_gitops_doc_says_kopf_writes_nothing_on_the_objects() -> None:
    settings = OperatorSettings()
    cache = ClusterCache()
    registry = build_registry(
        Controller(Reconciler(Kube(cast(Any, None)), settings), cache, settings, Metrics())
    )
    # Only watch-event handlers: kopf stores progress and a diff base only for changing handlers.
    assert registry._changing.get_all_handlers() == []
    assert isinstance(kopf_settings(settings).persistence.diffbase_storage, NoDiffBase)
    text = (DOCS / "gitops.md").read_text()
    assert "keep no bookkeeping on the object (no annotations, no finalizer)" in text


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
