"""Shared fixtures live in tests/support/ and are registered here; the run ends with a table by area."""

from __future__ import annotations

from collections import defaultdict

import pytest
from _pytest.terminal import TerminalReporter

pytest_plugins = ["tests.support.s3_server", "tests.support.models", "tests.support.kube_fixtures"]

_SECONDS: dict[str, float] = defaultdict(float)
_OUTCOMES: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))


# Three groups for `-n 2 --dist loadgroup`: the end-to-end tests (which wait on the Job controller and the
# operator's polls much of the time), the other tests that load a model (CPU-bound training), and the rest
# (mostly waiting on the API server, or pure Python). One group alone held the end-to-end and training
# tests, and was most of the run's length.
MODEL_FIXTURES = {"tiny_model_path", "smollm2_model_path", "smollm2_tokenizer_path"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _area(item.nodeid) == "e2e":
            group = "e2e"
        elif MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            group = "model"
        else:
            group = "api"
        item.add_marker(pytest.mark.xdist_group(group))


def _area(nodeid: str) -> str:
    parts = nodeid.split("/")
    return parts[1] if len(parts) > 2 else parts[0]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    area = _area(report.nodeid)
    _SECONDS[area] += report.duration  # setup too: that is where the control plane and models start
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _OUTCOMES[area]["error" if report.when == "setup" and report.failed else report.outcome] += 1


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    """Tests and seconds per area (tests/<area>/), so CI's log shows where the time goes."""
    if not _OUTCOMES:
        return
    terminalreporter.write_sep("-", "tests by area (seconds include fixtures)")
    for area in sorted(_OUTCOMES):
        outcomes = ", ".join(f"{n} {o}" for o, n in sorted(_OUTCOMES[area].items()))
        terminalreporter.write_line(f"{area:<10} {outcomes:<40} {_SECONDS[area]:7.1f} s")
