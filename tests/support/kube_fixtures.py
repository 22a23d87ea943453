"""Fixtures of the operator and end-to-end tests: an emulated API server and a client for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kube_client import KubeClient
from tests.support.kube_emulator import EmulatorServer


@pytest.fixture
def cluster() -> Iterator[EmulatorServer]:
    with EmulatorServer() as server:
        yield server


@pytest.fixture
def api(cluster: EmulatorServer) -> KubeClient:
    return KubeClient(cluster.url)


@pytest.fixture
def kubeconfig(cluster: EmulatorServer, tmp_path: Path) -> Path:
    return cluster.write_kubeconfig(tmp_path / "kubeconfig")
