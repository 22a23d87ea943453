"""The pod runner of a test's namespace: its pods run as local processes on the session's test Node."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kube_client import KubeClient
from tests.support.kubelet import TestKubelet
from tests.support.pod_runner import PodRunner


@pytest.fixture
def runner_env(tmp_path: Path) -> dict[str, str]:
    """The node's environment as the pods see it (`ftjob local`'s passthrough applies); override it."""
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home")}


@pytest.fixture
def pod_runner(
    api: KubeClient, kubelet: TestKubelet, namespace: str, tmp_path: Path, runner_env: dict[str, str]
) -> Iterator[PodRunner]:
    with PodRunner(api, kubelet, namespace, tmp_path / "pods", local_env=runner_env) as runner:
        yield runner
    assert not runner.errors, runner.errors
