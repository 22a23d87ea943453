"""The FineTuneJob spec, assembled from its sections, with the rules that span sections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field, model_validator

from .common import DNS_SUBDOMAIN_PATTERN
from .data import DataSpec
from .evaluation import EvaluationSpec
from .meta import ApiModel
from .model_source import BaseModelSpec
from .output import CheckpointingSpec, OutputSpec
from .peft import ALL_LINEAR, PeftSpec
from .resources import ResourcesSpec, SchedulingSpec
from .storage import StorageSpec
from .training import TrainingSpec

IMAGE_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9._/:@-]*$"


@dataclass(frozen=True)
class Violation:
    """One broken cross-field rule: where (relative to the spec), what, and the offending value."""

    path: str
    message: str
    value: Any


class SpecViolations(ValueError):
    """Raised by the spec's model validator; `ftjob.api.errors` turns it into one line per violation."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        super().__init__("; ".join(f"{v.path}: {v.message}" for v in violations))


class FineTuneJobSpec(ApiModel):
    """What to fine-tune, on which data, how, and where the results go."""

    base_model: BaseModelSpec
    """The pretrained model to adapt."""
    data: DataSpec
    """Training and validation data, and how it is cleaned."""
    output: OutputSpec
    """Where the adapter, evaluation, manifest and checkpoints are written."""
    peft: PeftSpec = Field(default_factory=PeftSpec)
    """Adapter method (QLoRA or LoRA) and its settings."""
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    """Optimisation hyperparameters."""
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    """Evaluation of the tuned model against the base model."""
    checkpointing: CheckpointingSpec = Field(default_factory=CheckpointingSpec)
    """Checkpoint frequency, retention and resumption."""
    storage: StorageSpec = Field(default_factory=StorageSpec)
    """How `s3://` URIs are reached, and with which credentials."""
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    """GPUs, CPU, memory, shared memory and placement of the trainer pod."""
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    """Kueue queue and priority."""
    image: str | None = Field(default=None, min_length=1, max_length=512, pattern=IMAGE_PATTERN)
    """Trainer image, overriding the operator's default."""
    service_account_name: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN
    )
    """ServiceAccount of the trainer pod (e.g. one bound to an IAM role); the operator's default otherwise."""
    suspend: bool = False
    """Stop the job (the trainer checkpoints on SIGTERM) while true; resume from the checkpoint when set back
    to false. The only field that may change after creation."""
    active_deadline_seconds: int | None = Field(default=None, ge=1, le=31_536_000)
    """Fail the job when it has run for longer than this (unset: the operator's default, 7 days)."""
    backoff_limit: int = Field(default=2, ge=0, le=100)
    """Retries of the trainer pod after infrastructure errors (user errors fail at once)."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, le=31_536_000)
    """Delete the finished Job (not the FineTuneJob, whose status keeps the results) this many seconds after
    the final status was written. The operator deletes it; the Job itself carries no TTL."""

    @model_validator(mode="after")
    def _cross_field_rules(self) -> FineTuneJobSpec:
        violations = cross_field_violations(self)
        if violations:
            raise SpecViolations(violations)
        return self


def cross_field_violations(spec: FineTuneJobSpec) -> list[Violation]:
    """Rules that relate several fields, which the CRD's per-field schema cannot express."""
    found: list[Violation] = []
    if spec.data.validation_uri is not None and spec.data.validation_split is not None:
        found.append(
            Violation(
                "data.validationSplit",
                "cannot be set together with data.validationUri; use one or the other",
                spec.data.validation_split,
            )
        )
    quant = spec.peft.quantization
    if spec.peft.method == "qlora" and quant.bits != 4:
        found.append(Violation("peft.quantization.bits", "qlora requires 4-bit quantization", quant.bits))
    if spec.peft.method == "qlora" and quant.quant_type not in ("nf4", "fp4"):
        found.append(Violation("peft.quantization.quantType", "qlora requires nf4 or fp4", quant.quant_type))
    modules = spec.peft.target_modules
    if ALL_LINEAR in modules and len(modules) > 1:
        found.append(
            Violation("peft.targetModules", f"'{ALL_LINEAR}' must be the only entry when used", modules)
        )
    if len(set(modules)) != len(modules):
        found.append(Violation("peft.targetModules", "must not repeat a module name", modules))
    metrics = spec.evaluation.metrics
    if len(set(metrics)) != len(metrics):
        found.append(Violation("evaluation.metrics", "must not repeat a metric", metrics))
    if spec.peft.alpha > 16 * spec.peft.r:
        found.append(
            Violation(
                "peft.alpha",
                f"is more than 16x the rank (r={spec.peft.r}); this scales updates so much that training diverges",
                spec.peft.alpha,
            )
        )
    gate = spec.evaluation.gate
    if gate is not None and gate.metric != "evalLoss" and gate.metric not in metrics:
        found.append(
            Violation("evaluation.gate.metric", "must be evalLoss or one of evaluation.metrics", gate.metric)
        )
    if (
        gate is not None
        and gate.metric != "evalLoss"
        and gate.min_improvement is not None
        and not spec.evaluation.compare_with_base
    ):
        found.append(
            Violation(
                "evaluation.gate.minImprovement",
                "needs evaluation.compareWithBase: the base model's score is what it improves on",
                gate.min_improvement,
            )
        )
    if spec.base_model.token_secret_ref is not None and not spec.base_model.uri.startswith("hf://"):
        found.append(
            Violation(
                "baseModel.tokenSecretRef",
                "is only used for hf:// models",
                spec.base_model.token_secret_ref.name,
            )
        )
    resources = spec.resources
    if resources.distributed_strategy == "fsdp" and resources.gpus == 0:
        found.append(
            Violation(
                "resources.distributedStrategy",
                "fsdp needs GPUs (sharding runs over NCCL on CUDA devices); use ddp or auto with gpus: 0",
                resources.distributed_strategy,
            )
        )
    elif resources.distributed_strategy == "fsdp" and resources.gpus * resources.nodes < 2:
        found.append(
            Violation(
                "resources.distributedStrategy",
                "fsdp shards the model across several GPUs: set gpus x nodes to 2 or more, or use auto",
                resources.distributed_strategy,
            )
        )
    if spec.output.uri.rstrip("/") in (spec.data.train_uri, spec.data.validation_uri):
        found.append(Violation("output.uri", "must be a prefix, not one of the input files", spec.output.uri))
    return found
