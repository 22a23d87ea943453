"""One way to say what is wrong with a manifest: `spec.path: message (got value)`.

Used by the operator (InvalidSpec conditions and Events), the CLI (`ftjob validate`) and the tests.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from .spec import SpecViolations
from .uris import mask_userinfo

_MAX_VALUE_CHARS = 120
_MAX_KEY_CHARS = 63

_TEMPLATES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "string_too_short": "must be at least {min_length} characters",
    "string_too_long": "must be at most {max_length} characters",
    "too_short": "must have at least {min_length} items",
    "too_long": "must have at most {max_length} items",
    "string_pattern_mismatch": "must match {pattern}",
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be a list",
}


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not (part.isprintable() and len(part) <= _MAX_KEY_CHARS):
            # A key from the manifest: it must not break the one-line message or make it huge.
            out += f"[{show_value(part)}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def show_value(value: Any) -> str:
    """The value as JSON, cut at _MAX_VALUE_CHARS. Encoding stops as soon as that much is known: the value
    may be huge (a YAML alias expands to millions of items without taking memory until serialised)."""
    chunks: list[str] = []
    size = 0
    try:
        for chunk in json.JSONEncoder(default=reprlib.repr).iterencode(value):
            chunks.append(chunk)
            size += len(chunk)
            if size > _MAX_VALUE_CHARS:
                break
        text = "".join(chunks)
    except (TypeError, ValueError, RecursionError):  # keys JSON cannot hold, a value that contains itself
        text = reprlib.repr(value)
    # Masked before cutting, so that a cut never leaves a password without the "@" that marks it.
    text = mask_userinfo(text)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def _message(err: ErrorDetails) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}".replace("'", "")
    template = _TEMPLATES.get(kind)
    if template is not None:
        try:
            return template.format(**ctx)
        except (KeyError, IndexError):
            pass
    msg = err["msg"]
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def format_validation_errors(exc: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem, each naming the field path, the rule and the bad value.

    `prefix` is prepended to every path (e.g. "spec" when the spec alone was validated).
    """
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = ([prefix] if prefix else []) + [p for p in err["loc"] if not _is_union_tag(p)]
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, SpecViolations):
            for v in error.violations:
                where = _path([*loc, v.path])
                lines.append(f"{where}: {v.message} (got {show_value(v.value)})")
            continue
        where = _path(loc) or "(root)"
        if err["type"] in ("missing", "extra_forbidden"):
            lines.append(f"{where}: {_message(err)}")
        else:
            lines.append(f"{where}: {_message(err)} (got {show_value(err['input'])})")
    return _dedupe(lines)


def _is_union_tag(part: int | str) -> bool:
    # pydantic adds the branch name ("str", "int", "function-after[...]") to locations inside unions.
    return isinstance(part, str) and (part in {"str", "int", "float", "bool", "none"} or "[" in part)


def _dedupe(lines: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for line in lines:
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out
