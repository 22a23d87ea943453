"""JSON merge patches (RFC 7386) computed from two versions of a document."""

from __future__ import annotations

from typing import Any

from .names import JsonDict


def merge_patch(old: JsonDict, new: JsonDict) -> JsonDict:
    """The smallest merge patch turning `old` into `new`: removed keys become null, nested objects are
    diffed, lists and scalars are replaced whole (merge patches cannot address list items)."""
    patch: JsonDict = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        before: Any = old.get(key)
        if key in old and before == value:
            continue
        if isinstance(value, dict) and isinstance(before, dict):
            patch[key] = merge_patch(before, value)
        else:
            patch[key] = value
    return patch


def apply_merge_patch(doc: Any, patch: Any) -> Any:
    """RFC 7386 applied to plain JSON values."""
    if not isinstance(patch, dict):
        return patch
    result = dict(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result
