"""The whole FineTuneJob object as stored by the API server."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from .meta import API_VERSION, KIND, MAX_NAME_LENGTH, ApiModel
from .spec import FineTuneJobSpec
from .status import FineTuneJobStatus

assert (API_VERSION, KIND) == ("ftjob.dev/v1alpha1", "FineTuneJob")  # the Literals below must follow


class ObjectMeta(ApiModel):
    """The parts of metav1.ObjectMeta the project reads; everything else is kept as is."""

    model_config = ConfigDict(extra="allow")

    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)] | None = None
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class FineTuneJob(ApiModel):
    """A request to fine-tune a model into a LoRA adapter, and what became of it."""

    api_version: Literal["ftjob.dev/v1alpha1"] = Field(default="ftjob.dev/v1alpha1", alias="apiVersion")
    kind: Literal["FineTuneJob"] = "FineTuneJob"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: FineTuneJobSpec
    status: FineTuneJobStatus | None = None

    @classmethod
    def from_manifest(cls, doc: dict[str, Any]) -> FineTuneJob:
        return cls.model_validate(doc)
