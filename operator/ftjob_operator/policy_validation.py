"""Validated: whether the spec can run on a cluster at all (schema, a loopback endpoint, pod-local paths).

A spec that cannot fails at once, before any Job exists; a generation validated before is never failed later.
"""

from __future__ import annotations

from typing import Final

from pydantic import ValidationError

from ftjob.api import FineTuneJobSpec, format_validation_errors
from ftjob.api.conditions import FAILED, VALIDATED
from ftjob.api.storage import loopback_endpoint_problem

from .names import JsonDict
from .redact import redact
from .settings import OperatorSettings
from .status_builder import StatusBuilder

LOCAL_PATH_ON_CLUSTER: Final = "LocalPathOnCluster"
"""A model or output location on the pod's own filesystem, which nothing backs on a cluster."""

LOOPBACK_ENDPOINT: Final = "LoopbackEndpoint"
"""spec.storage.endpointUrl on loopback: in the trainer pod that is the pod itself."""


def invalid_spec(b: StatusBuilder, exc: ValidationError) -> JsonDict:
    problems = format_validation_errors(exc, prefix="spec")
    message = "Invalid spec: " + "; ".join(problems)
    if validated_before(b):
        # This very generation passed validation already: the spec did not change, the reader did (a
        # newer CRD read by an older operator). Never a terminal InvalidSpec for a job that may be
        # training: the status stays as it was, and the Job is left alone until an operator that
        # understands the spec takes over.
        kept = dict(b.old)
        kept["message"] = redact(
            "This operator cannot read the spec it validated before (is the CRD newer than the operator?); "
            "the job is left as it is: " + message
        )[:4096]
        return kept
    b.conditions.set(VALIDATED, "False", "InvalidSpec", message)
    b.conditions.set(FAILED, "True", "InvalidSpec", message)
    return b.finish("Failed", message)


def unreachable_location(
    b: StatusBuilder, spec: FineTuneJobSpec, settings: OperatorSettings
) -> JsonDict | None:
    """The Failed status of a spec naming a place the trainer pod cannot reach (None: every place is fine)."""
    endpoint = spec.storage.endpoint_url
    loopback = (
        loopback_endpoint_problem(endpoint) if endpoint and not settings.allow_loopback_endpoints else None
    )
    if loopback is not None and not validated_before(b):
        message = (
            f"spec.storage.endpointUrl: {endpoint} {loopback}; use the object store's Service or address."
        )
        b.conditions.set(VALIDATED, "False", LOOPBACK_ENDPOINT, message)
        b.conditions.set(FAILED, "True", LOOPBACK_ENDPOINT, message)
        return b.finish("Failed", message)
    local = local_path_fields(spec)
    if local and not validated_before(b):
        message = (
            "; ".join(f"spec.{path}: {uri} is a path inside the pod" for path, uri in local)
            + ". On a cluster the trainer pod has only temporary volumes (a FineTuneJob cannot mount one), so "
            "a model read from there does not exist and results written there vanish with the pod; use s3:// "
            "(or hf:// for the model). `ftjob local` runs such specs on this machine."
        )
        b.conditions.set(VALIDATED, "False", LOCAL_PATH_ON_CLUSTER, message)
        b.conditions.set(FAILED, "True", LOCAL_PATH_ON_CLUSTER, message)
        return b.finish("Failed", message)
    return None


def local_path_fields(spec: FineTuneJobSpec) -> list[tuple[str, str]]:
    """(field path, value) of every location that would be a path in the trainer pod's filesystem.

    The spec cannot mount volumes, so on a cluster such a path is backed by nothing that outlives the pod.
    """
    found: list[tuple[str, str]] = []
    if not spec.base_model.uri.startswith(("hf://", "s3://")):
        found.append(("baseModel.uri", spec.base_model.uri))
    if not spec.output.uri.startswith("s3://"):
        found.append(("output.uri", spec.output.uri))
    return found


def validated_before(b: StatusBuilder) -> bool:
    """Validated=True was already recorded for the generation being derived."""
    previous = b.conditions.previous(VALIDATED) or {}
    return (
        previous.get("status") == "True"
        and b.generation is not None
        and previous.get("observedGeneration") == b.generation
    )


def mark_valid(b: StatusBuilder) -> None:
    b.conditions.set(VALIDATED, "True", "SpecValid", "The spec passed validation.")
