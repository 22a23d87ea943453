"""The cluster commands' pure views: bars, ages, the headline metric, lenient reads of partial statuses."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from ftjob_cli import views
from ftjob_cli.logtext import human_text

NOW = datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [(0.0, "░░░░"), (0.5, "██░░"), (1.0, "████"), (1.7, "████"), (-1, "░░░░"), (0.53, "██▏░")],
)
def test_bar(fraction: float, expected: str) -> None:
    assert views.bar(fraction, 4) == expected


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2026-11-30T07:59:15Z", "45s"),
        ("2026-11-30T07:48:00Z", "12m"),
        ("2026-11-30T05:00:00Z", "3h"),
        ("2026-11-25T08:00:00Z", "5d"),
        (None, "-"),
        ("yesterday", "-"),
    ],
)
def test_age_is_kubectl_short(timestamp: str | None, expected: str) -> None:
    assert views.age(timestamp, NOW) == expected


def test_headline_prefers_exact_match_and_shows_base_to_tuned() -> None:
    obj = {"status": {"metrics": {"tuned": {"rougeL": 0.9, "exactMatch": 0.75}, "base": {"exactMatch": 0.1}}}}
    assert views.headline(obj) == "exactMatch 0.10 -> 0.75"
    assert views.headline({"status": {"metrics": {"tuned": {"rougeL": 0.9}}}}) == "rougeL 0.90"
    assert views.headline({}) == ""


def test_partial_and_odd_statuses_never_raise() -> None:
    odd: list[dict[str, Any]] = [
        {},
        {"status": None},
        {"status": {"progress": {}}},
        {"metadata": {}, "status": {"conditions": ["x"]}},
    ]
    for obj in odd:
        assert views.watch_line(obj).startswith("Pending")
        views.get_table([obj], NOW, all_namespaces=True, wide=True)
        views.describe(obj, [], [], NOW)
        views.outcome_line(obj)


def test_human_text_drops_records_and_keeps_the_last_line_of_a_step() -> None:
    text = "\n".join(
        [
            "a",
            "step 5/10 (50%) | loss 0.9",
            "step 5/10 (50%) | loss 0.4",
            'FTJOB_PROGRESS {"stage":"training"}',
            "step 6/10 (60%) | loss 0.3",
            "b",
        ]
    )
    assert human_text(text) == ["a", "step 5/10 (50%) | loss 0.4", "step 6/10 (60%) | loss 0.3", "b"]
    assert len(human_text(text, raw=True)) == 6


def test_named_kubectl_ftjob_it_presents_itself_as_a_kubectl_plugin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ftjob_cli.main import main

    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/kubectl-ftjob", "--help"])
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: kubectl ftjob")
