"""kopf wiring only: which events trigger a reconcile, and kopf's own settings.

Every handler returns None, so kopf writes nothing into status; kopf keeps its progress and diff base in
annotations under the project's prefix. There is no on.delete handler and no timer or daemon (kopf would
add a finalizer for those): deleting a FineTuneJob is the garbage collector's business, and the progress
poll runs as a plain task instead.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from typing import Any

import kopf

from ftjob.api import GROUP, PLURAL, VERSION

from .kube import ErrorKind, KubeError
from .names import ANNOTATION_PREFIX, COMPONENT, LABEL_MANAGED_BY, owner_of_child
from .reconcile import Reconciler
from .settings import OperatorSettings

logger = logging.getLogger(__name__)

_POLLER = "progress-poller"


class LiveSet:
    """FineTuneJobs that are not finished: the ones the poll re-checks (fed by FineTuneJob watch events)."""

    def __init__(self) -> None:
        self._keys: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def update(self, namespace: str, name: str, live: bool) -> None:
        with self._lock:
            if live:
                self._keys.add((namespace, name))
            else:
                self._keys.discard((namespace, name))

    def snapshot(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._keys)


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    # Changing these later would make kopf run the creation handlers of every object again.
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    s.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"  # named, but no handler ever requires it
    # kopf would post its log lines as Events with reason "Logging"; the operator posts its own.
    s.posting.enabled = False
    # Watch only the operator's own children, server-side, instead of every Job and pod of the cluster.
    managed = f"{LABEL_MANAGED_BY}={COMPONENT}"
    s.watching.label_selectors["batch", "v1", "jobs"] = managed
    s.watching.label_selectors["v1", "pods"] = managed
    # No watching of CustomResourceDefinitions and Namespaces (cluster-wide reads the operator would
    # otherwise need): resources are discovered once at start-up (Helm installs the CRD first) and
    # --namespace names are taken literally.
    s.scanning.disabled = True
    s.execution.max_workers = 8
    return s


def _retry_later(err: KubeError) -> kopf.TemporaryError:
    if err.kind is ErrorKind.THROTTLED and err.retry_after is not None:
        delay = max(1.0, err.retry_after)
    elif err.kind is ErrorKind.REJECTED:
        delay = 60.0  # e.g. a missing permission: only an administrator can fix it
    else:
        delay = 5.0
    return kopf.TemporaryError(f"Kubernetes API: {err}", delay=delay)


def build_registry(reconciler: Reconciler, settings: OperatorSettings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    live = LiveSet()

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    def reconcile_change(namespace: str | None, name: str, trigger: str) -> None:
        if namespace is None:  # FineTuneJobs are namespaced; kopf types allow cluster-scoped objects
            return
        try:
            phase = reconciler.reconcile(namespace, name, trigger=trigger)
        except KubeError as err:
            raise _retry_later(err) from err
        live.update(namespace, name, reconciler.wants_poll(namespace, name, phase))

    @kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile-on-create", registry=registry)
    def on_create(namespace: str | None, name: str, **_: Any) -> None:
        reconcile_change(namespace, name, "create")

    @kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile-on-resume", registry=registry)
    def on_resume(namespace: str | None, name: str, **_: Any) -> None:
        reconcile_change(namespace, name, "resume")

    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", id="reconcile-on-update", registry=registry)
    def on_update(namespace: str | None, name: str, **_: Any) -> None:
        reconcile_change(namespace, name, "update")

    @kopf.on.event(GROUP, VERSION, PLURAL, id="track-finetunejob", registry=registry)
    def on_finetunejob_event(type: str, body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
        if namespace is None:
            return
        if type == "DELETED":
            live.update(namespace, name, False)
            reconciler.forget(namespace, name)
            return
        if body.get("metadata", {}).get("deletionTimestamp"):
            live.update(namespace, name, False)
            return
        phase = (body.get("status") or {}).get("phase")
        live.update(namespace, name, reconciler.wants_poll(namespace, name, str(phase)))

    def reconcile_owner(body: kopf.Body, kind: str) -> None:
        owner = owner_of_child(dict(body))
        if owner is None:
            return
        try:
            phase = reconciler.reconcile(*owner, trigger=kind)
        except KubeError as err:
            # Watch events are not retried by kopf; the poll picks the job up again.
            logger.warning("%s/%s: reconcile after a %s event failed: %s", *owner, kind, err)
            return
        live.update(*owner, reconciler.wants_poll(*owner, phase))

    @kopf.on.event(
        "batch", "v1", "jobs", labels={LABEL_MANAGED_BY: COMPONENT}, id="job-event", registry=registry
    )
    def on_job_event(body: kopf.Body, **_: Any) -> None:
        reconcile_owner(body, "job")

    @kopf.on.event("v1", "pods", labels={LABEL_MANAGED_BY: COMPONENT}, id="pod-event", registry=registry)
    def on_pod_event(body: kopf.Body, **_: Any) -> None:
        reconcile_owner(body, "pod")

    @kopf.on.startup(id="start-progress-poller", registry=registry)
    async def start_poller(memo: kopf.Memo, **_: Any) -> None:
        memo[_POLLER] = asyncio.create_task(poll(reconciler, live, settings.progress_interval_seconds))

    @kopf.on.cleanup(id="stop-progress-poller", registry=registry)
    async def stop_poller(memo: kopf.Memo, **_: Any) -> None:
        task = memo.get(_POLLER)
        if isinstance(task, asyncio.Task):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return registry


async def poll(reconciler: Reconciler, live: LiveSet, interval: float) -> None:
    """Every interval: read the progress of running trainers and re-check every unfinished job (which also
    catches what no event announces, such as an image pull failing for longer than its grace period), and
    every finished one whose Job awaits its TTL."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        for namespace, name in live.snapshot():
            call = functools.partial(
                reconciler.reconcile, namespace, name, trigger="poll", read_progress=True
            )
            try:
                phase = await loop.run_in_executor(None, call)
            except KubeError as err:
                logger.warning("%s/%s: progress poll failed: %s", namespace, name, err)
                continue
            except Exception:
                # A bug must not end the poll for every other job.
                logger.exception("%s/%s: progress poll crashed", namespace, name)
                continue
            live.update(namespace, name, reconciler.wants_poll(namespace, name, phase))
