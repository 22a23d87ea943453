"""Build the CustomResourceDefinition from the API model (pure: returns dicts)."""

from __future__ import annotations

import types
import typing
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from ftjob.api import meta
from ftjob.api.resource import FineTuneJob
from ftjob.api.spec import FineTuneJobSpec
from ftjob.api.status import FineTuneJobStatus

from .structural import Schema, normalise_description, to_structural

CRD_NAME = f"{meta.PLURAL}.{meta.GROUP}"
MUTABLE_SPEC_FIELDS = ("suspend",)

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Display phase."},
    {
        "name": "Progress",
        "type": "integer",
        "jsonPath": ".status.progress.percent",
        "description": "Training steps done, in percent.",
    },
    {
        "name": "Eval Loss",
        "type": "number",
        "jsonPath": ".status.metrics.evalLoss",
        "description": "Validation loss of the tuned model.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Model",
        "type": "string",
        "priority": 1,
        "jsonPath": ".spec.baseModel.uri",
        "description": "Base model.",
    },
    {
        "name": "Method",
        "type": "string",
        "priority": 1,
        "jsonPath": ".spec.peft.method",
        "description": "qlora or lora.",
    },
    {
        "name": "Job",
        "type": "string",
        "priority": 1,
        "jsonPath": ".status.jobName",
        "description": "Trainer Job.",
    },
    {
        "name": "Message",
        "type": "string",
        "priority": 1,
        "jsonPath": ".status.message",
        "description": "What happened.",
    },
]


def spec_schema() -> Schema:
    schema = to_structural(FineTuneJobSpec.model_json_schema(by_alias=True, mode="validation"))
    _apply_object_defaults(schema, FineTuneJobSpec)
    schema["x-kubernetes-validations"] = immutability_rules(schema)
    return schema


def status_schema() -> Schema:
    schema = to_structural(FineTuneJobStatus.model_json_schema(by_alias=True, mode="serialization"))
    _strip_defaults(schema)
    return schema


def immutability_rules(spec: Schema) -> list[dict[str, str]]:
    """One transition rule per spec field: everything but `suspend` is fixed at creation.

    Presence is compared too, so adding or removing an optional field is refused like changing it.
    """
    rules = []
    for name in spec["properties"]:
        if name in MUTABLE_SPEC_FIELDS:
            continue
        rules.append(
            {
                "rule": f"has(self.{name}) == has(oldSelf.{name}) && (!has(self.{name}) || self.{name} == oldSelf.{name})",
                "message": f"spec.{name} is immutable after creation: only spec.suspend may change "
                "(create a new FineTuneJob instead)",
                "fieldPath": f".{name}",
                "reason": "FieldValueForbidden",
            }
        )
    return rules


def metadata_schema() -> Schema:
    """The API server allows only `name` and `generateName` restrictions under `metadata`, and no
    description; CEL over `metadata.name` cannot name it as its field path, so a plain maxLength does it:
    the child Job is named <name>-train and its pods add a suffix."""
    return {"type": "object", "properties": {"name": {"type": "string", "maxLength": meta.MAX_NAME_LENGTH}}}


def open_api_schema() -> Schema:
    return {
        "type": "object",
        "description": normalise_description(FineTuneJob.__doc__ or ""),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object: ftjob.dev/v1alpha1."},
            "kind": {"type": "string", "description": "Kind of this object: FineTuneJob."},
            "metadata": metadata_schema(),
            "spec": spec_schema(),
            "status": status_schema(),
        },
    }


def build_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "ftjob", "app.kubernetes.io/part-of": "ftjob"},
        },
        "spec": {
            "group": meta.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": meta.KIND,
                "listKind": f"{meta.KIND}List",
                "plural": meta.PLURAL,
                "singular": meta.SINGULAR,
                "shortNames": list(meta.SHORT_NAMES),
                "categories": list(meta.CATEGORIES),
            },
            "versions": [
                {
                    "name": meta.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": open_api_schema()},
                }
            ],
        },
    }


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside `X`, `X | None`, `Annotated[X, ...]` or `list[X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType, list, typing.Annotated):
        for arg in get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _apply_object_defaults(schema: Schema, model: type[BaseModel]) -> None:
    """Default every optional sub-object without required fields to `{}`, so the API server fills in its
    nested defaults and the stored object shows the full, resolved configuration."""
    props = schema.get("properties", {})
    for name, field in model.model_fields.items():
        key = field.alias or name
        sub = props.get(key)
        nested = _model_of(field.annotation)
        if sub is None or nested is None:
            continue
        target = sub["items"] if sub.get("type") == "array" else sub
        _apply_object_defaults(target, nested)
        is_optional_object = (
            field.default_factory is not None
            and sub.get("type") == "object"
            and not sub.get("required")
            and "default" not in sub
        )
        if is_optional_object:
            sub["default"] = {}


def _strip_defaults(node: Schema) -> None:
    # Status is written by the operator alone; defaults there would only invent values.
    node.pop("default", None)
    for sub in node.get("properties", {}).values():
        _strip_defaults(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            _strip_defaults(node[key])
