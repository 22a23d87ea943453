"""What the watches delivered: the latest FineTuneJobs, Jobs and pods, so a reconcile reads memory, not the API.

Fed by the watch events (handlers.py) and by the operator's own writes (the answer of a create or a status
patch is newer than anything the watch has delivered yet). Reading from here may be a little behind the
API server; the reconciler is built for that:

- writes that depend on what was read carry a precondition (the status patch's resourceVersion; a Job's
  deterministic name), so a stale read ends in a 409 and a fresh read, never in a wrong write;
- before anything that cannot be undone (a terminal status, deleting a Job, starting a collector, declaring
  a Job gone) the reconciler reads the Job and its pods from the API itself (reconcile.py).

Objects are kept without `metadata.managedFields` and with only the parts of a Job's and a pod's spec the
operator reads: a thousand Jobs and pods as the API server sends them would hold tens of MB.
"""

from __future__ import annotations

import threading

from .names import LABEL_FINETUNEJOB, JsonDict

Key = tuple[str, str]

_JOB_SPEC_KEPT = ("suspend", "completions", "parallelism", "completionMode", "backoffLimit")
_POD_SPEC_KEPT = ("nodeName", "hostname", "subdomain")


def _version(obj: JsonDict) -> int | None:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or "")
    except ValueError:
        return None


def slim(obj: JsonDict) -> JsonDict:
    """The object without what the operator never reads (managedFields; most of a Job's and a pod's spec)."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    out = {**obj, "metadata": meta}
    kind = obj.get("kind")
    if kind in ("Job", "Pod"):
        kept = _JOB_SPEC_KEPT if kind == "Job" else _POD_SPEC_KEPT
        spec = obj.get("spec") or {}
        out["spec"] = {k: spec[k] for k in kept if k in spec}
    return out


class ObjectCache:
    """The newest known version of each object of one kind, by (namespace, name).

    "Newest" compares resourceVersions as numbers when both are (etcd revisions, on every API server this
    project meets); a version that is not a number is taken as it comes. A watch that lags behind a write
    the operator made itself therefore never takes the cache back to an older version.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[Key, JsonDict] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, namespace: str, name: str) -> JsonDict | None:
        with self._lock:
            return self._items.get((namespace, name))

    def values(self) -> list[JsonDict]:
        with self._lock:
            return list(self._items.values())

    def put(self, obj: JsonDict) -> JsonDict:
        """Keep `obj` unless a newer version is already known; returns the version kept."""
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        obj = slim({**obj, "kind": obj.get("kind") or self.kind})
        with self._lock:
            known = self._items.get(key)
            if known is not None and _same_object(known, obj) and _older(obj, known):
                return known
            self._items[key] = obj
            self._indexed(key, known, obj)
            return obj

    def remove(self, obj: JsonDict) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        with self._lock:
            known = self._items.get(key)
            # A DELETED event of an earlier object of the same name must not drop its successor.
            if (
                known is not None
                and meta.get("uid")
                and (known.get("metadata") or {}).get("uid") != meta["uid"]
            ):
                return
            self._items.pop(key, None)
            self._indexed(key, known, None)

    def _indexed(self, key: Key, old: JsonDict | None, new: JsonDict | None) -> None:
        """Hook for subclasses that keep an index (called with the lock held)."""


class PodCache(ObjectCache):
    """Pods, also by the FineTuneJob named in their `ftjob.dev/finetunejob` label."""

    def __init__(self) -> None:
        super().__init__("Pod")
        self._by_owner: dict[Key, set[str]] = {}

    def _indexed(self, key: Key, old: JsonDict | None, new: JsonDict | None) -> None:
        namespace, name = key
        for obj, add in ((old, False), (new, True)):
            if obj is None:
                continue
            owner = ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_FINETUNEJOB)
            if not owner:
                continue
            names = self._by_owner.setdefault((namespace, owner), set())
            if add:
                names.add(name)
            else:
                names.discard(name)
                if not names:
                    self._by_owner.pop((namespace, owner), None)

    def sync_finetunejob(self, namespace: str, name: str, listed: list[JsonDict]) -> list[JsonDict]:
        """Take a fresh list of this FineTuneJob's pods from the API: the pods it holds are kept, the cached
        ones it lacks are gone. Returns the pods as kept."""
        kept = [self.put(pod) for pod in listed]
        present = {(pod.get("metadata") or {}).get("name") for pod in kept}
        for pod in self.of_finetunejob(namespace, name):
            if (pod.get("metadata") or {}).get("name") not in present:
                self.remove(pod)
        return kept

    def of_finetunejob(self, namespace: str, name: str) -> list[JsonDict]:
        """Every pod labelled with this FineTuneJob's name (the reconciler keeps those its Job controls)."""
        with self._lock:
            names = sorted(self._by_owner.get((namespace, name), ()))
            return [self._items[(namespace, pod)] for pod in names if (namespace, pod) in self._items]


class ClusterCache:
    """The three kinds the reconciler observes."""

    def __init__(self) -> None:
        self.finetunejobs = ObjectCache("FineTuneJob")
        self.jobs = ObjectCache("Job")
        self.pods = PodCache()

    def sizes(self) -> dict[str, int]:
        return {"finetunejobs": len(self.finetunejobs), "jobs": len(self.jobs), "pods": len(self.pods)}


def _same_object(a: JsonDict, b: JsonDict) -> bool:
    return (a.get("metadata") or {}).get("uid") == (b.get("metadata") or {}).get("uid")


def _older(candidate: JsonDict, known: JsonDict) -> bool:
    new, old = _version(candidate), _version(known)
    return new is not None and old is not None and new < old
