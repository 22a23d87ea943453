"""Examples are accepted and broken manifests refused, by the model and by the generated schema alike,
with messages that name the field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftjob.api import FineTuneJob
from ftjob.api.uris import UriRule
from ftjob.manifests import validate_document
from ftjob.schema.crd import build_crd
from tests.support.crd_validator import apply_defaults, validate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
SCHEMA: dict[str, Any] = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def server_errors(doc: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    new = apply_defaults(doc, SCHEMA)
    if old is None:
        return validate(new, SCHEMA)
    return validate(new, SCHEMA, apply_defaults(old, SCHEMA))


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


QUICKSTART = load(ROOT / "examples" / "quickstart.yaml")


def test_there_are_at_least_three_examples() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"quickstart.yaml", "qlora-full.yaml", "minio-kueue.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid_for_model_and_schema(path: Path) -> None:
    doc = load(path)
    result = validate_document(doc, path.name)
    assert result.errors == []
    assert server_errors(doc) == []


def test_full_example_sets_every_spec_section() -> None:
    doc = load(ROOT / "examples" / "qlora-full.yaml")
    declared = set(SCHEMA["properties"]["spec"]["properties"])
    assert declared <= set(doc["spec"]), declared - set(doc["spec"])


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        node = doc
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    return mutate


# (mutation, the field path both the model and the server must name)
BAD_MANIFESTS = [
    pytest.param(_set("spec.peft.r", "four"), "spec.peft.r", id="wrong-type"),
    pytest.param(_set("spec.peft.r", 0), "spec.peft.r", id="below-minimum"),
    pytest.param(_set("spec.peft.dropout", 1.5), "spec.peft.dropout", id="above-maximum"),
    pytest.param(_set("spec.training.learningRate", 0), "spec.training.learningRate", id="exclusive-minimum"),
    pytest.param(_set("spec.peft.method", "full"), "spec.peft.method", id="not-in-enum"),
    pytest.param(_set("spec.output.uri", "gs://bucket/out/"), "spec.output.uri", id="unsupported-scheme"),
    pytest.param(
        _set("spec.data.trainUri", "s3://bucket/a/../b.jsonl"), "spec.data.trainUri", id="dot-dot-segment"
    ),
    pytest.param(
        _set("spec.data.trainUri", "s3://Bad_Bucket/x.jsonl"), "spec.data.trainUri", id="bad-bucket-name"
    ),
    pytest.param(
        _set("spec.baseModel.uri", "hf://org/model"), "spec.baseModel.uri", id="hf-without-revision"
    ),
    pytest.param(_set("spec.peft.rank", 8), "spec.peft.rank", id="unknown-field"),
    pytest.param(_set("spec.resources.memory", "lots"), "spec.resources.memory", id="bad-quantity"),
    pytest.param(_set("spec.backoffLimit", -1), "spec.backoffLimit", id="negative-backoff"),
    pytest.param(_set("metadata.name", "x" * 53), "metadata.name", id="name-too-long"),
    pytest.param(_set("spec.evaluation.metrics", ["bleu"]), "spec.evaluation.metrics", id="unknown-metric"),
]


@pytest.mark.parametrize(("mutate", "field"), BAD_MANIFESTS)
def test_bad_manifest_is_refused_naming_the_field(
    mutate: Callable[[dict[str, Any]], None], field: str
) -> None:
    doc = copy.deepcopy(QUICKSTART)
    mutate(doc)
    model_errors = validate_document(doc, "case").errors
    assert any(line.startswith(field) for line in model_errors), model_errors
    assert any(field in line for line in server_errors(doc)), server_errors(doc)


def test_missing_required_field_is_named() -> None:
    doc = copy.deepcopy(QUICKSTART)
    del doc["spec"]["data"]["trainUri"]
    assert "spec.data.trainUri: is required" in validate_document(doc, "case").errors
    assert "spec.data.trainUri: Required value" in server_errors(doc)


# Rules the schema cannot express: the server accepts, the model refuses (the operator then reports
# Failed/InvalidSpec with the same line).
CROSS_FIELD = [
    pytest.param(
        {
            "data": {
                "trainUri": "s3://b1b/t.jsonl",
                "validationUri": "s3://b1b/v.jsonl",
                "validationSplit": 0.2,
            }
        },
        "spec.data.validationSplit: cannot be set together with data.validationUri; use one or the other (got 0.2)",
        id="validation-uri-and-split",
    ),
    pytest.param(
        {"peft": {"method": "qlora", "quantization": {"bits": 8}}},
        "spec.peft.quantization.bits: qlora requires 4-bit quantization (got 8)",
        id="qlora-needs-4-bit",
    ),
    pytest.param(
        {"peft": {"targetModules": ["all-linear", "q_proj"]}},
        'spec.peft.targetModules: \'all-linear\' must be the only entry when used (got ["all-linear", "q_proj"])',
        id="all-linear-alone",
    ),
    pytest.param(
        {"resources": {"nodeSelector": {"bad key!": "x"}}},
        'spec.resources.nodeSelector.bad key!: must match ^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$ (got "bad key!")',
        id="bad-label-key",
    ),
    pytest.param(
        {"baseModel": {"uri": "s3://models/base/", "tokenSecretRef": {"name": "hf", "key": "token"}}},
        'spec.baseModel.tokenSecretRef: is only used for hf:// models (got "hf")',
        id="token-for-non-hub-model",
    ),
]


@pytest.mark.parametrize(("patch", "line"), CROSS_FIELD)
def test_cross_field_rules_name_path_and_value(patch: dict[str, Any], line: str) -> None:
    doc = copy.deepcopy(QUICKSTART)
    doc["spec"].update(patch)
    assert server_errors(doc) == []
    assert validate_document(doc, "case").errors == [line]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("peft", {"r": 64}),
        ("output", {"uri": "s3://ftjob-quickstart/runs/other/"}),
        ("image", "ghcr.io/x/trainer:2"),
        ("backoffLimit", 5),
    ],
)
def test_spec_edits_after_creation_are_forbidden(field: str, value: Any) -> None:
    new = copy.deepcopy(QUICKSTART)
    new["spec"][field] = value
    errors = server_errors(new, old=QUICKSTART)
    assert any(e.startswith(f"spec.{field}: Forbidden: spec.{field} is immutable") for e in errors), errors


def test_suspend_may_change_after_creation() -> None:
    new = copy.deepcopy(QUICKSTART)
    new["spec"]["suspend"] = True
    assert server_errors(new, old=QUICKSTART) == []


def test_status_may_change_without_touching_spec() -> None:
    new = copy.deepcopy(QUICKSTART)
    new["status"] = {"phase": "Running", "progress": {"step": 3, "totalSteps": 10, "percent": 30}}
    assert server_errors(new, old=QUICKSTART) == []


URIS = [
    "s3://bucket/key.jsonl",
    "s3://bucket",
    "s3://my.bucket-1/a/b/",
    "s3://b/x",
    "s3://Bucket/x",
    "s3://bucket/a/../b",
    "s3://bucket/..",
    "s3://bucket/a..b",
    "s3://bucket/has space",
    "file:///data/train.jsonl",
    "file://relative",
    "/mnt/models/llama",
    "relative/path",
    "hf://org/name@main",
    "hf://org/name",
    "hf://org/name@abc123/sub",
    "gs://bucket/x",
    "",
]


@pytest.mark.parametrize("uri", URIS)
@pytest.mark.parametrize("schemes", [("s3", "file"), ("hf", "s3", "file", "path")])
def test_cel_and_pydantic_agree_on_uris(uri: str, schemes: tuple[str, ...]) -> None:
    rule = UriRule(schemes)
    try:
        rule.check(uri)
        model_ok = bool(uri)
    except ValueError:
        model_ok = False
    node = {"type": "string", "minLength": 1, "maxLength": 1024, "x-kubernetes-validations": rule.cel_rules()}
    assert (validate(uri, node) == []) == model_ok


def test_model_round_trips_through_json() -> None:
    job = FineTuneJob.model_validate(QUICKSTART)
    again = FineTuneJob.model_validate(job.model_dump(mode="json", by_alias=True, exclude_none=True))
    assert again == job
