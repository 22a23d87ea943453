"""The API reference (docs/api-reference.md), rendered from the same structural schema as the CRD."""

from __future__ import annotations

import json
from typing import Any

from ftjob.api import meta

from .structural import Schema


def _type_label(node: Schema) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = node.get("type", "object")
    if kind == "array":
        return f"list of {_type_label(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map of {_type_label(node['additionalProperties'])}"
    return str(kind)


def _constraints(node: Schema) -> str:
    parts: list[str] = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    for key, symbol in (("minimum", ">="), ("maximum", "<=")):
        if key in node:
            strict = node.get("exclusive" + key[0].upper() + key[1:]) is True
            parts.append(f"{symbol.replace('=', '') if strict else symbol} {node[key]}")
    if "maxLength" in node:
        parts.append(f"max {node['maxLength']} chars")
    if "maxItems" in node:
        parts.append(f"max {node['maxItems']} items")
    if node.get("x-kubernetes-validations"):
        parts.append("; ".join(rule["message"] for rule in node["x-kubernetes-validations"]))
    return "; ".join(parts)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _section(title: str, node: Schema, path: str, out: list[str]) -> None:
    props: dict[str, Schema] = node.get("properties", {})
    if not props:
        return
    required = set(node.get("required", []))
    out.append(f"### `{path}`\n")
    if node.get("description"):
        out.append(node["description"] + "\n")
    out.append("| Field | Type | Default | Description | Constraints |")
    out.append("|---|---|---|---|---|")
    nested: list[tuple[str, Schema]] = []
    for name, sub in props.items():
        default = (
            "required"
            if name in required
            else (f"`{json.dumps(sub['default'])}`" if "default" in sub else "")
        )
        out.append(
            f"| `{name}` | {_type_label(sub)} | {_cell(default)} | {_cell(sub.get('description', ''))} "
            f"| {_cell(_constraints(sub))} |"
        )
        target = sub.get("items") if sub.get("type") == "array" else sub
        if isinstance(target, dict) and target.get("properties"):
            nested.append((f"{path}.{name}" + ("[]" if sub.get("type") == "array" else ""), target))
    out.append("")
    for sub_path, sub in nested:
        _section(sub_path, sub, sub_path, out)


def render_api_reference(crd: dict[str, Any]) -> str:
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    out = [
        f"# FineTuneJob API reference ({meta.API_VERSION})",
        "",
        "Generated from the pydantic model in `src/ftjob/api/` by `ftjob generate`; do not edit by hand.",
        "",
        f"Kind `{meta.KIND}`, plural `{meta.PLURAL}`, short name `{', '.join(meta.SHORT_NAMES)}`, namespaced. "
        f"Names may have at most {meta.MAX_NAME_LENGTH} characters. Every spec field except `suspend` is "
        "immutable after creation.",
        "",
        "## Columns of `kubectl get ftj`",
        "",
        "| Column | JSONPath | Shown |",
        "|---|---|---|",
    ]
    for col in version["additionalPrinterColumns"]:
        out.append(
            f"| {col['name']} | `{col['jsonPath']}` | {'-o wide' if col.get('priority') else 'always'} |"
        )
    out += ["", "## Spec", ""]
    _section("spec", schema["properties"]["spec"], "spec", out)
    out += ["## Status", ""]
    _section("status", schema["properties"]["status"], "status", out)
    return "\n".join(out).rstrip() + "\n"
