"""merge_patch: the JSON merge patch between two statuses."""

from __future__ import annotations

from typing import Any

import pytest

from ftjob_operator.patches import apply_merge_patch, merge_patch


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        pytest.param({}, {"a": 1}, {"a": 1}, id="add"),
        pytest.param({"a": 1, "b": 2}, {"a": 1}, {"b": None}, id="remove-becomes-null"),
        pytest.param({"p": {"x": 1, "y": 2}}, {"p": {"x": 1, "y": 3}}, {"p": {"y": 3}}, id="nested-diff"),
        pytest.param(
            {"p": {"eta": 5, "step": 1}},
            {"p": {"step": 2}},
            {"p": {"eta": None, "step": 2}},
            id="nested-removal",
        ),
        pytest.param({"c": [1, 2]}, {"c": [2]}, {"c": [2]}, id="lists-replaced-whole"),
        pytest.param({"a": {"b": 1}}, {"a": 5}, {"a": 5}, id="object-to-scalar"),
        pytest.param({"a": 1}, {"a": 1}, {}, id="unchanged"),
    ],
)
def test_merge_patch(old: dict[str, Any], new: dict[str, Any], patch: dict[str, Any]) -> None:
    assert merge_patch(old, new) == patch
    assert apply_merge_patch(old, patch) == new
