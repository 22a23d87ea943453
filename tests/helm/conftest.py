"""The chart, loaded once, and its rendering under each configuration of rendering.CONFIGURATIONS."""

from __future__ import annotations

import helm_python
import pytest

from .rendering import CONFIGURATIONS, JsonDict, load_chart, render


@pytest.fixture(scope="module")
def chart() -> helm_python.Chart:
    return load_chart()


@pytest.fixture(scope="module")
def rendered(chart: helm_python.Chart) -> dict[str, list[JsonDict]]:
    return {name: render(chart, values) for name, values in CONFIGURATIONS.items()}
