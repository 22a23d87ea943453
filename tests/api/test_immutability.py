"""A FineTuneJob's spec is fixed at creation, `suspend` aside: real updates against the real API server.

Updates are sent with `dryRun=All`: the server runs every validation, CEL transition rules included, and
stores nothing, so one created object serves every case.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftjob.schema.crd import MUTABLE_SPEC_FIELDS, spec_schema
from tests.api.apiserver import Answer, apply, merge_patch
from tests.support.kube_client import KubeClient

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
FULL: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "qlora-full.yaml").read_text())
SPEC_FIELDS = set(spec_schema()["properties"])

# A valid new value for every spec field of examples/qlora-full.yaml (it sets them all).
CHANGES: dict[str, Any] = {
    "baseModel": {"uri": "s3://acme-ml-models/base/other/", "tokenSecretRef": None},
    "data": {"minExamples": 501},
    "output": {"mergeAdapter": False},
    "peft": {"r": 64},
    "training": {"seed": 7},
    "evaluation": {"maxSamples": 100},
    "checkpointing": {"keepLast": 4},
    "storage": {"region": "us-east-1"},
    "resources": {"gpus": 0},
    "scheduling": {"queueName": "team-a"},
    "image": "ghcr.io/ftjob/trainer:0.2.0",
    "serviceAccountName": "someone-else",
    "activeDeadlineSeconds": 3600,
    "backoffLimit": 5,
    "ttlSecondsAfterFinished": 60,
}
# Optional fields that the quickstart leaves out and the full example sets (no default to fall back on).
OPTIONAL = {
    "image": "ghcr.io/ftjob/trainer:0.1.0",
    "serviceAccountName": "trainer",
    "activeDeadlineSeconds": 60,
}
NESTED_OPTIONAL = {
    "baseModel": {"tokenSecretRef": None},
    "data": {"validationUri": None},
    "storage": {"region": None},
    "scheduling": {"priorityClassName": None},
}


def immutable(field: str) -> str:
    return (
        f"spec.{field}: Forbidden: spec.{field} is immutable after creation: only spec.suspend may change "
        "(create a new FineTuneJob instead)"
    )


def refusals(answers: dict[str, Answer]) -> list[str]:
    """Every case the server did not refuse with the immutability message of that field."""
    return [
        f"{case}: {answer}"
        for case, answer in answers.items()
        if answer.status != 422 or immutable(case.split(".")[0].split(" ")[0]) not in answer.message
    ]


@pytest.fixture
def full_job(api: KubeClient, namespace: str) -> str:
    answer = apply(api, namespace, FULL)
    assert answer.ok, answer
    return str(FULL["metadata"]["name"])


@pytest.fixture
def quickstart_job(api: KubeClient, namespace: str) -> str:
    answer = apply(api, namespace, QUICKSTART)
    assert answer.ok, answer
    return str(QUICKSTART["metadata"]["name"])


def test_the_change_table_covers_every_spec_field() -> None:
    assert set(CHANGES) == SPEC_FIELDS - set(MUTABLE_SPEC_FIELDS)
    assert set(FULL["spec"]) == SPEC_FIELDS


def test_changing_any_field_but_suspend_is_refused(api: KubeClient, namespace: str, full_job: str) -> None:
    answers = {
        field: merge_patch(api, namespace, full_job, {"spec": {field: value}})
        for field, value in CHANGES.items()
    }
    assert refusals(answers) == []


def test_removing_a_field_is_refused(api: KubeClient, namespace: str, full_job: str) -> None:
    # Sections with a default that held other values, optional fields without one, and fields inside.
    answers = {
        field: merge_patch(api, namespace, full_job, {"spec": {field: None}})
        for field in sorted(SPEC_FIELDS - {"suspend", "baseModel", "data", "output"})
    }
    answers |= {
        f"{field}.{next(iter(inner))}": merge_patch(api, namespace, full_job, {"spec": {field: inner}})
        for field, inner in NESTED_OPTIONAL.items()
    }
    assert refusals(answers) == []


def test_adding_an_optional_field_is_refused(api: KubeClient, namespace: str, quickstart_job: str) -> None:
    answers = {
        field: merge_patch(api, namespace, quickstart_job, {"spec": {field: value}})
        for field, value in OPTIONAL.items()
    }
    answers["storage.endpointUrl"] = merge_patch(
        api, namespace, quickstart_job, {"spec": {"storage": {"endpointUrl": "https://minio.example:9000"}}}
    )
    answers["data.validationUri"] = merge_patch(
        api,
        namespace,
        quickstart_job,
        {"spec": {"data": {"validationUri": "s3://ftjob-quickstart/data/v.jsonl"}}},
    )
    assert refusals(answers) == []


def test_reapplying_an_edited_manifest_is_refused(
    api: KubeClient, namespace: str, quickstart_job: str
) -> None:
    edited = copy.deepcopy(QUICKSTART)
    edited["spec"]["training"]["epochs"] = 2
    assert refusals({"training": apply(api, namespace, edited, dry_run=True)}) == []


def test_removing_a_section_that_held_only_defaults_changes_nothing(
    api: KubeClient, namespace: str, quickstart_job: str
) -> None:
    # The server defaults the section again, so old and new are equal and the update is allowed.
    answer = merge_patch(api, namespace, quickstart_job, {"spec": {"checkpointing": None}})
    assert answer.ok, answer
    assert answer.body["spec"]["checkpointing"] == {"everySteps": 100, "keepLast": 2, "resume": True}


def test_suspend_may_change(api: KubeClient, namespace: str, quickstart_job: str) -> None:
    for value in (True, False):
        answer = merge_patch(api, namespace, quickstart_job, {"spec": {"suspend": value}}, dry_run=False)
        assert answer.ok, answer
        assert answer.body["spec"]["suspend"] is value
    assert answer.body["metadata"]["generation"] == 3
