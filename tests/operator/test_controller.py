"""The engine around the reconciler: which watch events queue what, what the poll reads, how retries wait."""

from __future__ import annotations

from typing import Any, cast

from ftjob_operator.cache import ClusterCache
from ftjob_operator.controller import Controller, retry_delay
from ftjob_operator.kube import ErrorKind, KubeError
from ftjob_operator.metrics import Metrics
from ftjob_operator.names import LABEL_FINETUNEJOB, JsonDict
from ftjob_operator.reconcile import Reconciler
from ftjob_operator.settings import OperatorSettings
from ftjob_operator.workqueue import WorkQueue


class StubReconciler:
    """Answers the controller's questions; records what it was asked to reconcile."""

    def __init__(self, due: bool = True, fail: KubeError | None = None) -> None:
        self.due = due
        self.fail = fail
        self.calls: list[tuple[str, str, bool]] = []
        self.forgotten: list[tuple[str, str]] = []

    def wants_poll(self, namespace: str, name: str, phase: str | None) -> bool:
        return phase not in ("Succeeded", "Failed")

    def progress_due(self, namespace: str, name: str, now: float, interval: float) -> bool:
        return self.due

    def forget(self, namespace: str, name: str) -> None:
        self.forgotten.append((namespace, name))

    def reconcile(self, namespace: str, name: str, *, trigger: str, read_progress: bool = False) -> str:
        self.calls.append((namespace, name, read_progress))
        if self.fail is not None:
            raise self.fail
        return "Running"


def controller(stub: StubReconciler) -> Controller:
    return Controller(cast(Reconciler, stub), ClusterCache(), OperatorSettings(), Metrics(), WorkQueue())


def ftj(name: str, version: str, status: JsonDict | None = None) -> JsonDict:
    meta = {"namespace": "ns", "name": name, "uid": f"uid-{name}", "resourceVersion": version}
    return {"kind": "FineTuneJob", "metadata": meta, "status": status or {}}


def pod(name: str, owner: str, phase: str) -> JsonDict:
    meta: dict[str, Any] = {"namespace": "ns", "name": name, "uid": name, "resourceVersion": "1"}
    meta["labels"] = {LABEL_FINETUNEJOB: owner}
    state = {"running": {"startedAt": "2026-11-30T10:00:00Z"}} if phase == "Running" else {"waiting": {}}
    status = {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state}]}
    return {"kind": "Pod", "metadata": meta, "status": status}


def drain(c: Controller) -> list[tuple[tuple[str, str], bool]]:
    out = []
    while (item := c.queue.get(timeout=0)) is not None:
        out.append((item.key, item.progress))
        c.queue.done(item)
    return out


def test_a_new_finetunejob_is_urgent_and_the_echo_of_an_own_write_queues_nothing() -> None:
    c = controller(StubReconciler())
    c.finetunejob_event(None, ftj("running", "5", {"jobName": "running-train", "phase": "Running"}))
    c.finetunejob_event("ADDED", ftj("new", "6"))
    assert drain(c) == [(("ns", "new"), False), (("ns", "running"), False)]  # the new one first
    c.cache.finetunejobs.put(ftj("new", "7", {"phase": "Pending"}))  # the answer of the status write
    c.finetunejob_event("MODIFIED", ftj("new", "7", {"phase": "Pending"}))  # ...and its watch event
    assert drain(c) == []


def test_a_deleted_finetunejob_is_forgotten_and_leaves_the_cache() -> None:
    stub = StubReconciler()
    c = controller(stub)
    c.finetunejob_event("ADDED", ftj("gone", "1"))
    c.finetunejob_event("DELETED", ftj("gone", "2"))
    assert c.cache.finetunejobs.get("ns", "gone") is None and stub.forgotten == [("ns", "gone")]


def test_the_poll_reads_logs_only_of_running_trainers_whose_record_is_due() -> None:
    stub = StubReconciler(due=True)
    c = controller(stub)
    for name, phase in (("training", "Running"), ("waiting", "Pending"), ("done", "Succeeded")):
        status = {"phase": phase, "jobName": f"{name}-train"}
        c.cache.finetunejobs.put(ftj(name, "3", status))
    c.cache.pods.put(pod("training-train-abc", "training", "Running"))
    c.cache.pods.put(pod("waiting-train-def", "waiting", "Pending"))
    c.poll_once()
    assert sorted(drain(c)) == [(("ns", "training"), True), (("ns", "waiting"), False)]
    stub.due = False  # the next record is not due yet: re-checked from the cache, no log read
    c.poll_once()
    assert sorted(drain(c)) == [(("ns", "training"), False), (("ns", "waiting"), False)]


def test_a_throttled_reconcile_waits_for_retry_after_in_the_queue_not_in_the_worker() -> None:
    throttled = KubeError(ErrorKind.THROTTLED, 429, "TooManyRequests", "slow down", retry_after=7)
    stub = StubReconciler(fail=throttled)
    c = controller(stub)
    c.queue.add(("ns", "a"), progress=True)
    item = c.queue.get(timeout=0)
    assert item is not None
    c._reconcile(item)  # returns at once: nothing slept
    c.queue.done(item)
    assert stub.calls == [("ns", "a", True)]
    assert c.queue.get(timeout=0) is None  # waiting in the timer heap
    assert retry_delay(throttled, 0) == 7


def test_retry_delays() -> None:
    unavailable = KubeError(ErrorKind.UNAVAILABLE, 503, "ServiceUnavailable", "")
    assert [retry_delay(unavailable, n) for n in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert retry_delay(unavailable, 20) == 60.0
    assert retry_delay(KubeError(ErrorKind.THROTTLED, 429, "", ""), 0) == 1.0  # no Retry-After: 1 s
    assert retry_delay(KubeError(ErrorKind.REJECTED, 403, "Forbidden", ""), 0) == 60.0


def test_while_new_jobs_wait_a_created_jobs_status_is_written_on_a_later_visit() -> None:
    c = controller(StubReconciler())
    assert not c.defer_record(("ns", "first"))  # nothing else waits: write it now
    c.queue.add(("ns", "second"), urgent=True)
    assert c.defer_record(("ns", "first"))
    assert drain(c) == [(("ns", "second"), False), (("ns", "first"), False)]
