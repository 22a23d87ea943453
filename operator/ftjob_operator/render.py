"""FineTuneJob -> batch/v1 Job: a pure function of the object and the operator's settings."""

from __future__ import annotations

import json
from typing import Final

from ftjob import contract
from ftjob.api import FineTuneJobSpec

from .names import LABEL_KUEUE_QUEUE, JsonDict, child_labels, job_name, owner_reference
from .settings import OperatorSettings

TRAINER_UID: Final = 1000
WORKSPACE_VOLUME: Final = "workspace"
SHM_VOLUME: Final = "dshm"
TMP_VOLUME: Final = "tmp"
HF_HOME: Final = f"{contract.DEFAULT_WORKDIR}/hf-home"


def validated_spec(ftj: JsonDict) -> FineTuneJobSpec:
    """The spec as the trainer will read it; raises pydantic.ValidationError when a rule is broken."""
    return FineTuneJobSpec.model_validate(ftj.get("spec") or {})


def trainer_spec_json(spec: FineTuneJobSpec) -> str:
    """The trainer's configuration, without `suspend`: toggling suspend must not change the pod template,
    or the Job controller would refuse the update and a resumed pod would differ from the first."""
    doc = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc.pop("suspend", None)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


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
        "backoffLimit": spec.backoff_limit,
        # Kueue admits a Job by unsuspending it: it must be created suspended, and only Kueue toggles it.
        "suspend": True if is_kueue_managed(spec) else spec.suspend,
        # Replace a pod only once it has fully terminated: the old one may still be uploading a checkpoint.
        "podReplacementPolicy": "Failed",
        "podFailurePolicy": {"rules": pod_failure_rules()},
        "template": {"metadata": {"labels": labels}, "spec": pod_spec(spec, meta, settings)},
    }
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished

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
        # Preemption, eviction, node drain: not the trainer's fault; the next pod resumes from a checkpoint.
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
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
        "terminationGracePeriodSeconds": settings.termination_grace_period_seconds,
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
    service_account = spec.service_account_name or settings.trainer_service_account
    if service_account:
        pod["serviceAccountName"] = service_account
    if spec.scheduling.priority_class_name:
        pod["priorityClassName"] = spec.scheduling.priority_class_name
    if spec.resources.node_selector:
        pod["nodeSelector"] = dict(spec.resources.node_selector)
    if spec.resources.tolerations:
        pod["tolerations"] = [
            t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in spec.resources.tolerations
        ]
    return pod


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
        "command": list(contract.TRAINER_COMMAND),
        "env": trainer_env(spec, meta),
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


def _secret_env(name: str, secret: str, key: str) -> JsonDict:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def volumes(spec: FineTuneJobSpec) -> list[JsonDict]:
    workspace: JsonDict = {}
    if spec.resources.scratch_size is not None:
        workspace["sizeLimit"] = spec.resources.scratch_size
    return [
        {"name": WORKSPACE_VOLUME, "emptyDir": workspace},
        # Data loader workers share tensors through /dev/shm; the container runtime's 64 MiB is too small.
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": spec.resources.shm_size}},
        # The root filesystem is read-only; libraries still want a writable /tmp.
        {"name": TMP_VOLUME, "emptyDir": {}},
    ]
