"""Lenient reading of a spec written by a newer version (forward compatibility).

What a user writes is checked strictly (`extra="forbid"`: a typo is an error). What is read back from the
API server, or handed to the trainer by the operator, may carry fields that a newer CRD added (with
defaults) and that this version does not know yet: those are ignored and reported, never an error.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .spec import FineTuneJobSpec


def unknown_field_paths(exc: ValidationError) -> list[str]:
    """The dotted paths of the fields a strict validation refused as unknown."""
    return [
        ".".join(str(part) for part in error["loc"])
        for error in exc.errors()
        if error["type"] == "extra_forbidden"
    ]


def parse_spec_leniently(data: Any) -> tuple[FineTuneJobSpec, list[str]]:
    """(the spec with unknown fields ignored, the dotted paths of those fields).

    Raises pydantic.ValidationError when a known field breaks a rule, as strict validation would.
    """
    try:
        return FineTuneJobSpec.model_validate(data), []
    except ValidationError as exc:
        unknown = unknown_field_paths(exc)
        if not unknown:
            raise
    return FineTuneJobSpec.model_validate(data, extra="ignore"), unknown
