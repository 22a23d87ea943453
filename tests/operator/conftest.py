"""Fixtures of the operator tests that talk to the real control plane through the fault-injecting proxy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.control_plane import ControlPlane
from tests.support.fault_proxy import FaultProxy


@pytest.fixture
def fault_proxy(control_plane: ControlPlane) -> Iterator[FaultProxy]:
    """A fresh proxy (no rules, no records) in front of the session's API server."""
    pki = control_plane.pki
    with FaultProxy(
        control_plane.url, pki.path("ca.crt"), pki.path("admin.crt"), pki.path("admin.key")
    ) as proxy:
        yield proxy


@pytest.fixture
def proxy_kubeconfig(control_plane: ControlPlane, fault_proxy: FaultProxy, tmp_path: Path) -> Path:
    """A kubeconfig for the proxy: plain HTTP, no credentials (the proxy authenticates upstream)."""
    return control_plane.write_kubeconfig(tmp_path / "proxy.kubeconfig", server=fault_proxy.url)
