"""Plain-dict builders of FineTuneJobs, Jobs and pods, shaped as the API server returns them."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from ftjob.contract import TerminationSummary

JsonDict = dict[str, Any]

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
UID = "8d4c2a52-0000-4000-8000-000000000001"
JOB_UID = "8d4c2a52-0000-4000-8000-0000000000aa"
NAME = "demo"
NAMESPACE = "team-a"


def ts(seconds: float = 0) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def minimal_spec() -> JsonDict:
    return {
        "baseModel": {"uri": "s3://models/smollm2/"},
        "data": {"trainUri": "s3://data/train.jsonl"},
        "output": {"uri": "s3://results/demo/"},
    }


def deep_merge(base: JsonDict, extra: JsonDict) -> JsonDict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def ftj(
    spec: JsonDict | None = None, status: JsonDict | None = None, generation: int = 1, **meta: Any
) -> JsonDict:
    obj: JsonDict = {
        "apiVersion": "ftjob.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "uid": UID,
            "generation": generation,
            "resourceVersion": "100",
            "creationTimestamp": ts(),
            **meta,
        },
        "spec": deep_merge(minimal_spec(), spec or {}),
    }
    if status is not None:
        obj["status"] = status
    return obj


def owner_ref(
    uid: str = UID, name: str = NAME, kind: str = "FineTuneJob", api_version: str = "ftjob.dev/v1alpha1"
) -> JsonDict:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def job(
    *,
    suspend: bool = False,
    conditions: list[JsonDict] | None = None,
    owner: JsonDict | None = None,
    deleting: bool = False,
    **status: Any,
) -> JsonDict:
    obj: JsonDict = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"{NAME}-train",
            "namespace": NAMESPACE,
            "uid": JOB_UID,
            "ownerReferences": [owner if owner is not None else owner_ref()],
            "labels": {"app.kubernetes.io/managed-by": "ftjob-operator"},
        },
        "spec": {"suspend": suspend, "backoffLimit": 2},
        "status": {**status, **({"conditions": conditions} if conditions else {})},
    }
    if deleting:
        obj["metadata"]["deletionTimestamp"] = ts(1)
    if owner == {}:
        obj["metadata"]["ownerReferences"] = []
    return obj


def job_cond(type_: str, reason: str, message: str = "", at: float = 100) -> JsonDict:
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": ts(at),
    }


def pod(
    name: str = "demo-train-aaaaa",
    *,
    phase: str = "Pending",
    created: float = 0,
    started: float | None = None,
    state: JsonDict | None = None,
    conditions: list[JsonDict] | None = None,
    deleting: bool = False,
) -> JsonDict:
    status: JsonDict = {"phase": phase}
    if started is not None:
        status["startTime"] = ts(started)
    if state is not None:
        status["containerStatuses"] = [{"name": "trainer", "state": state}]
    if conditions:
        status["conditions"] = conditions
    obj: JsonDict = {
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "creationTimestamp": ts(created),
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": f"{NAME}-train",
                    "uid": JOB_UID,
                    "controller": True,
                }
            ],
            "labels": {"ftjob.dev/finetunejob": NAME},
        },
        "status": status,
    }
    if deleting:
        obj["metadata"]["deletionTimestamp"] = ts(created + 1)
    return obj


def running(started: float = 10, **kwargs: Any) -> JsonDict:
    return pod(phase="Running", started=started, state={"running": {"startedAt": ts(started)}}, **kwargs)


def waiting(reason: str, message: str = "", started: float = 0, **kwargs: Any) -> JsonDict:
    return pod(
        phase="Pending", started=started, state={"waiting": {"reason": reason, "message": message}}, **kwargs
    )


def terminated(
    exit_code: int, summary: TerminationSummary | None = None, reason: str | None = None, **kwargs: Any
) -> JsonDict:
    state = {
        "terminated": {
            "exitCode": exit_code,
            "reason": reason or ("Completed" if exit_code == 0 else "Error"),
            "message": summary.to_message() if summary is not None else "",
            "startedAt": ts(10),
            "finishedAt": ts(90),
        }
    }
    return pod(
        phase="Succeeded" if exit_code == 0 else "Failed",
        started=kwargs.pop("started", 5),
        state=state,
        **kwargs,
    )


def disrupted(reason: str = "PreemptionByScheduler", **kwargs: Any) -> JsonDict:
    cond = {
        "type": "DisruptionTarget",
        "status": "True",
        "reason": reason,
        "message": "Preempted in order to admit critical pod",
    }
    state = {"terminated": {"exitCode": 143, "reason": "Error", "startedAt": ts(10), "finishedAt": ts(50)}}
    return pod(phase="Failed", started=5, state=state, conditions=[cond], **kwargs)
