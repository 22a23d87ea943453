"""FineTuneJob -> batch/v1 Job: a pure function of the object and the operator's settings."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import OrderedDict
from decimal import Decimal
from typing import Final

from ftjob import contract
from ftjob.api import FineTuneJobSpec
from ftjob.api.lenient import parse_spec_leniently

from .names import LABEL_KUEUE_QUEUE, JsonDict, child_labels, job_name, owner_reference, service_name
from .render_distributed import (
    indexed_job_fields,
    is_distributed,
    is_multi_node,
    launcher_command,
    shutdown_timeout_seconds,
)
from .settings import OperatorSettings

TRAINER_UID: Final = 1000
WORKSPACE_VOLUME: Final = "workspace"
SHM_VOLUME: Final = "dshm"
TMP_VOLUME: Final = "tmp"
HF_HOME: Final = f"{contract.DEFAULT_WORKDIR}/hf-home"

logger = logging.getLogger(__name__)

_reported_unknown: set[str] = set()
_reported_lock = threading.Lock()
_parsed: OrderedDict[str, FineTuneJobSpec] = OrderedDict()
_PARSED_KEPT: Final = 2048
"""Parsed specs by their JSON text (which costs a fraction of validating them): a reconcile asks derive,
plan and render for the spec several times, and every poll re-derives every unfinished job. The models are
shared, so nothing may modify one."""


def validated_spec(ftj: JsonDict) -> FineTuneJobSpec:
    """The spec as the trainer will read it; raises pydantic.ValidationError when a rule is broken.

    Read leniently: the API server already refused what its CRD does not declare, so a field unknown here
    comes from a newer CRD (e.g. one with a defaulted field, upgraded under running jobs). It is ignored,
    and logged once per field for the life of the process.
    """
    raw = ftj.get("spec") or {}
    key = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    with _reported_lock:
        known = _parsed.get(key)
        if known is not None:
            _parsed.move_to_end(key)
            return known
    spec, unknown = parse_spec_leniently(raw)
    with _reported_lock:
        _parsed[key] = spec
        while len(_parsed) > _PARSED_KEPT:
            _parsed.popitem(last=False)
    if unknown:
        with _reported_lock:
            new = [path for path in unknown if path not in _reported_unknown]
            _reported_unknown.update(new)
        for path in new:
            logger.warning(
                "ignoring the field spec.%s, unknown to this operator (is the CRD newer than the operator?)",
                path,
            )
    return spec


def trainer_spec_json(spec: FineTuneJobSpec) -> str:
    """The trainer's configuration, without `suspend`: toggling suspend must not change the pod template,
    or the Job controller would refuse the update and a resumed pod would differ from the first."""
    doc = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc.pop("suspend", None)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def active_deadline_seconds(spec: FineTuneJobSpec, settings: OperatorSettings) -> int:
    """The spec's deadline, or the operator's default: no Job runs (and holds GPUs) forever."""
    if spec.active_deadline_seconds is not None:
        return spec.active_deadline_seconds
    return settings.default_active_deadline_seconds


WORKSPACE_PER_MEMORY: Final = 4
"""Without spec.resources.scratchSize, the work directory may hold this many times the pod's memory (the
model, which must fit in memory to load, a few checkpoints, the data); past it the kubelet evicts the pod
instead of filling the node's disk."""


def workspace_size_limit(spec: FineTuneJobSpec) -> str:
    if spec.resources.scratch_size is not None:
        return spec.resources.scratch_size
    return scale_quantity(spec.resources.memory, WORKSPACE_PER_MEMORY)


