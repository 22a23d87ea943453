"""Several trainer processes (pure): torchrun in the pod, an Indexed Job with one pod per node, and the
headless Service through which the nodes find each other.

- One node, several GPUs: a plain Job; the container runs `ftjob-train launch --standalone ...` (torchrun,
  one process per GPU).
- Several nodes: completion mode Indexed (completions = parallelism = nodes), pod hostnames
  `<job>-<index>` under the Service (`subdomain`), torchrun's c10d rendezvous on the pod of index 0
  (JOB_COMPLETION_INDEX is each pod's index), and a success policy: the run has succeeded when index 0
  (global rank 0, which publishes everything) has.
- A failed pod of index 1 or above is replaced by the Job controller; torchrun's agents on the other nodes
  restart their workers and wait for it to rejoin (`--max-restarts`, as many as the Job's backoffLimit),
  and all workers restart from the last checkpoint (tests/e2e/test_distributed_pods.py). The launcher
  keeps torchrun from sharing its rendezvous store with the workers, without which the replacement never
  learns the workers' MASTER_ADDR (trainer_image/ftjob_trainer/distributed.py).
- Index 0 is different: its torchrun agent hosts the c10d rendezvous store, so when that pod fails, the
  agents of every other node lose the store and exit too: every pod fails and the Job controller replaces
  them all for a fresh rendezvous. One such restart costs up to N pod failures, so the Job's backoffLimit
  is the FineTuneJob's times the number of nodes (render.py): the user's limit counts gang restarts.
"""

from __future__ import annotations

from typing import Final

from ftjob.api import FineTuneJobSpec

from .names import JsonDict, child_labels, job_name, owner_reference, service_name

RENDEZVOUS_PORT: Final = 29400
LAUNCH: Final = ("ftjob-train", "launch")
"""torchrun with the trainer in every worker, exiting with the trainer's exit code (torchrun exits 1 whatever
failed, which the podFailurePolicy could not tell apart) and 143 on SIGTERM (see the trainer's
distributed.py); the options after it are torchrun's."""


def processes_per_node(spec: FineTuneJobSpec) -> int:
    return max(1, spec.resources.gpus)


def world_size(spec: FineTuneJobSpec) -> int:
    return spec.resources.nodes * processes_per_node(spec)


def is_distributed(spec: FineTuneJobSpec) -> bool:
    return world_size(spec) > 1


def is_multi_node(spec: FineTuneJobSpec) -> bool:
    return spec.resources.nodes > 1


def launcher_command(spec: FineTuneJobSpec, meta: JsonDict) -> list[str]:
    """The container's command for a distributed run."""
    per_node = processes_per_node(spec)
    if not is_multi_node(spec):
        return [*LAUNCH, "--standalone", "--nnodes=1", f"--nproc-per-node={per_node}"]
    name = meta["name"]
    endpoint = f"{job_name(name)}-0.{service_name(name)}:{RENDEZVOUS_PORT}"
    return [
        *LAUNCH,
        f"--nnodes={spec.resources.nodes}",
        f"--nproc-per-node={per_node}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={endpoint}",
        f"--rdzv-id={meta['uid']}",
        f"--max-restarts={spec.backoff_limit}",
    ]


def shutdown_timeout_seconds(grace_period_seconds: int) -> int:
    """How long torchrun lets its workers save a checkpoint after forwarding SIGTERM (its default, 30 s, is
    shorter than a checkpoint upload): the pod's grace period, less a margin for torchrun's own exit."""
    return max(5, grace_period_seconds - 10)


def indexed_job_fields(spec: FineTuneJobSpec, meta: JsonDict) -> JsonDict:
    """What a multi-node Job adds to its spec."""
    nodes = spec.resources.nodes
    return {
        "completionMode": "Indexed",
        "completions": nodes,
        "parallelism": nodes,
        "successPolicy": {"rules": [{"succeededIndexes": "0"}]},
    }


def render_service(ftj: JsonDict) -> JsonDict:
    """Headless: DNS records for each pod (`<job>-<index>.<service>`), published before the pods are ready so
    the rendezvous can start."""
    meta = ftj["metadata"]
    name = meta["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(name),
            "namespace": meta["namespace"],
            "labels": child_labels(name),
            "ownerReferences": [owner_reference(ftj)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {"batch.kubernetes.io/job-name": job_name(name)},
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "protocol": "TCP"}],
        },
    }
