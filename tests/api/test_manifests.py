"""Examples are accepted and broken manifests refused by the real API server (with the generated CRD) and
by the pydantic model that `ftjob validate` runs offline, both naming the field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftjob.api import FineTuneJob
from ftjob.manifests import validate_document
from ftjob.schema.crd import build_crd
from tests.api.apiserver import apply, comparable, create, model_defaults
from tests.support.kube_client import KubeClient

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
SCHEMA: dict[str, Any] = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


QUICKSTART = load(ROOT / "examples" / "quickstart.yaml")


def test_there_are_at_least_three_examples() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"quickstart.yaml", "qlora-full.yaml", "minio-kueue.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_and_stored_with_the_model_defaults(
    path: Path, api: KubeClient, namespace: str
) -> None:
    doc = load(path)
    assert validate_document(doc, path.name).errors == []
    answer = apply(api, namespace, doc)
    assert answer.ok, answer
    assert comparable(answer.body["spec"]) == model_defaults(doc["spec"])


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


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        node = doc
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        del node[leaf]

    return mutate


# (mutation, the field path both the model and the server name, what the real API server says)
BAD_MANIFESTS = [
    pytest.param(
        _set("spec.peft.r", "four"),
        "spec.peft.r",
        'spec.peft.r: Invalid value: "string": spec.peft.r in body must be of type integer',
        id="wrong-type",
    ),
    pytest.param(
        _set("spec.peft.r", 0),
        "spec.peft.r",
        "spec.peft.r: Invalid value: 0: spec.peft.r in body should be greater than or equal to 1",
        id="below-minimum",
    ),
    pytest.param(
        _set("spec.peft.dropout", 1.5),
        "spec.peft.dropout",
        "spec.peft.dropout: Invalid value: 1.5: spec.peft.dropout in body should be less than 1",
        id="above-maximum",
    ),
    pytest.param(
        _set("spec.training.learningRate", 0),
        "spec.training.learningRate",
        "spec.training.learningRate: Invalid value: 0: spec.training.learningRate in body should be greater than 0",
        id="exclusive-minimum",
    ),
    pytest.param(
        _set("spec.peft.method", "full"),
        "spec.peft.method",
        'spec.peft.method: Unsupported value: "full": supported values: "qlora", "lora"',
        id="not-in-enum",
    ),
    pytest.param(
        _set("spec.output.uri", "gs://bucket/out/"),
        "spec.output.uri",
        'spec.output.uri: Invalid value: "gs://bucket/out/": must be s3://bucket/key or file:///absolute/path',
        id="unsupported-scheme",
    ),
    pytest.param(
        _set("spec.data.trainUri", "s3://bucket/a/../b.jsonl"),
        "spec.data.trainUri",
        "spec.data.trainUri: Invalid value: \"s3://bucket/a/../b.jsonl\": must not contain '..' path segments",
        id="dot-dot-segment",
    ),
    pytest.param(
        _set("spec.data.trainUri", "s3://Bad_Bucket/x.jsonl"),
        "spec.data.trainUri",
        'spec.data.trainUri: Invalid value: "s3://Bad_Bucket/x.jsonl": must be a well-formed s3://bucket/key URI',
        id="bad-bucket-name",
    ),
    pytest.param(
        _set("spec.baseModel.uri", "hf://org/model"),
        "spec.baseModel.uri",
        'spec.baseModel.uri: Invalid value: "hf://org/model": must be hf://org/name@revision or s3://',
        id="hf-without-revision",
    ),
    pytest.param(
        _set("spec.peft.rank", 8),
        "spec.peft.rank",
        'strict decoding error: unknown field "spec.peft.rank"',
        id="unknown-field",
    ),
    pytest.param(
        _set("spec.resources.memory", "lots"),
        "spec.resources.memory",
        'spec.resources.memory: Invalid value: "lots": spec.resources.memory in body should match',
        id="bad-quantity",
    ),
    pytest.param(
        _set("spec.backoffLimit", -1),
        "spec.backoffLimit",
        "spec.backoffLimit: Invalid value: -1: spec.backoffLimit in body should be greater than or equal to 0",
        id="negative-backoff",
    ),
    pytest.param(
        _set("metadata.name", "x" * 53),
        "metadata.name",
        "metadata.name: Too long: may not be more than 52 bytes",
        id="name-too-long",
    ),
    pytest.param(
        _set("spec.evaluation.metrics", ["bleu"]),
        "spec.evaluation.metrics",
        'spec.evaluation.metrics[0]: Unsupported value: "bleu": supported values: "exactMatch", "tokenF1"',
        id="unknown-metric",
    ),
    pytest.param(
        _set("spec.storage.endpointUrl", "http://minio:s3cr3t@minio.storage:9000"),
        "spec.storage.endpointUrl",
        # The server quotes the value back to whoever sent it; it stores nothing.
        'spec.storage.endpointUrl: Invalid value: "http://minio:s3cr3t@minio.storage:9000": must not contain credentials',
        id="endpoint-with-credentials",
    ),
    pytest.param(
        _set("spec.resources.gpus", 9),
        "spec.resources.gpus",
        "spec.resources.gpus: Invalid value: 9: spec.resources.gpus in body should be less than or equal to 8",
        id="more-gpus-than-a-node-has",
    ),
    pytest.param(
        _set("spec.resources.nodes", 0),
        "spec.resources.nodes",
        "spec.resources.nodes: Invalid value: 0: spec.resources.nodes in body should be greater than or equal to 1",
        id="no-node",
    ),
    pytest.param(
        _delete("spec.data.trainUri"),
        "spec.data.trainUri",
        "spec.data.trainUri: Required value",
        id="missing-required-field",
    ),
]


@pytest.mark.parametrize(("mutate", "field", "server_says"), BAD_MANIFESTS)
def test_bad_manifest_is_refused_by_server_and_model_naming_the_field(
    mutate: Callable[[dict[str, Any]], None], field: str, server_says: str, api: KubeClient, namespace: str
) -> None:
    doc = copy.deepcopy(QUICKSTART)
    mutate(doc)
    answer = create(api, namespace, doc)
    # 422 Invalid; an unknown field fails earlier, while decoding the body: 400 BadRequest.
    assert answer.status == (400 if field == "spec.peft.rank" else 422), answer
    assert server_says in answer.message, answer.message
    model_errors = validate_document(doc, "case").errors
    assert any(line.startswith(field) for line in model_errors), model_errors


def test_missing_required_field_is_named_by_the_model() -> None:
    doc = copy.deepcopy(QUICKSTART)
    del doc["spec"]["data"]["trainUri"]
    assert "spec.data.trainUri: is required" in validate_document(doc, "case").errors


def test_server_side_apply_refuses_an_unknown_field_too(api: KubeClient, namespace: str) -> None:
    doc = copy.deepcopy(QUICKSTART)
    doc["spec"]["peft"] = {"rank": 8}
    answer = apply(api, namespace, doc, dry_run=True)
    # kube-apiserver 1.36 answers this with 500 InternalError, the message naming the field all the same.
    assert not answer.ok, answer
    assert ".spec.peft.rank: field not declared in schema" in answer.message


def test_longest_allowed_name_is_accepted(api: KubeClient, namespace: str) -> None:
    doc = copy.deepcopy(QUICKSTART)
    doc["metadata"]["name"] = "x" * 52
    answer = create(api, namespace, doc)
    assert answer.ok, answer


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
def test_cross_field_rules_are_the_models_alone(
    patch: dict[str, Any], line: str, api: KubeClient, namespace: str
) -> None:
    doc = copy.deepcopy(QUICKSTART)
    doc["spec"].update(patch)
    answer = create(api, namespace, doc)
    assert answer.ok, answer
    assert validate_document(doc, "case").errors == [line]


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


def test_server_and_model_agree_on_every_uri(api: KubeClient, namespace: str) -> None:
    # spec.data.trainUri takes s3:// and file://; spec.baseModel.uri also hf:// and absolute paths.
    disagreements = []
    verdicts = set()
    for field in ("data", "baseModel"):
        key = "trainUri" if field == "data" else "uri"
        for uri in URIS:
            doc = copy.deepcopy(QUICKSTART)
            doc["spec"][field] = {key: uri}
            server_ok = create(api, namespace, doc).ok
            model_ok = validate_document(doc, "case").ok
            verdicts.add((field, server_ok))
            if server_ok != model_ok:
                disagreements.append(f"spec.{field}.{key}={uri!r}: server {server_ok}, model {model_ok}")
    assert disagreements == []
    assert verdicts == {("data", True), ("data", False), ("baseModel", True), ("baseModel", False)}


def test_model_round_trips_through_json() -> None:
    job = FineTuneJob.model_validate(QUICKSTART)
    again = FineTuneJob.model_validate(job.model_dump(mode="json", by_alias=True, exclude_none=True))
    assert again == job


def test_the_models_message_masks_credentials_in_a_url() -> None:
    # The operator copies this line into status and Events: the password must not be in it.
    doc = copy.deepcopy(QUICKSTART)
    doc["spec"]["storage"] = {"endpointUrl": "http://minio:s3cr3t@minio.storage:9000"}
    assert validate_document(doc, "case").errors == [
        "spec.storage.endpointUrl: must not contain credentials (user:password@); put them in the Secret "
        'named by credentialsSecretRef (got "http://[REDACTED]@minio.storage:9000")'
    ]
