"""The parts of a cluster the emulator does not run, played through the API the way they write it:
the scheduler (binding a pod to the test Node), the kubelet (Node status, pod status, container states,
termination messages) and Kueue (unsuspending a Job). The Job controller is the real one in
kube-controller-manager: it creates the pods and writes the Jobs' status.

Each function is one write a controller would make, so a test reads like the cluster's own timeline.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .kube_client import BATCH, CORE, JsonDict, KubeClient, path

TRAINER = "trainer"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """MicroTime, as Leases and events.k8s.io Events carry it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _pod_path(pod: JsonDict, sub: str | None = None) -> str:
    meta = pod["metadata"]
    return path(CORE, "pods", meta["namespace"], meta["name"], sub)


def _job_path(job: JsonDict, sub: str | None = None) -> str:
    meta = job["metadata"]
    return path(BATCH, "jobs", meta["namespace"], meta["name"], sub)


# -- the kubelet's node ----------------------------------------------------------------------------------
NODE = "ftjob-test-node"


def register_node(api: KubeClient, name: str = NODE, kubelet_port: int = 10250) -> JsonDict:
    """A Ready Node with a loopback address: where the API server sends `pods/log` requests."""
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
    }
    if api.get(f"{CORE}/nodes/{name}") is None:
        api.create(f"{CORE}/nodes", body)
    return node_heartbeat(api, name, kubelet_port)


def node_heartbeat(api: KubeClient, name: str = NODE, kubelet_port: int = 10250) -> JsonDict:
    """What the kubelet writes every few seconds: Ready, its address and port, capacity (GPUs too)."""
    capacity = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"}
    status = {
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "test kubelet is posting ready status",
                "lastHeartbeatTime": now(),
                "lastTransitionTime": now(),
            }
        ],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "capacity": capacity,
        "allocatable": capacity,
    }
    return api.patch(f"{CORE}/nodes/{name}/status", {"status": status})


def bind_pod(api: KubeClient, pod: JsonDict, node: str = NODE) -> None:
    """What the scheduler does: bind the pod to a node (the `pods/binding` subresource)."""
    meta = pod["metadata"]
    api.create(
        _pod_path(pod, "binding"),
        {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        },
    )


def delete_pod(api: KubeClient, pod: JsonDict, grace_period_seconds: int | None = None) -> None:
    """`grace_period_seconds=0` is how the kubelet finishes a graceful deletion once the pod stopped."""
    url = _pod_path(pod)
    if grace_period_seconds is None:
        api.delete(url)
    else:
        api.request("DELETE", url, {"gracePeriodSeconds": grace_period_seconds})


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
