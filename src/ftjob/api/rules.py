"""Per-field rules that a JSON schema keyword cannot say, checked twice with the same words: by pydantic
(`ftjob validate`, the operator, the trainer) and, as a CEL rule in the generated CRD, by the API server
at `kubectl apply` time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema


@dataclass(frozen=True)
class FieldRule:
    """Use inside `Annotated[...]`, after the field's own constraints (which are checked first)."""

    holds: Callable[[Any], bool]
    """The rule in Python."""
    cel: str
    """The same rule in CEL, over `self` (the field's value)."""
    message: str
    """What is wrong, said the same way by both."""

    def check(self, value: Any) -> Any:
        if not self.holds(value):
            raise ValueError(self.message)
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out.setdefault("x-kubernetes-validations", []).append({"rule": self.cel, "message": self.message})
        return out