def scale_quantity(quantity: str, factor: int) -> str:
    """A Kubernetes quantity times an integer, in the same unit (`32Gi` x 4 = `128Gi`)."""
    match = re.fullmatch(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(.*)", quantity)
    if match is None:  # not a quantity: the API model refuses it before this is reached
        raise ValueError(f"not a quantity: {quantity!r}")
    number = Decimal(match.group(1)) * factor
    return f"{number.normalize():f}{match.group(2)}"


def is_kueue_managed(spec: FineTuneJobSpec) -> bool:
    return spec.scheduling.queue_name is not None


def render_job(ftj: JsonDict, settings: OperatorSettings) -> JsonDict:
    """The trainer Job of a FineTuneJob (whose metadata must carry name, namespace and uid)."""
    spec = validated_spec(ftj)
    meta = ftj["metadata"]
    name: str = meta["name"]
    labels = child_labels(name)
    job_labels = dict(labels)
    if is_kueue_managed(spec):
        job_labels[LABEL_KUEUE_QUEUE] = str(spec.scheduling.queue_name)

    job_spec: JsonDict = {
        "completions": 1,
        "parallelism": 1,
        # A failed gang costs up to one pod per node (when index 0 dies, its store goes with it and the
        # other agents fail too): the limit counts gang restarts, not pods.
        "backoffLimit": spec.backoff_limit * spec.resources.nodes,
        # Kueue admits a Job by unsuspending it: it must be created suspended, and only Kueue toggles it.
        "suspend": True if is_kueue_managed(spec) else spec.suspend,
        # Replace a pod only once it has fully terminated: the old one may still be uploading a checkpoint.
        "podReplacementPolicy": "Failed",
        "podFailurePolicy": {"rules": pod_failure_rules()},
        "template": {"metadata": {"labels": labels}, "spec": pod_spec(spec, meta, settings)},
    }
    if is_multi_node(spec):
        job_spec.update(indexed_job_fields(spec, meta))
        job_spec["template"]["spec"]["subdomain"] = service_name(name)
    job_spec["activeDeadlineSeconds"] = active_deadline_seconds(spec, settings)
    # No ttlSecondsAfterFinished: the TTL controller would race the operator, deleting the Job (and its pods,
    # with the termination summary) before the outcome is recorded. The operator deletes the Job itself,
    # spec.ttlSecondsAfterFinished after the final status was written (reconcile.py).

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name),
            "namespace": meta["namespace"],
            "labels": job_labels,
            "ownerReferences": [owner_reference(ftj)],
        },
        "spec": job_spec,
    }


