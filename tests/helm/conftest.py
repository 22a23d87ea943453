"""The chart, loaded once; its rendering under each configuration of rendering.CONFIGURATIONS; and, for the
tests that need the real API server, each configuration installed once per session (tests/helm/server.py)."""

from __future__ import annotations

from collections.abc import Iterator

import helm_python
import pytest

from tests.support.control_plane import ControlPlane

from .rendering import CONFIGURATIONS, JsonDict, load_chart, render
from .server import Api, Installation, install, uninstall


@pytest.fixture(scope="session")
def chart() -> helm_python.Chart:
    return load_chart()


@pytest.fixture(scope="session")
def rendered(chart: helm_python.Chart) -> dict[str, list[JsonDict]]:
    return {name: render(chart, values) for name, values in CONFIGURATIONS.items()}


@pytest.fixture(scope="session")
def admin(control_plane: ControlPlane) -> Api:
    return Api(control_plane)


class Installations:
    """Each configuration installed on first use, uninstalled at the end of the session."""

    def __init__(self, api: Api, chart: helm_python.Chart) -> None:
        self._api = api
        self._chart = chart
        self._done: dict[str, Installation] = {}

    def __getitem__(self, name: str) -> Installation:
        if name not in self._done:
            self._done[name] = install(self._api, self._chart, CONFIGURATIONS[name])
        return self._done[name]

    def close(self) -> None:
        for installation in self._done.values():
            uninstall(self._api, installation)


@pytest.fixture(scope="session")
def installed(admin: Api, chart: helm_python.Chart) -> Iterator[Installations]:
    installations = Installations(admin, chart)
    yield installations
    installations.close()
