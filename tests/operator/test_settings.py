"""settings_from: flags over FTJOB_* environment over defaults."""

from __future__ import annotations

from typing import Any

import pytest

from ftjob_operator.settings import OperatorSettings, settings_from


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        pytest.param(
            [],
            {},
            {"namespaces": (), "all_namespaces": True, "trainer_image": OperatorSettings().trainer_image},
            id="defaults",
        ),
        pytest.param(
            [],
            {"FTJOB_NAMESPACES": "a, b,,a"},
            {"namespaces": ("a", "b"), "all_namespaces": False},
            id="env-namespaces",
        ),
        pytest.param(
            ["--namespace", "x", "--namespace", "y"],
            {"FTJOB_NAMESPACES": "a"},
            {"namespaces": ("x", "y")},
            id="flags-win",
        ),
        pytest.param(
            ["--all-namespaces"],
            {"FTJOB_NAMESPACES": "a"},
            {"namespaces": (), "all_namespaces": True},
            id="all-namespaces-flag",
        ),
        pytest.param(
            [],
            {
                "FTJOB_TRAINER_IMAGE": "img:1",
                "FTJOB_TRAINER_SERVICE_ACCOUNT": "trainer",
                "FTJOB_LOG_LEVEL": "debug",
                "FTJOB_PROGRESS_INTERVAL": "5",
                "FTJOB_IMAGE_PULL_GRACE_SECONDS": "60",
                "FTJOB_TERMINATION_GRACE_SECONDS": "300",
                "FTJOB_IMAGE_PULL_POLICY": "Always",
            },
            {
                "trainer_image": "img:1",
                "trainer_service_account": "trainer",
                "log_level": "DEBUG",
                "progress_interval_seconds": 5.0,
                "image_pull_grace_seconds": 60.0,
                "termination_grace_period_seconds": 300,
                "image_pull_policy": "Always",
            },
            id="env",
        ),
        pytest.param(
            [
                "--trainer-image",
                "flag:2",
                "--liveness-port",
                "8181",
                "--metrics-port",
                "0",
                "--log-level",
                "warning",
                "--progress-interval",
                "0.5",
                "--image-pull-grace-period",
                "2",
                "--termination-grace-period",
                "30",
                "--default-active-deadline",
                "3600",
            ],
            {"FTJOB_TRAINER_IMAGE": "env:1", "FTJOB_LOG_LEVEL": "DEBUG"},
            {
                "trainer_image": "flag:2",
                "liveness_port": 8181,
                "metrics_port": 0,
                "log_level": "WARNING",
                "progress_interval_seconds": 0.5,
                "image_pull_grace_seconds": 2.0,
                "termination_grace_period_seconds": 30,
                "default_active_deadline_seconds": 3600,
            },
            id="flags",
        ),
    ],
)
def test_settings_from(argv: list[str], env: dict[str, str], expected: dict[str, Any]) -> None:
    settings = settings_from(argv, env)
    assert {key: getattr(settings, key) for key in expected} == expected


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        pytest.param(["--namespace", "a", "--all-namespaces"], {}, id="scope-flags-exclusive"),
        pytest.param([], {"FTJOB_PROGRESS_INTERVAL": "soon"}, id="interval-not-a-number"),
        pytest.param([], {"FTJOB_PROGRESS_INTERVAL": "0"}, id="interval-zero"),
        pytest.param(["--progress-interval", "-1"], {}, id="negative-interval-flag"),
        pytest.param([], {"FTJOB_LOG_LEVEL": "chatty"}, id="log-level"),
        pytest.param([], {"FTJOB_IMAGE_PULL_POLICY": "Sometimes"}, id="pull-policy"),
        pytest.param(["--metrics-port", "70000"], {}, id="port-range"),
    ],
)
def test_bad_settings_exit_with_usage_error(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(SystemExit) as exited:
        settings_from(argv, env)
    assert exited.value.code == 2
