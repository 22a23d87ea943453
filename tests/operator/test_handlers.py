"""kopf wiring: only watch-event handlers, so kopf writes nothing to the objects and asks for no finalizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import kopf
import yaml

from ftjob_operator.cache import ClusterCache
from ftjob_operator.controller import Controller
from ftjob_operator.handlers import NoDiffBase, build_registry, kopf_settings
from ftjob_operator.kube import Kube, load_api_client
from ftjob_operator.metrics import Metrics
from ftjob_operator.reconcile import Reconciler
from ftjob_operator.settings import OperatorSettings


def test_kopf_keeps_no_diff_base_and_watches_only_the_operators_children() -> None:
    settings = kopf_settings(OperatorSettings())
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(diffbase, NoDiffBase)
    body = kopf.Body(
        {"metadata": {"name": "x", "annotations": {"a": "b"}}, "spec": {"big": list(range(100))}}
    )
    # Nothing is copied per event, nothing is stored on the object.
    assert diffbase.build(body=body) == {} and diffbase.fetch(body=body) is None
    assert settings.posting.enabled is False
    assert settings.scanning.disabled is True
    managed = "app.kubernetes.io/managed-by=ftjob-operator"
    selectors = settings.watching.label_selectors
    assert (selectors["batch", "v1", "jobs"], selectors["v1", "pods"]) == (managed, managed)
    assert len(selectors) == 2


def test_only_event_handlers_so_kopf_writes_nothing_and_needs_no_finalizer(tmp_path: Path) -> None:
    # Building the registry only reads a kubeconfig; nothing is sent to the (absent) server.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    settings = OperatorSettings()
    cache = ClusterCache()
    reconciler = Reconciler(Kube(load_api_client(str(kubeconfig))), settings, cache=cache)
    registry = build_registry(Controller(reconciler, cache, settings, Metrics()))
    # on.create/on.update/on.resume would make kopf write progress and diff-base annotations on every
    # FineTuneJob (and patch it once per handled change); the operator has none.
    assert registry._changing.get_all_handlers() == []
    assert registry._spawning.get_all_handlers() == []  # no timers or daemons: kopf adds finalizers for those
    watching = registry._watching.get_all_handlers()
    assert sorted(str(h.id) for h in watching) == ["finetunejob-event", "job-event", "pod-event"]
    assert not any(cast(Any, h).requires_finalizer for h in watching if hasattr(h, "requires_finalizer"))
