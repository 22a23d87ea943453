"""A small re-implementation of what the API server does with a CRD's structural schema on create/update:
defaulting, strict unknown-field rejection, OpenAPI value checks and CEL rules (x-kubernetes-validations,
transition rules with oldSelf), with messages shaped like the API server's.

It knows the rules the generated CRD uses; it is a test oracle, not a complete API server.
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from typing import Any

import celpy
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

Schema = dict[str, Any]
_ABSENT = object()


def apply_defaults(value: Any, schema: Schema) -> Any:
    """Fill absent fields with their schema defaults, recursively (defaults of defaulted objects too)."""
    value = copy.deepcopy(value)
    _default(value, schema)
    return value


def _default(value: Any, schema: Schema) -> None:
    if isinstance(value, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                _default(value[name], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default(item, schema["items"])
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for item in value.values():
            _default(item, schema["additionalProperties"])


def validate(obj: Any, schema: Schema, old: Any = _ABSENT, path: str = "") -> list[str]:
    """Every error the API server would report for `obj` (already defaulted), or [] if accepted."""
    errors: list[str] = []
    _check(obj, schema, old, path, errors)
    return errors


def _show(value: Any) -> str:
    return (
        json.dumps(value)
        if not isinstance(value, dict | list)
        else ("object" if isinstance(value, dict) else "array")
    )


def _type_ok(value: Any, schema: Schema) -> bool:
    if value is None:
        return bool(schema.get("nullable"))
    if schema.get("x-kubernetes-int-or-string"):
        return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)
    kind = schema.get("type")
    return {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        None: True,
    }[kind]


def _check(value: Any, schema: Schema, old: Any, path: str, errors: list[str]) -> None:
    where = path.lstrip(".") or "<root>"
    if not _type_ok(value, schema):
        expected = "integer or string" if schema.get("x-kubernetes-int-or-string") else schema.get("type")
        errors.append(f"{where}: Invalid value: {_show(value)}: {where} in body must be of type {expected}")
        return
    if value is None:
        return
    _check_scalar(value, schema, where, errors)
    if isinstance(value, dict):
        _check_object(value, schema, old, path, where, errors)
    if isinstance(value, list):
        _check_array(value, schema, old, path, where, errors)
    _check_cel(value, schema, old, path, where, errors)


def _check_scalar(value: Any, schema: Schema, where: str, errors: list[str]) -> None:
    def bad(msg: str) -> None:
        errors.append(f"{where}: Invalid value: {_show(value)}: {where} in body {msg}")

    if "enum" in schema and value not in schema["enum"]:
        bad("should be one of " + ", ".join(json.dumps(v) for v in schema["enum"]))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema:
            strict = schema.get("exclusiveMinimum") is True
            if value < schema["minimum"] or (strict and value == schema["minimum"]):
                bad(f"should be greater than {'' if strict else 'or equal to '}{schema['minimum']}")
        if "maximum" in schema:
            strict = schema.get("exclusiveMaximum") is True
            if value > schema["maximum"] or (strict and value == schema["maximum"]):
                bad(f"should be less than {'' if strict else 'or equal to '}{schema['maximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            bad(f"should be at least {schema['minLength']} chars long")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            bad(f"may not be longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            bad(f"should match '{schema['pattern']}'")


def _check_object(
    value: dict[str, Any], schema: Schema, old: Any, path: str, where: str, errors: list[str]
) -> None:
    props: dict[str, Schema] = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in value:
            errors.append(f"{(path + '.' + name).lstrip('.')}: Required value")
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(f"{where}: Too many: {len(value)}: must have at most {schema['maxProperties']} items")
    extra = schema.get("additionalProperties")
    for name, sub_value in value.items():
        sub_old = old.get(name, _ABSENT) if isinstance(old, dict) else _ABSENT
        if name in props:
            _check(sub_value, props[name], sub_old, f"{path}.{name}", errors)
        elif isinstance(extra, dict):
            _check(sub_value, extra, sub_old, f"{path}[{name}]", errors)
        elif props and not schema.get("x-kubernetes-preserve-unknown-fields") and path:
            # kubectl >= 1.27 asks for strict field validation: unknown fields are errors, not pruned.
            errors.append(f'unknown field "{(path + "." + name).lstrip(".")}"')


def _check_array(
    value: list[Any], schema: Schema, old: Any, path: str, where: str, errors: list[str]
) -> None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(
            f"{where}: Invalid value: {len(value)}: {where} in body should have at least {schema['minItems']} items"
        )
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{where}: Too many: {len(value)}: must have at most {schema['maxItems']} items")
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set" and len({json.dumps(v, sort_keys=True) for v in value}) != len(value):
        errors.append(f"{where}: Duplicate value: a set must not repeat items")
    if list_type == "map":
        keys = [tuple(item.get(k) for k in schema["x-kubernetes-list-map-keys"]) for item in value]
        if len(set(keys)) != len(keys):
            errors.append(f"{where}: Duplicate value: map keys must be unique")
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            # Transition rules inside lists only correlate for map-type lists; plain lists get no oldSelf.
            _check(item, items, _ABSENT, f"{path}[{i}]", errors)


@cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _check_cel(value: Any, schema: Schema, old: Any, path: str, where: str, errors: list[str]) -> None:
    for rule in schema.get("x-kubernetes-validations", []):
        text: str = rule["rule"]
        is_transition = "oldSelf" in text
        if is_transition and old is _ABSENT:
            continue
        activation = {"self": json_to_cel(value)}
        if is_transition:
            activation["oldSelf"] = json_to_cel(old)
        result = _program(text).evaluate(activation)
        if isinstance(result, CELEvalError):
            errors.append(f"{where}: Invalid value: {_show(value)}: rule error: {result}")
        elif not bool(result):
            field = (path + rule.get("fieldPath", "")).lstrip(".") or where
            kind = (
                "Forbidden"
                if rule.get("reason") == "FieldValueForbidden"
                else f"Invalid value: {_show(value)}"
            )
            errors.append(f"{field}: {kind}: {rule.get('message', text)}")
