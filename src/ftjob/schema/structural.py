"""Turn pydantic's JSON Schema into a Kubernetes structural schema.

The API server rejects `$ref`, `$defs`, `type: null`, `additionalProperties: false`, numeric
`exclusiveMinimum`, `propertyNames` and `title`-less oddities that pydantic emits; this module inlines and
rewrites them (the approach of kube-rs's StructuralSchemaRewriter).
"""

from __future__ import annotations

import copy
import re
from typing import Any

Schema = dict[str, Any]

_DROP_KEYS = {"title", "$defs", "examples", "discriminator"}


def to_structural(root: Schema) -> Schema:
    """Inline references and rewrite every node of a pydantic JSON Schema into structural form."""
    defs: dict[str, Schema] = root.get("$defs", {})
    return _rewrite(root, defs, stack=())


def _resolve(ref: str, defs: dict[str, Schema]) -> tuple[str, Schema]:
    name = ref.rsplit("/", 1)[-1]
    if name not in defs:
        raise KeyError(f"unresolvable $ref {ref}")
    return name, defs[name]


def _rewrite(node: Schema, defs: dict[str, Schema], stack: tuple[str, ...]) -> Schema:
    node = copy.deepcopy(node)
    if "$ref" in node:
        name, target = _resolve(node.pop("$ref"), defs)
        if name in stack:
            raise ValueError(f"recursive type {name} cannot be expressed in a structural schema")
        siblings = node
        node = {**copy.deepcopy(target), **siblings}
        stack = (*stack, name)
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        node = {**inner, **node}
        return _rewrite(node, defs, stack)

    node = _strip_null_branch(node, defs, stack)

    out: Schema = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "default" and value is None:
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key == "description":
            out[key] = normalise_description(value)
            continue
        if key == "properties":
            out[key] = {name: _rewrite(sub, defs, stack) for name, sub in value.items()}
            continue
        if key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _rewrite(value, defs, stack)
            continue
        if key == "anyOf":
            out[key] = [_rewrite(sub, defs, stack) for sub in value]
            continue
        if key == "patternProperties":
            # dict[PatternKey, V]: the value schema becomes additionalProperties. The key pattern stays in
            # pydantic only: a CEL rule over map keys (`self.all(k, k.matches(...))`) cannot be bounded (keys
            # have no maxLength in a structural schema), and the API server refuses rules whose estimated
            # cost exceeds its budget. Bad keys surface as InvalidSpec, and the Job's own validation.
            ((_, sub),) = value.items()
            out["additionalProperties"] = _rewrite(sub, defs, stack)
            continue
        if key == "propertyNames":
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
            continue
        if key == "x-kubernetes-validations":
            out.setdefault(key, []).extend(value)
            continue
        out[key] = value

    if "properties" in out and "type" not in out:
        out["type"] = "object"
    if "enum" in out and "type" not in out:
        out["type"] = _type_of(out["enum"][0])
    return _ordered(out)


_KEY_ORDER = [
    "type",
    "description",
    "default",
    "nullable",
    "enum",
    "format",
    "pattern",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "maxProperties",
    "anyOf",
    "x-kubernetes-int-or-string",
    "required",
    "properties",
    "items",
    "additionalProperties",
]


def _ordered(node: Schema) -> Schema:
    """A stable, readable key order: what a reader looks for first comes first."""
    rank = {k: i for i, k in enumerate(_KEY_ORDER)}
    return dict(sorted(node.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def _strip_null_branch(node: Schema, defs: dict[str, Schema], stack: tuple[str, ...]) -> Schema:
    """`anyOf: [X, {type: null}]` -> X with `nullable: true` (keeping the outer description/default)."""
    branches = node.get("anyOf")
    if not branches:
        return node
    non_null = [b for b in branches if b.get("type") != "null"]
    if len(non_null) == len(branches):
        return node
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    if len(non_null) == 1:
        merged = {**_rewrite(non_null[0], defs, stack), **rest}
    else:
        merged = {**rest, "anyOf": non_null}
    merged["nullable"] = True
    return merged


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def normalise_description(text: str) -> str:
    """Docstrings wrap lines; `kubectl explain` wraps text itself."""
    return re.sub(r"\s+", " ", text).strip()


def walk(node: Schema, path: str = "") -> list[tuple[str, Schema]]:
    """Every schema node with its field path (`.spec.peft.r`, `.spec.resources.tolerations[].key`)."""
    found = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        found.extend(walk(sub, f"{path}.{name}"))
    if isinstance(node.get("items"), dict):
        found.extend(walk(node["items"], f"{path}[]"))
    if isinstance(node.get("additionalProperties"), dict):
        found.extend(walk(node["additionalProperties"], f"{path}{{}}"))
    return found
