"""The parts of a cluster the emulator does not run, played through the API the way they write it:
the Job controller (pods for a Job, Job status and conditions), the kubelet (pod status, container
states, termination messages) and Kueue (unsuspending a Job).

Each function is one write a controller would make, so a test reads like the cluster's own timeline.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from .kube_client import BATCH, CORE, JsonDict, KubeClient, path

TRAINER = "trainer"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pod_path(pod: JsonDict, sub: str | None = None) -> str:
    meta = pod["metadata"]
    return path(CORE, "pods", meta["namespace"], meta["name"], sub)


def _job_path(job: JsonDict, sub: str | None = None) -> str:
    meta = job["metadata"]
    return path(BATCH, "jobs", meta["namespace"], meta["name"], sub)


# -- Job controller ------------------------------------------------------------------------------------
def create_pod(api: KubeClient, job: JsonDict) -> JsonDict:
    """A pod from the Job's template, controlled by the Job, as the Job controller creates it."""
    meta = job["metadata"]
    template = job["spec"]["template"]
    labels = dict(template["metadata"].get("labels") or {})
    labels.update(
        {"batch.kubernetes.io/job-name": meta["name"], "batch.kubernetes.io/controller-uid": meta["uid"]}
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{meta['name']}-{secrets.token_hex(3)[:5]}",
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": template["spec"],
    }
    created = api.create(path(CORE, "pods", meta["namespace"]), pod)
    set_job_status(api, job, active=1)
    return created


def set_job_status(api: KubeClient, job: JsonDict, **fields: Any) -> JsonDict:
    status: JsonDict = {"startTime": (job.get("status") or {}).get("startTime") or now(), **fields}
    return api.patch(_job_path(job, "status"), {"status": status})


def job_condition(
    api: KubeClient, job: JsonDict, type_: str, reason: str, message: str = "", **counts: int
) -> JsonDict:
    """Add a True condition to the Job (Complete, Failed, FailureTarget...) with the pod counts."""
    current = api.job(job["metadata"]["namespace"], job["metadata"]["name"]) or job
    conditions = list((current.get("status") or {}).get("conditions") or [])
    conditions.append(
        {
            "type": type_,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastProbeTime": now(),
            "lastTransitionTime": now(),
        }
    )
    fields: JsonDict = {"conditions": conditions, "active": 0, **counts}
    if type_ == "Complete":
        fields["completionTime"] = now()
    return set_job_status(api, current, **fields)


def delete_pod(api: KubeClient, pod: JsonDict) -> None:
    api.delete(_pod_path(pod))


# -- kubelet -------------------------------------------------------------------------------------------
def _container(state: JsonDict, **extra: Any) -> list[JsonDict]:
    return [
        {
            "name": TRAINER,
            "image": "trainer",
            "ready": "running" in state,
            "restartCount": 0,
            "state": state,
            **extra,
        }
    ]


def pod_waiting(
    api: KubeClient, pod: JsonDict, reason: str, message: str = "", started: str | None = None
) -> JsonDict:
    status = {
        "phase": "Pending",
        "startTime": started or now(),
        "containerStatuses": _container({"waiting": {"reason": reason, "message": message}}),
    }
    return api.patch(_pod_path(pod, "status"), {"status": status})


def pod_running(api: KubeClient, pod: JsonDict) -> JsonDict:
    status = {
        "phase": "Running",
        "startTime": now(),
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": _container({"running": {"startedAt": now()}}),
    }
    return api.patch(_pod_path(pod, "status"), {"status": status})


def pod_terminated(
    api: KubeClient, pod: JsonDict, exit_code: int, message: str = "", reason: str | None = None
) -> JsonDict:
    """The trainer container exited; `message` is what it left in /dev/termination-log."""
    terminated = {
        "exitCode": exit_code,
        "reason": reason or ("Completed" if exit_code == 0 else "Error"),
        "message": message,
        "startedAt": now(),
        "finishedAt": now(),
    }
    status = {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "containerStatuses": _container({"terminated": terminated}),
    }
    return api.patch(_pod_path(pod, "status"), {"status": status})


def pod_disrupted(api: KubeClient, pod: JsonDict, reason: str = "PreemptionByScheduler") -> JsonDict:
    """The scheduler (or an eviction) marks the pod as a disruption target and the kubelet stops it."""
    status = {
        "phase": "Failed",
        "conditions": [
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": reason,
                "message": "preempted by a higher-priority pod",
            }
        ],
        "containerStatuses": _container({"terminated": {"exitCode": 143, "reason": "Error", "message": ""}}),
    }
    return api.patch(_pod_path(pod, "status"), {"status": status})


# -- Kueue ---------------------------------------------------------------------------------------------
def kueue_admit(api: KubeClient, job: JsonDict) -> JsonDict:
    return api.patch(_job_path(job), {"spec": {"suspend": False}})
