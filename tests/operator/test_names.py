"""Ownership: which Jobs are this FineTuneJob's to adopt."""

from __future__ import annotations

from typing import Any

import pytest

from ftjob_operator.names import Ownership, owner_of_child, ownership

from . import factories as f


@pytest.mark.parametrize(
    ("owner", "expected"),
    [
        pytest.param(f.owner_ref(), Ownership.OWNED, id="same-uid"),
        pytest.param(f.owner_ref(uid="older"), Ownership.STALE, id="same-name-other-uid"),
        pytest.param(f.owner_ref(uid="x", name="other"), Ownership.FOREIGN, id="other-finetunejob"),
        pytest.param(
            f.owner_ref(kind="Deployment", api_version="apps/v1"), Ownership.FOREIGN, id="other-kind-same-uid"
        ),
        pytest.param(
            {**f.owner_ref(), "controller": False}, Ownership.FOREIGN, id="owner-but-not-controller"
        ),
        pytest.param({}, Ownership.FOREIGN, id="no-owner"),
    ],
)
def test_ownership(owner: dict[str, Any], expected: Ownership) -> None:
    assert ownership(f.job(owner=owner), f.ftj()) is expected


def test_owner_of_children() -> None:
    assert owner_of_child(f.job()) == (f.NAMESPACE, f.NAME)
    assert owner_of_child(f.pod()) == (f.NAMESPACE, f.NAME)  # pods: by label, their controller is the Job
    assert owner_of_child({"metadata": {"namespace": "x", "labels": {}}}) is None
