"""The emulator behaves like an API server where the operator relies on it (tests/support/kube_emulator.py)."""

from __future__ import annotations

import json
import threading

import pytest
import urllib3

from tests.support.kube_client import BATCH, CORE, FTJ, ApiError, KubeClient, path
from tests.support.kube_emulator import EmulatorServer

FTJS = path(FTJ, "finetunejobs", "ns")


def test_metadata_generation_and_status_subresource(api: KubeClient) -> None:
    created = api.create(FTJS, {"metadata": {"name": "a"}, "spec": {"x": 1}, "status": {"phase": "Forged"}})
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and (meta["generation"], meta["namespace"]) == (1, "ns")
    assert "status" not in created  # status is ignored on create

    obj = path(FTJ, "finetunejobs", "ns", "a")
    after_status = api.patch(obj + "/status", {"status": {"phase": "Running"}, "spec": {"x": 2}})
    assert (after_status["spec"], after_status["status"], after_status["metadata"]["generation"]) == (
        {"x": 1},
        {"phase": "Running"},
        1,
    )
    after_meta = api.patch(obj, {"metadata": {"annotations": {"k": "v"}}, "status": {"phase": "Ignored"}})
    assert (after_meta["status"], after_meta["metadata"]["generation"]) == ({"phase": "Running"}, 1)
    after_spec = api.patch(obj, {"spec": {"x": 2}})
    assert after_spec["metadata"]["generation"] == 2
    versions = [
        int(v["metadata"]["resourceVersion"]) for v in (created, after_status, after_meta, after_spec)
    ]
    assert versions == sorted(set(versions))
    assert (
        api.patch(obj, {"spec": {"x": 2}})["metadata"]["resourceVersion"]
        == after_spec["metadata"]["resourceVersion"]
    )


def test_optimistic_concurrency_and_already_exists(api: KubeClient) -> None:
    created = api.create(FTJS, {"metadata": {"name": "a"}, "spec": {}})
    obj = path(FTJ, "finetunejobs", "ns", "a")
    api.patch(obj, {"metadata": {"labels": {"a": "b"}}})
    status, body = api.request(
        "PATCH",
        obj,
        {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {"y": 1}},
        content_type="application/merge-patch+json",
    )
    assert (status, json.loads(body)["reason"]) == (409, "Conflict")
    status, body = api.request("POST", FTJS, {"metadata": {"name": "a"}, "spec": {}})
    assert (status, json.loads(body)["reason"]) == (409, "AlreadyExists")


def test_garbage_collection_and_finalizers(api: KubeClient) -> None:
    owner = api.create(FTJS, {"metadata": {"name": "a"}, "spec": {}})
    ref = {
        "apiVersion": "ftjob.dev/v1alpha1",
        "kind": "FineTuneJob",
        "name": "a",
        "uid": owner["metadata"]["uid"],
        "controller": True,
    }
    job = api.create(
        path(BATCH, "jobs", "ns"), {"metadata": {"name": "j", "ownerReferences": [ref]}, "spec": {}}
    )
    pod_ref = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": "j",
        "uid": job["metadata"]["uid"],
        "controller": True,
    }
    api.create(
        path(CORE, "pods", "ns"),
        {"metadata": {"generateName": "j-", "ownerReferences": [pod_ref]}, "spec": {}},
    )
    assert [p["metadata"]["name"].startswith("j-") for p in api.pods("ns")] == [True]

    api.create(FTJS, {"metadata": {"name": "kept", "finalizers": ["x/y"]}, "spec": {}})
    api.delete(path(FTJ, "finetunejobs", "ns", "kept"))
    assert (api.finetunejob("ns", "kept") or {})["metadata"]["deletionTimestamp"]
    api.patch(path(FTJ, "finetunejobs", "ns", "kept"), {"metadata": {"finalizers": None}})
    assert api.finetunejob("ns", "kept") is None

    api.delete(path(FTJ, "finetunejobs", "ns", "a"))
    assert (api.job("ns", "j"), api.pods("ns")) == (None, [])
    with pytest.raises(ApiError) as gone:
        api.delete(path(FTJ, "finetunejobs", "ns", "a"))
    assert gone.value.status == 404


def test_watch_resumes_from_a_resource_version(cluster: EmulatorServer, api: KubeClient) -> None:
    listed = json.loads(api.request("GET", FTJS)[1])
    api.create(FTJS, {"metadata": {"name": "a", "labels": {"app": "x"}}, "spec": {}})
    api.create(FTJS, {"metadata": {"name": "b"}, "spec": {}})
    seen: list[tuple[str, str]] = []
    http = urllib3.PoolManager()

    def watch() -> None:
        url = f"{cluster.url}{FTJS}?watch=true&labelSelector=app%3Dx&resourceVersion={listed['metadata']['resourceVersion']}"
        response = http.request("GET", url, preload_content=False, timeout=urllib3.Timeout(read=2))
        try:
            for line in response.stream(1024):
                for chunk in line.decode().splitlines():
                    if chunk.strip():
                        event = json.loads(chunk)
                        seen.append((event["type"], event["object"]["metadata"]["name"]))
        except urllib3.exceptions.ReadTimeoutError:
            pass

    thread = threading.Thread(target=watch)
    thread.start()
    thread.join(10)
    assert seen == [("ADDED", "a")]  # created after the list, before the watch; "b" lacks the label
