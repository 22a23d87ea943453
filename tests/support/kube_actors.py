"""The parts of a cluster the test control plane does not run, played through the API the way they write it:
the scheduler (binding a pod to the test Node), the kubelet (Node status, pod status, container states,
termination messages) and Kueue (unsuspending a Job). The Job controller is the real one in
kube-controller-manager: it creates the pods and writes the Jobs' status.

Each function is one write a controller would make, so a test reads like the cluster's own timeline.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from .kube_client import BATCH, CORE, ApiError, JsonDict, KubeClient, path

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
# The kubelet writes pod status as a strategic merge patch (conditions merge by type, container statuses by
# name), so what others wrote (PodScheduled by the binding, DisruptionTarget by an eviction) is kept.
STRATEGIC = "application/strategic-merge-patch+json"
STATES = ("waiting", "running", "terminated")


def patch_pod_status(api: KubeClient, pod: JsonDict, status: JsonDict) -> JsonDict:
    code, data = api.request("PATCH", _pod_path(pod, "status"), {"status": status}, content_type=STRATEGIC)
    if not 200 <= code < 300:
        raise ApiError(code, data.decode(errors="replace"))
    doc = json.loads(data)
    assert isinstance(doc, dict)
    return doc


def _spec_container(pod: JsonDict) -> JsonDict:
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    named = [c for c in containers if c.get("name") == TRAINER]
    return dict((named or containers)[0])


def _container(pod: JsonDict, state: JsonDict, **extra: Any) -> list[JsonDict]:
    """One container status with exactly one state (the other two nulled: a strategic merge patch would
    otherwise keep the previous state beside the new one)."""
    spec = _spec_container(pod)
    image = spec.get("image") or "trainer"
    started = "running" in state or "terminated" in state
    status: JsonDict = {
        "name": spec.get("name") or TRAINER,
        "image": image,
        "imageID": f"docker.io/library/{image}@sha256:{'0' * 64}" if started else "",
        "ready": "running" in state,
        "started": "running" in state,
        "restartCount": 0,
        "state": {key: state.get(key) for key in STATES},
        **extra,
    }
    if started:
        status["containerID"] = f"containerd://{(pod['metadata'].get('uid') or 'test').replace('-', '')}"
    return [status]


def _conditions(ready: bool, reason: str | None, *, sandbox: bool = True) -> list[JsonDict]:
    """The kubelet's own conditions (PodScheduled belongs to the scheduler, DisruptionTarget to others)."""
    at = now()

    def cond(type_: str, status: bool, why: str | None = None) -> JsonDict:
        out: JsonDict = {"type": type_, "status": "True" if status else "False", "lastTransitionTime": at}
        if why and not status:
            out["reason"] = why
        return out

    return [
        cond("PodReadyToStartContainers", sandbox),
        cond("Initialized", True),
        cond("Ready", ready, reason),
        cond("ContainersReady", ready, reason),
    ]


def pod_waiting(
    api: KubeClient, pod: JsonDict, reason: str, message: str = "", started: str | None = None
) -> JsonDict:
    status = {
        "phase": "Pending",
        "hostIP": "127.0.0.1",
        "startTime": started or now(),
        "conditions": _conditions(False, "ContainersNotReady"),
        "containerStatuses": _container(pod, {"waiting": {"reason": reason, "message": message}}),
    }
    return patch_pod_status(api, pod, status)


def pod_running(api: KubeClient, pod: JsonDict, *, started_at: str | None = None) -> JsonDict:
    started = started_at or now()
    status = {
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "podIP": "127.0.0.1",
        "startTime": started,
        "conditions": _conditions(True, None),
        "containerStatuses": _container(pod, {"running": {"startedAt": started}}),
    }
    return patch_pod_status(api, pod, status)


def pod_terminated(
    api: KubeClient,
    pod: JsonDict,
    exit_code: int,
    message: str = "",
    reason: str | None = None,
    *,
    started_at: str | None = None,
) -> JsonDict:
    """The trainer container exited; `message` is what it left in /dev/termination-log."""
    terminated: JsonDict = {
        "exitCode": exit_code,
        "reason": reason or ("Completed" if exit_code == 0 else "Error"),
        "startedAt": started_at or now(),
        "finishedAt": now(),
    }
    if message:
        terminated["message"] = message
    status = {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "conditions": _conditions(False, "PodCompleted", sandbox=False),
        "containerStatuses": _container(pod, {"terminated": terminated}),
    }
    return patch_pod_status(api, pod, status)


def pod_disrupted(api: KubeClient, pod: JsonDict, reason: str = "PreemptionByScheduler") -> JsonDict:
    """The scheduler (or an eviction) marks the pod as a disruption target and the kubelet stops it."""
    disruption = {
        "type": "DisruptionTarget",
        "status": "True",
        "reason": reason,
        "message": "preempted by a higher-priority pod",
        "lastTransitionTime": now(),
    }
    terminated = {"exitCode": 143, "reason": "Error", "startedAt": now(), "finishedAt": now()}
    status = {
        "phase": "Failed",
        "conditions": [*_conditions(False, "PodCompleted", sandbox=False), disruption],
        "containerStatuses": _container(pod, {"terminated": terminated}),
    }
    return patch_pod_status(api, pod, status)


# -- Kueue ---------------------------------------------------------------------------------------------
def kueue_admit(api: KubeClient, job: JsonDict) -> JsonDict:
    return api.patch(_job_path(job), {"spec": {"suspend": False}})
