"""The watch-fed cache: newest version wins, own writes are not undone by a lagging watch, pods by owner."""

from __future__ import annotations

from ftjob_operator.cache import ClusterCache, ObjectCache, slim
from ftjob_operator.names import LABEL_FINETUNEJOB, JsonDict


def obj(name: str, version: str, uid: str = "u1", kind: str = "FineTuneJob", **extra: object) -> JsonDict:
    return {
        "kind": kind,
        "metadata": {"namespace": "ns", "name": name, "uid": uid, "resourceVersion": version},
        **extra,
    }


def test_an_older_version_never_replaces_a_newer_one_of_the_same_object() -> None:
    cache = ObjectCache("FineTuneJob")
    cache.put(obj("a", "10", status={"phase": "Running"}))  # the answer of the operator's own status write
    kept = cache.put(obj("a", "9", status={"phase": "Pending"}))  # the watch, one event behind
    assert kept["status"] == {"phase": "Running"}
    assert cache.get("ns", "a") == kept
    assert cache.put(obj("a", "11", status={"phase": "Succeeded"}))["status"] == {"phase": "Succeeded"}


def test_a_new_object_of_the_same_name_replaces_the_old_one_and_its_late_delete_is_ignored() -> None:
    cache = ObjectCache("FineTuneJob")
    cache.put(obj("a", "50", uid="old"))
    cache.put(obj("a", "7", uid="new"))  # another object: versions are not comparable across uids
    assert cache.get("ns", "a")["metadata"]["uid"] == "new"  # type: ignore[index]
    cache.remove(obj("a", "51", uid="old"))
    assert cache.get("ns", "a") is not None
    cache.remove(obj("a", "8", uid="new"))
    assert cache.get("ns", "a") is None


def test_versions_that_are_not_numbers_are_taken_as_they_come() -> None:
    cache = ObjectCache("FineTuneJob")
    cache.put(obj("a", "b2"))
    assert cache.put(obj("a", "a1"))["metadata"]["resourceVersion"] == "a1"


def test_jobs_and_pods_are_kept_without_managed_fields_and_most_of_their_spec() -> None:
    job = obj(
        "a-train",
        "3",
        kind="Job",
        spec={"suspend": True, "completions": 2, "template": {"spec": {"containers": [{"env": ["x"] * 50}]}}},
    )
    job["metadata"]["managedFields"] = [{"manager": "kube-controller-manager"}] * 20
    kept = slim(job)
    assert kept["spec"] == {"suspend": True, "completions": 2}
    assert "managedFields" not in kept["metadata"]
    assert "managedFields" in job["metadata"]  # the original is not modified
    ftj = obj("a", "1", spec={"baseModel": {"uri": "s3://m/"}})
    assert slim(ftj)["spec"] == ftj["spec"]  # a FineTuneJob keeps its whole spec


def test_pods_are_found_by_their_finetunejob_label_and_a_fresh_list_drops_the_vanished() -> None:
    cache = ClusterCache()
    labels = {LABEL_FINETUNEJOB: "a"}
    for name in ("a-train-1", "a-train-2"):
        pod = obj(name, "6", uid=name, kind="Pod")
        pod["metadata"]["labels"] = labels
        cache.pods.put(pod)
    other = obj("b-train-1", "6", uid="b", kind="Pod")
    other["metadata"]["labels"] = {LABEL_FINETUNEJOB: "b"}
    cache.pods.put(other)
    assert [p["metadata"]["name"] for p in cache.pods.of_finetunejob("ns", "a")] == ["a-train-1", "a-train-2"]
    fresh = obj("a-train-2", "9", uid="a-train-2", kind="Pod")
    fresh["metadata"]["labels"] = labels
    kept = cache.pods.sync_finetunejob("ns", "a", [fresh])
    assert [p["metadata"]["resourceVersion"] for p in kept] == ["9"]
    assert [p["metadata"]["name"] for p in cache.pods.of_finetunejob("ns", "a")] == ["a-train-2"]
    assert cache.sizes() == {"finetunejobs": 0, "jobs": 0, "pods": 2}
    cache.pods.remove(other)
    assert cache.pods.of_finetunejob("ns", "b") == []
