"""Small value types shared by several spec sections."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from .meta import ApiModel

# Kubernetes resource.Quantity, as the API server itself validates it.
QUANTITY_PATTERN = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"


def _quantity_to_str(value: Any) -> Any:
    # YAML turns `cpu: 8` into an int; Kubernetes accepts both, so do we.
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return str(value)
    return value


def _check_quantity(value: str) -> str:
    if not re.match(QUANTITY_PATTERN, value):
        raise ValueError("must be a Kubernetes quantity such as 8, 500m or 32Gi")
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_to_str),
    Field(max_length=64),
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]

DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"

ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
SecretKey = Annotated[str, Field(min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN)]


class SecretKeyRef(ApiModel):
    """A key of a Secret in the FineTuneJob's namespace. The operator never reads it: the trainer pod gets
    it through an environment variable filled by the kubelet."""

    name: ObjectName
    """Name of the Secret."""
    key: SecretKey
    """Key inside the Secret."""