def pod_failure_rules() -> list[JsonDict]:
    return [
        # Preemption, eviction, node drain: not the trainer's fault, and the next pod resumes from a
        # checkpoint, but counted against backoffLimit: an eviction for node pressure (a full disk) would
        # otherwise repeat forever, and the Job controller has no other way to bound them.
        {"action": "Count", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        # Bad config, bad data, missing input: retrying cannot help.
        {
            "action": "FailJob",
            "onExitCodes": {
                "containerName": contract.CONTAINER_NAME,
                "operator": "In",
                "values": sorted(int(code) for code in contract.USER_ERROR_EXIT_CODES),
            },
        },
    ]


def pod_spec(spec: FineTuneJobSpec, meta: JsonDict, settings: OperatorSettings) -> JsonDict:
    pod: JsonDict = {
        "restartPolicy": "Never",
        # The trainer saves and uploads a checkpoint in it; the spec's own value wins over the operator's.
        "terminationGracePeriodSeconds": spec.checkpointing.termination_grace_period_seconds
        or settings.termination_grace_period_seconds,
        # The trainer never calls the Kubernetes API; IRSA's projected token is injected independently.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": TRAINER_UID,
            "runAsGroup": TRAINER_UID,
            "fsGroup": TRAINER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [trainer_container(spec, meta, settings)],
        "volumes": volumes(spec),
    }
    pod.update(pod_identity_and_placement(spec, settings))
    if spec.scheduling.priority_class_name:
        pod["priorityClassName"] = spec.scheduling.priority_class_name
    return pod


def pod_identity_and_placement(spec: FineTuneJobSpec, settings: OperatorSettings) -> JsonDict:
    """ServiceAccount, node selector and tolerations: shared by the trainer's pods and the collector's."""
    out: JsonDict = {}
    service_account = spec.service_account_name or settings.trainer_service_account
    if service_account:
        out["serviceAccountName"] = service_account
    if spec.resources.node_selector:
        out["nodeSelector"] = dict(spec.resources.node_selector)
    if spec.resources.tolerations:
        out["tolerations"] = [
            t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in spec.resources.tolerations
        ]
    return out


def trainer_container(spec: FineTuneJobSpec, meta: JsonDict, settings: OperatorSettings) -> JsonDict:
    res = spec.resources
    requests = {"cpu": res.cpu, "memory": res.memory}
    limits = dict(requests)
    if res.gpus > 0:
        # A string, as the API server stores every quantity.
        limits[res.gpu_resource_name] = str(res.gpus)
    return {
        "name": contract.CONTAINER_NAME,
        "image": spec.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": launcher_command(spec, meta) if is_distributed(spec) else list(contract.TRAINER_COMMAND),
        "env": trainer_env(spec, meta) + distributed_env(spec, settings),
        "resources": {"requests": requests, "limits": limits},
        "volumeMounts": [
            {"name": WORKSPACE_VOLUME, "mountPath": contract.DEFAULT_WORKDIR},
            {"name": SHM_VOLUME, "mountPath": "/dev/shm"},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
        ],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": TRAINER_UID,
            "runAsGroup": TRAINER_UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePath": contract.DEFAULT_TERMINATION_LOG,
        # A trainer killed before writing its summary still leaves its last log lines as the message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def trainer_env(spec: FineTuneJobSpec, meta: JsonDict) -> list[JsonDict]:
    env: list[JsonDict] = [
        {"name": contract.ENV_CONTRACT_VERSION, "value": str(contract.CONTRACT_VERSION)},
        {"name": contract.ENV_SPEC, "value": trainer_spec_json(spec)},
        {"name": contract.ENV_NAME, "value": meta["name"]},
        {"name": contract.ENV_NAMESPACE, "value": meta["namespace"]},
        {"name": contract.ENV_UID, "value": meta["uid"]},
        {"name": contract.ENV_WORKDIR, "value": contract.DEFAULT_WORKDIR},
        {"name": contract.ENV_TERMINATION_LOG, "value": contract.DEFAULT_TERMINATION_LOG},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "HF_HOME", "value": HF_HOME},
    ]
    # Credentials only as references: the kubelet resolves them, the operator never sees a value.
    creds = spec.storage.credentials_secret_ref
    if creds is not None:
        env.append(_secret_env(contract.ENV_AWS_ACCESS_KEY_ID, creds.name, creds.access_key_id_key))
        env.append(_secret_env(contract.ENV_AWS_SECRET_ACCESS_KEY, creds.name, creds.secret_access_key_key))
        if creds.session_token_key is not None:
            env.append(_secret_env(contract.ENV_AWS_SESSION_TOKEN, creds.name, creds.session_token_key))
    token = spec.base_model.token_secret_ref
    if token is not None:
        env.append(_secret_env(contract.ENV_HF_TOKEN, token.name, token.key))
    return env


def distributed_env(spec: FineTuneJobSpec, settings: OperatorSettings) -> list[JsonDict]:
    if not is_distributed(spec):
        return []
    grace = spec.checkpointing.termination_grace_period_seconds or settings.termination_grace_period_seconds
    return [{"name": "TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "value": str(shutdown_timeout_seconds(grace))}]


def _secret_env(name: str, secret: str, key: str) -> JsonDict:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def volumes(spec: FineTuneJobSpec) -> list[JsonDict]:
    workspace: JsonDict = {"sizeLimit": workspace_size_limit(spec)}
    return [
        {"name": WORKSPACE_VOLUME, "emptyDir": workspace},
        # Data loader workers share tensors through /dev/shm; the container runtime's 64 MiB is too small.
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": spec.resources.shm_size}},
        # The root filesystem is read-only; libraries still want a writable /tmp.
        {"name": TMP_VOLUME, "emptyDir": {}},
    ]
