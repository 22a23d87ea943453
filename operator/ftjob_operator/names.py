"""Names, labels and ownership: how the operator recognises its own children."""

from __future__ import annotations

from enum import Enum
from typing import Any, Final

from ftjob.api import API_VERSION, GROUP, JOB_NAME_SUFFIX, KIND

JsonDict = dict[str, Any]

COMPONENT: Final = "ftjob-operator"
"""Reporting component of Events, value of `app.kubernetes.io/managed-by`."""

LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_FINETUNEJOB: Final = f"{GROUP}/finetunejob"
LABEL_KUEUE_QUEUE: Final = "kueue.x-k8s.io/queue-name"

ANNOTATION_PREFIX: Final = GROUP
"""kopf keeps its handler progress and diff base in annotations under this prefix."""


def job_name(finetunejob_name: str) -> str:
    return finetunejob_name + JOB_NAME_SUFFIX


def service_name(finetunejob_name: str) -> str:
    """The headless Service of a multi-node run (render_distributed.py). Service names are DNS-1035 labels,
    which must start with a letter; FineTuneJob names may start with a digit."""
    name = job_name(finetunejob_name)
    return name if name[0].isalpha() else f"ftj-{name}"


COLLECTOR_JOB_SUFFIX: Final = "-collect"


def collector_job_name(finetunejob_name: str) -> str:
    """The Job that re-reads a finished run's summary from the output prefix (render_collector.py)."""
    return finetunejob_name + COLLECTOR_JOB_SUFFIX


def child_labels(finetunejob_name: str) -> dict[str, str]:
    """Labels of the Job and of its pod template."""
    return {
        LABEL_NAME: "ftjob",
        LABEL_INSTANCE: finetunejob_name,
        LABEL_COMPONENT: "trainer",
        LABEL_MANAGED_BY: COMPONENT,
        LABEL_PART_OF: "ftjob",
        LABEL_FINETUNEJOB: finetunejob_name,
    }


def owner_reference(ftj: JsonDict) -> JsonDict:
    meta = ftj["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_of(obj: JsonDict) -> JsonDict | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


class Ownership(Enum):
    OWNED = "owned"
    """Controlled by this very FineTuneJob (same uid): adopt it."""
    STALE = "stale"
    """Controlled by an earlier FineTuneJob of the same name, now gone: the garbage collector removes it."""
    FOREIGN = "foreign"
    """Anything else: not ours to touch."""


def ownership(child: JsonDict, ftj: JsonDict) -> Ownership:
    ref = controller_of(child)
    if ref is None or ref.get("kind") != KIND or str(ref.get("apiVersion", "")).split("/")[0] != GROUP:
        return Ownership.FOREIGN
    if ref.get("uid") == ftj["metadata"].get("uid"):
        return Ownership.OWNED
    # Names are unique in a namespace: a controller of this name with another uid was deleted, so the
    # garbage collector will delete this child too (an orphaning delete would have removed the reference).
    if ref.get("name") == ftj["metadata"].get("name"):
        return Ownership.STALE
    return Ownership.FOREIGN


def owner_of_child(child: JsonDict) -> tuple[str, str] | None:
    """(namespace, FineTuneJob name) of a Job or pod the operator created, from its controller reference
    (Jobs) or its label (pods, whose controller is the Job)."""
    meta = child.get("metadata", {})
    namespace = meta.get("namespace")
    if not namespace:
        return None
    ref = controller_of(child)
    if ref is not None and ref.get("kind") == KIND:
        return namespace, str(ref["name"])
    name = (meta.get("labels") or {}).get(LABEL_FINETUNEJOB)
    return (namespace, name) if name else None
