"""The status the operator writes. Every field here is declared in the CRD (a structural schema prunes the
rest), and the operator writes nothing else."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .conditions import Phase
from .meta import ApiModel
from .uris import MAX_URI_LENGTH

Text = Annotated[str, Field(max_length=32768)]
ShortText = Annotated[str, Field(max_length=1024)]
Timestamp = Annotated[str, Field(max_length=64, json_schema_extra={"format": "date-time"})]
ArtifactUri = Annotated[str, Field(max_length=MAX_URI_LENGTH + 64)]
"""`spec.output.uri` (up to MAX_URI_LENGTH characters) with a path such as `/eval/report.md` appended."""
MetricMap = Annotated[dict[Annotated[str, Field(max_length=64)], float], Field(max_length=32)]


class Condition(ApiModel):
    """Shaped like metav1.Condition."""

    type: Annotated[str, Field(min_length=1, max_length=316)]
    """Condition type, e.g. `Succeeded`."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: Annotated[
        str, Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    ]
    """CamelCase reason, stable for automation."""
    message: Text = ""
    """Human-readable details."""
    last_transition_time: Timestamp
    """When the status last changed."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The `metadata.generation` this condition was computed from."""


class Progress(ApiModel):
    """Live training progress, from the trainer's progress records."""

    step: int = Field(default=0, ge=0)
    """Optimiser steps done."""
    total_steps: int = Field(default=0, ge=0)
    """Optimiser steps planned."""
    epoch: float = Field(default=0.0, ge=0.0)
    """Epochs done (fractional)."""
    percent: int = Field(default=0, ge=0, le=100)
    """Steps done as a percentage of the plan."""
    eta_seconds: int | None = Field(default=None, ge=0)
    """Estimated seconds until training ends."""
    loss: float | None = None
    """Latest training loss."""
    tokens_per_second: float | None = Field(default=None, ge=0.0)
    """Training throughput."""
    stage: ShortText | None = None
    """What the trainer is doing: `downloading`, `validating-data`, `training`, `evaluating`, `uploading`."""
    updated_at: Timestamp | None = None
    """When the trainer emitted this record."""


class DatasetStats(ApiModel):
    """What the data checks kept and dropped."""

    total_lines: int = Field(default=0, ge=0)
    """Non-empty lines read from the training file."""
    train_examples: int = Field(default=0, ge=0)
    """Examples used for training."""
    validation_examples: int = Field(default=0, ge=0)
    """Examples used for validation."""
    dropped: int = Field(default=0, ge=0)
    """Examples dropped, all reasons together."""
    dropped_by_reason: Annotated[dict[Annotated[str, Field(max_length=64)], int], Field(max_length=32)] = (
        Field(default_factory=dict)
    )
    """Dropped examples per reason (see the data report for samples with line numbers)."""
    truncated: int = Field(default=0, ge=0)
    """Examples longer than `maxSeqLength` tokens."""


class Metrics(ApiModel):
    """Evaluation results: losses, and task metrics of the tuned and the base model."""

    train_loss: float | None = None
    """Mean training loss of the run."""
    eval_loss: float | None = None
    """Validation loss of the tuned model."""
    perplexity: float | None = None
    """exp(eval loss)."""
    base_eval_loss: float | None = None
    """Validation loss of the base model."""
    tuned: MetricMap = Field(default_factory=dict)
    """Task metrics of the tuned model (0..1)."""
    base: MetricMap = Field(default_factory=dict)
    """Task metrics of the base model (0..1)."""


class Artifacts(ApiModel):
    """Where the results are."""

    adapter: ArtifactUri | None = None
    """The LoRA adapter (safetensors, adapter config, tokenizer)."""
    merged_model: ArtifactUri | None = None
    """The base model with the adapter merged, when requested."""
    eval_report: ArtifactUri | None = None
    """Readable evaluation report (Markdown, with the loss curve)."""
    eval_results: ArtifactUri | None = None
    """`eval.json`: every metric, base and tuned."""
    data_report: ArtifactUri | None = None
    """What the data checks found, with samples and line numbers."""
    manifest: ArtifactUri | None = None
    """Provenance: input hashes, versions, hyperparameters, metrics."""


class FineTuneJobStatus(ApiModel):
    """Observed state, written by the operator only."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The `metadata.generation` this status describes."""
    phase: Phase | None = None
    """One-word summary for display; conditions carry the detail."""
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Latest observations, one per type."""
    job_name: ShortText | None = None
    """Name of the trainer Job."""
    start_time: Timestamp | None = None
    """When a trainer pod first ran."""
    completion_time: Timestamp | None = None
    """When the job reached Succeeded or Failed."""
    attempts: int | None = Field(default=None, ge=0)
    """Trainer pods started so far."""
    progress: Progress | None = None
    """Live training progress."""
    dataset: DatasetStats | None = None
    """Data check results."""
    metrics: Metrics | None = None
    """Evaluation results."""
    artifacts: Artifacts | None = None
    """Result locations."""
    message: Text | None = None
    """What happened, in one or two sentences."""
