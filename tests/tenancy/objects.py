"""The objects the guardrail tests send: a team's FineTuneJobPolicy and FineTuneJobs inside or outside it."""

from __future__ import annotations

import copy
from typing import Any, Final

from tests.helm.rendering import JsonDict

POLICY_CRD: Final = "finetunejobpolicies.ftjob.dev"
ENDPOINT: Final = "http://minio.minio-system.svc:9000"
# Listed in the policy on purpose: the loopback rule holds whatever a policy lists.
LOOPBACK: Final = "http://127.0.0.1:9000"
MAX_DEADLINE: Final = 86_400
MAX_GPUS: Final = 0
"""A CPU-only team: the CRD already refuses more than 1 GPU (single-GPU trainer), so a cap of 1 could not
be seen refusing anything."""


def policy() -> JsonDict:
    return {
        "apiVersion": "ftjob.dev/v1alpha1",
        "kind": "FineTuneJobPolicy",
        "metadata": {"name": "default"},
        "spec": {
            "baseModelPrefixes": ["s3://team-models/approved/"],
            "hfOrganizations": ["HuggingFaceTB"],
            "dataPrefixes": ["s3://team-data/"],
            "outputPrefixes": ["s3://team-results/runs/"],
            "storageEndpoints": [ENDPOINT, LOOPBACK],
            "images": ["registry.example.com/ml/"],
            "serviceAccountNames": ["ftjob-trainer-research"],
            "maxGpusPerJob": MAX_GPUS,
            "maxActiveDeadlineSeconds": MAX_DEADLINE,
        },
    }


def finetunejob(changes: dict[str, Any] | None = None, name: str = "tuned") -> JsonDict:
    """A FineTuneJob inside the policy, with `changes` applied ("a.b.c": value; None removes the field).
    Suspended: no trainer pod is wanted where no operator runs."""
    ftj: JsonDict = {
        "apiVersion": "ftjob.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct@main"},
            "data": {"trainUri": "s3://team-data/orders/train.jsonl"},
            "output": {"uri": "s3://team-results/runs/orders/"},
            "storage": {"endpointUrl": ENDPOINT, "pathStyle": True},
            "resources": {"gpus": 0, "cpu": "2", "memory": "8Gi"},
            "peft": {"method": "lora"},
            "activeDeadlineSeconds": 3600,
            "suspend": True,
        },
    }
    for path, value in (changes or {}).items():
        put(ftj["spec"], path, value)
    return ftj


def put(doc: JsonDict, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        doc = doc.setdefault(key, {})
    if value is None:
        doc.pop(last, None)
    else:
        doc[last] = copy.deepcopy(value)
