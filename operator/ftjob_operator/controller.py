"""The running operator's engine: watch events fill the cache and the queue, worker threads reconcile, a
poll reads the trainers' progress.

- Watch events (FineTuneJobs, and the Jobs and pods labelled as the operator's) update `ClusterCache` and
  queue the FineTuneJob they belong to. Nothing is read from the API to learn what a watch already said.
- `settings.workers` threads take FineTuneJobs from the `WorkQueue` and reconcile them from the cache. A
  reconcile that fails is queued again after a delay (the server's Retry-After on a 429, a backoff on other
  errors): no worker ever sleeps on a retry, and a throttled API server slows the operator down instead of
  tying its threads up.
- Every `progress_interval_seconds` the poll queues every unfinished FineTuneJob; those whose trainer pod
  runs (by the cache) get their log read when their next progress record is due (progress_schedule.py).
  Re-checking the others costs no request: it catches what no event announces (an image pull failing for
  longer than its grace period, a TTL that came due).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Final

from ftjob.api.conditions import TERMINAL_PHASES

from .cache import ClusterCache
from .kube import ErrorKind, Kube, KubeError
from .metrics import Metrics
from .names import COMPONENT, LABEL_MANAGED_BY, JsonDict, owner_of_child
from .observe import is_running
from .reconcile import Reconciler
from .settings import OperatorSettings
from .workqueue import Item, Key, WorkQueue

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS: Final = 60.0
CHILD_EVENT_DELAY: Final = 0.5
"""A Job or pod event queues its FineTuneJob this much later: the Job controller and the kubelet write in
quick succession (a new Job's status, its pod, the pod's status), and one reconcile after them writes one
status instead of one per event."""


def retry_delay(err: KubeError, failures: int) -> float:
    """How long a FineTuneJob waits before its next reconcile after `failures` failed ones in a row."""
    if err.kind is ErrorKind.THROTTLED:
        return max(1.0, err.retry_after if err.retry_after is not None else 1.0)
    if err.kind is ErrorKind.REJECTED:
        return MAX_BACKOFF_SECONDS  # e.g. a missing permission: only an administrator can fix it
    return min(MAX_BACKOFF_SECONDS, 0.5 * 2.0 ** min(failures, 8))


def _key(obj: JsonDict) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _version(obj: JsonDict | None) -> str | None:
    return ((obj or {}).get("metadata") or {}).get("resourceVersion")


class Controller:
    def __init__(
        self,
        reconciler: Reconciler,
        cache: ClusterCache,
        settings: OperatorSettings,
        metrics: Metrics,
        queue: WorkQueue | None = None,
    ) -> None:
        self.reconciler = reconciler
        self.cache = cache
        self.settings = settings
        self.metrics = metrics
        self.queue = queue or WorkQueue()
        self._failures: dict[Key, int] = {}
        self._failures_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------------------------------
    def prime(self, kube: Kube) -> None:
        """List the operator's Jobs and pods once before the first reconcile, as an informer lists before it
        watches: a FineTuneJob listed at start-up then finds its Job in the cache instead of meeting a 409
        (kopf's own watches list again and keep the cache current from there). If the API does not answer,
        the reconciles start anyway: an absence is never acted on without a fresh read."""
        selector = f"{LABEL_MANAGED_BY}={COMPONENT}"
        try:
            for namespace in self.settings.namespaces or (None,):
                for job in kube.list_jobs(namespace, selector):
                    self.cache.jobs.put(job)
                for pod in kube.list_pods(namespace, selector):
                    self.cache.pods.put(pod)
                # Only the slim copies stay; the lists' full objects go now, before kopf lists too.
                gc.collect()
        except KubeError as err:
            logger.warning("could not list the operator's Jobs and pods at start-up: %s", err)

    def start(self) -> None:
        for index in range(self.settings.workers):
            self._threads.append(threading.Thread(target=self._work, name=f"reconcile-{index}", daemon=True))
        self._threads.append(threading.Thread(target=self._poll, name="progress-poll", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Let the reconciles in flight finish (within `timeout` in all); queued ones are left to the next
        operator, which lists everything again."""
        self._stop.set()
        self.queue.close()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- watch events ---------------------------------------------------------------------------------
    def finetunejob_event(self, kind: str | None, obj: JsonDict) -> None:
        namespace, name = _key(obj)
        if not namespace:  # FineTuneJobs are namespaced; kopf's types allow cluster-scoped objects
            return
        if kind == "DELETED":
            self.cache.finetunejobs.remove(obj)
            self.reconciler.forget(namespace, name)
            return
        known = self.cache.finetunejobs.get(namespace, name)
        kept = self.cache.finetunejobs.put(obj)
        if known is not None and _version(known) == _version(obj):
            return  # the echo of this operator's own write, already in the cache: nothing new
        if (kept.get("metadata") or {}).get("deletionTimestamp"):
            return  # the garbage collector removes its Job
        status = kept.get("status") or {}
        self.queue.add(
            (namespace, name), urgent=not status.get("jobName") and status.get("phase") not in TERMINAL_PHASES
        )

    def job_event(self, kind: str | None, obj: JsonDict) -> None:
        if kind == "DELETED":
            self.cache.jobs.remove(obj)
        else:
            self.cache.jobs.put(obj)
        self._owner_changed(obj)

    def pod_event(self, kind: str | None, obj: JsonDict) -> None:
        if kind == "DELETED":
            self.cache.pods.remove(obj)
        else:
            self.cache.pods.put(obj)
        self._owner_changed(obj)

    def defer_record(self, key: Key) -> bool:
        """The reconciler's question after creating a Job: while other new FineTuneJobs wait for theirs, this
        one's status is written on a later visit (queued now), so a burst gets its Jobs first."""
        if not self.queue.urgent_waiting():
            return False
        self.queue.add(key)
        return True

    def _owner_changed(self, child: JsonDict) -> None:
        owner = owner_of_child(child)
        if owner is not None:
            self.queue.add(owner, after=CHILD_EVENT_DELAY)

    # -- workers --------------------------------------------------------------------------------------
    def _work(self) -> None:
        while (item := self.queue.get()) is not None:
            try:
                self._reconcile(item)
            finally:
                self.queue.done(item)

    def _reconcile(self, item: Item) -> None:
        namespace, name = item.key
        trigger = "poll" if item.progress else "event"
        try:
            self.reconciler.reconcile(namespace, name, trigger=trigger, read_progress=item.progress)
        except KubeError as err:
            with self._failures_lock:
                failures = self._failures.get(item.key, 0)
                self._failures[item.key] = failures + 1
            delay = retry_delay(err, failures)
            log = logger.info if err.kind in (ErrorKind.THROTTLED, ErrorKind.UNAVAILABLE) else logger.warning
            log("%s/%s: reconcile failed (%s); again in %.1f s", namespace, name, err, delay)
            self.queue.add(item.key, progress=item.progress, after=delay)
            return
        except Exception:
            # A bug must not end the worker, nor hide: logged with its traceback, tried again later.
            logger.exception("%s/%s: reconcile crashed", namespace, name)
            self.queue.add(item.key, after=MAX_BACKOFF_SECONDS)
            return
        with self._failures_lock:
            self._failures.pop(item.key, None)

    # -- the poll -------------------------------------------------------------------------------------
    def _poll(self) -> None:
        while not self._stop.wait(self.settings.progress_interval_seconds):
            try:
                self.poll_once()
            except Exception:
                logger.exception("the progress poll crashed; it goes on at the next interval")

    def poll_once(self) -> None:
        now = time.time()
        interval = self.settings.progress_interval_seconds
        for ftj in self.cache.finetunejobs.values():
            namespace, name = _key(ftj)
            phase = (ftj.get("status") or {}).get("phase")
            if not self.reconciler.wants_poll(namespace, name, str(phase) if phase else "Pending"):
                continue
            running = any(is_running(pod) for pod in self.cache.pods.of_finetunejob(namespace, name))
            read = running and self.reconciler.progress_due(namespace, name, now, interval)
            self.queue.add((namespace, name), progress=read)
        self.metrics.set_queue(len(self.queue), self.cache.sizes())
