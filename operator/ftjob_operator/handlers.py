"""kopf wiring only: the watches that feed the controller, and kopf's own settings.

Every handler is an `on.event` handler that hands the object to the `Controller` (controller.py) and
returns: kopf keeps no progress or diff base for them, so it writes nothing to the FineTuneJobs (no
annotations, no finalizer) and a watch event costs no request. The reconciles run on the controller's own
worker threads, fed by its queue, never in kopf's handler machinery: a burst of new FineTuneJobs is not
slowed down by kopf's per-handler bookkeeping, and a throttled API server never holds a kopf thread.

Deleting a FineTuneJob is the garbage collector's business (ownerReferences); there is no on.delete handler.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from ftjob.api import GROUP, PLURAL, VERSION

from .controller import Controller
from .names import ANNOTATION_PREFIX, COMPONENT, LABEL_MANAGED_BY
from .settings import OperatorSettings

logger = logging.getLogger(__name__)


class NoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """No diff base at all. kopf builds one (a deep copy of the object) for every watch event, to detect
    changes for on.create/on.update handlers; the operator has none, and those copies were half of what
    kopf spent per event in a burst of 500 FineTuneJobs."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    # Changing these later would make kopf run the creation handlers of every object again.
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    s.persistence.diffbase_storage = NoDiffBase(prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
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
    # The initial listing of each watch in pages: a thousand Jobs or pods at once would be parsed at once.
    s.watching.chunk_size = 100
    # Only the start-up and clean-up handlers run in kopf's threads; reconciles have their own (controller.py).
    s.execution.max_workers = 2
    return s


def build_registry(controller: Controller) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    # The raw event (type and object as the API server sent them); `type` is None for the objects of the
    # watch's initial listing.
    @kopf.on.event(GROUP, VERSION, PLURAL, id="finetunejob-event", registry=registry)
    async def on_finetunejob_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.finetunejob_event(event.get("type"), dict(event["object"]))

    @kopf.on.event(
        "batch", "v1", "jobs", labels={LABEL_MANAGED_BY: COMPONENT}, id="job-event", registry=registry
    )
    async def on_job_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.job_event(event.get("type"), dict(event["object"]))

    @kopf.on.event("v1", "pods", labels={LABEL_MANAGED_BY: COMPONENT}, id="pod-event", registry=registry)
    async def on_pod_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.pod_event(event.get("type"), dict(event["object"]))

    @kopf.on.startup(id="start-controller", registry=registry)
    def start_controller(**_: Any) -> None:
        controller.start()

    @kopf.on.cleanup(id="stop-controller", registry=registry)
    def stop_controller(**_: Any) -> None:
        controller.stop()

    return registry
