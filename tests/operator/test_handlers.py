"""kopf wiring: what kopf is told to store where, and that nothing asks for a finalizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import kopf
import yaml

from ftjob_operator.handlers import LiveSet, build_registry, kopf_settings
from ftjob_operator.kube import Kube, load_api_client
from ftjob_operator.reconcile import Reconciler
from ftjob_operator.settings import OperatorSettings


def test_kopf_keeps_its_state_in_annotations_under_the_project_prefix() -> None:
    settings = kopf_settings(OperatorSettings())
    progress = settings.persistence.progress_storage
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage) and progress.prefix == "ftjob.dev"
    assert isinstance(diffbase, kopf.AnnotationsDiffBaseStorage)
    assert (diffbase.prefix, diffbase.key) == ("ftjob.dev", "last-handled-configuration")
    assert settings.posting.enabled is False
    assert settings.scanning.disabled is True
    managed = "app.kubernetes.io/managed-by=ftjob-operator"
    selectors = settings.watching.label_selectors
    assert (selectors["batch", "v1", "jobs"], selectors["v1", "pods"]) == (managed, managed)
    assert len(selectors) == 2


def test_no_handler_needs_a_finalizer(tmp_path: Path) -> None:
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
    registry = build_registry(Reconciler(Kube(load_api_client(str(kubeconfig))), settings), settings)
    changing = registry._changing.get_all_handlers()
    # create, update, and resume (which kopf files under no reason): no on.delete
    assert {getattr(h.reason, "value", h.reason) for h in changing} == {"create", "update", None}
    assert not any(cast(Any, h).requires_finalizer for h in changing)
    assert registry._spawning.get_all_handlers() == []  # no timers or daemons: kopf adds finalizers for those


def test_live_set() -> None:
    live = LiveSet()
    live.update("b", "x", True)
    live.update("a", "y", True)
    live.update("b", "x", False)
    live.update("c", "z", False)
    assert live.snapshot() == [("a", "y")]
