"""Compute resources and placement of the trainer pod."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .common import DNS_SUBDOMAIN_PATTERN, Quantity
from .meta import ApiModel

MAX_GPUS_PER_NODE = 8
MAX_NODES = 16

LabelKey = Annotated[
    str,
    Field(min_length=1, max_length=317, pattern=r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"),
]
LabelValue = Annotated[str, Field(max_length=63, pattern=r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")]


class Toleration(ApiModel):
    """A Kubernetes toleration, so the pod can land on tainted (GPU) nodes."""

    key: LabelKey | None = None
    """Taint key; empty with operator `Exists` tolerates every taint."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """`Equal` matches the value; `Exists` matches any value."""
    value: LabelValue | None = None
    """Taint value for `Equal`."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to tolerate; empty tolerates all effects."""
    toleration_seconds: int | None = Field(default=None, ge=0, le=10**9)
    """For `NoExecute`: how long the pod stays bound after the taint appears."""


class ResourcesSpec(ApiModel):
    """What the trainer pod asks for and where it may run."""

    gpus: int = Field(default=1, ge=0, le=MAX_GPUS_PER_NODE)
    """GPUs per node (a `limits` entry of `gpuResourceName` on each trainer pod). 0 runs on the CPU with plain
    LoRA. Above 1, the trainer runs one process per GPU through torchrun (data parallel)."""
    nodes: int = Field(default=1, ge=1, le=MAX_NODES)
    """Trainer pods (nodes) training together. Above 1, the Job is an Indexed Job with one pod per node and a
    headless Service for their rendezvous; the run succeeds when the pod of index 0 does."""
    distributed_strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    """How several GPUs (`gpus` x `nodes` above 1) share the model. `ddp`: every GPU holds the whole model (for
    QLoRA the 4-bit base) and the adapters' gradients are averaged; the fastest while the model fits one GPU.
    `fsdp`: the base weights (4-bit, stored as bf16), the adapters and their optimiser state are sharded
    across every GPU of the run and gathered layer by layer (FSDP), which leaves each GPU more room for
    activations. `auto`: `ddp` unless the trainer estimates that a replicated model would not fit the GPU's
    memory (or `training.gpuMemoryLimitGib`) even with micro-batch 1 and every layer recomputed; the choice
    and its reason are logged and recorded in the manifest."""
    gpu_resource_name: str = Field(
        default="nvidia.com/gpu", max_length=253, pattern=r"^[a-z0-9.-]+/[a-z0-9.-]+$"
    )
    """Extended resource name of the GPU device plugin."""
    cpu: Quantity = "4"
    """CPU request and limit."""
    memory: Quantity = "32Gi"
    """Memory request and limit (the base model is loaded in host memory first)."""
    shm_size: Quantity = "8Gi"
    """Size of `/dev/shm` (a memory-backed volume; data loader workers share tensors through it)."""
    scratch_size: Quantity | None = None
    """Size limit of the work directory (downloaded model, data, checkpoints); unset means no limit."""
    node_selector: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=32)
    """Node labels the pod must land on, e.g. `nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3`."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Taints the pod tolerates."""


class SchedulingSpec(ApiModel):
    """Queueing and priority."""

    queue_name: str | None = Field(default=None, min_length=1, max_length=63, pattern=DNS_SUBDOMAIN_PATTERN)
    """Kueue LocalQueue: the Job is created suspended with label `kueue.x-k8s.io/queue-name` and runs when
    Kueue admits it."""
    priority_class_name: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN
    )
    """PriorityClass of the trainer pod."""
