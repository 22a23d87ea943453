"""The collector Job: re-reads a finished run's summary from its output prefix (pure).

When the trainer's Job completed but its pod is gone before the operator read the termination message
(pod garbage collection, a person, a lost node), the metrics and artifact URIs would be lost from the
status. The trainer also wrote them to `<output>/summary.json`; the operator holds no storage credentials,
so it runs `ftjob-train collect` with the trainer's own environment (credentials as Secret references
the kubelet resolves) and reads that pod's termination message instead.
"""

from __future__ import annotations

from typing import Final

from ftjob import contract

from .names import LABEL_COMPONENT, JsonDict, child_labels, collector_job_name, owner_reference
from .render import pod_identity_and_placement, trainer_container, validated_spec
from .settings import OperatorSettings

COLLECTOR_COMPONENT: Final = "collector"
COLLECTOR_DEADLINE_SECONDS: Final = 600
COLLECTOR_BACKOFF_LIMIT: Final = 2
COLLECTOR_RESOURCES: Final[JsonDict] = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}


def render_collector_job(ftj: JsonDict, settings: OperatorSettings) -> JsonDict:
    spec = validated_spec(ftj)
    meta = ftj["metadata"]
    labels = {**child_labels(meta["name"]), LABEL_COMPONENT: COLLECTOR_COMPONENT}
    container = trainer_container(spec, meta, settings)
    # The trainer's image, environment and security settings, but no GPU and no work directory: it reads
    # one small object.
    container.update(
        command=list(contract.COLLECT_COMMAND),
        resources=COLLECTOR_RESOURCES,
        volumeMounts=[{"name": "tmp", "mountPath": "/tmp"}],
        terminationMessagePolicy="File",
    )
    pod: JsonDict = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": container["securityContext"]["runAsUser"],
            "runAsGroup": container["securityContext"]["runAsGroup"],
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }
    pod.update(pod_identity_and_placement(spec, settings))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": collector_job_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [owner_reference(ftj)],
        },
        "spec": {
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": COLLECTOR_BACKOFF_LIMIT,
            "activeDeadlineSeconds": COLLECTOR_DEADLINE_SECONDS,
            # Not retried when the summary is missing or belongs to another run: reading again cannot help.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": contract.CONTAINER_NAME,
                            "operator": "In",
                            "values": sorted(
                                int(code)
                                for code in (
                                    *contract.USER_ERROR_EXIT_CODES,
                                    contract.ExitCode.RESULTS_NOT_FOUND,
                                )
                            ),
                        },
                    }
                ]
            },
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
