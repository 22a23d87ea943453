"""render_job: FineTuneJob + settings -> Job, checked on plain dicts."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from ftjob.contract import SECRET_ENV_NAMES
from ftjob_operator.render import render_job, scale_quantity
from ftjob_operator.settings import DEFAULT_TRAINER_IMAGE, OperatorSettings

from .factories import NAME, NAMESPACE, UID, ftj

SETTINGS = OperatorSettings()


def dig(obj: Any, dotted: str) -> Any:
    """`a.b[0].c`, or `env[NAME]` to pick the item whose `name` is NAME."""
    for part in re.findall(r"[^.\[\]]+|\[[^\]]+\]", dotted):
        if part.startswith("["):
            key = part[1:-1]
            if key.isdigit():
                obj = obj[int(key)]
            else:
                matches = [item for item in obj if item.get("name") == key]
                if not matches:
                    return _ABSENT
                obj = matches[0]
        elif isinstance(obj, dict):
            if part not in obj:
                return _ABSENT
            obj = obj[part]
        else:
            return _ABSENT
    return obj


_ABSENT = object()
ABSENT = _ABSENT
POD = "spec.template.spec"
C = f"{POD}.containers[trainer]"

DEFAULTS: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata.name": f"{NAME}-train",
    "metadata.namespace": NAMESPACE,
    "metadata.ownerReferences": [
        {
            "apiVersion": "ftjob.dev/v1alpha1",
            "kind": "FineTuneJob",
            "name": NAME,
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ],
    "metadata.labels": {
        "app.kubernetes.io/name": "ftjob",
        "app.kubernetes.io/instance": NAME,
        "app.kubernetes.io/component": "trainer",
        "app.kubernetes.io/managed-by": "ftjob-operator",
        "app.kubernetes.io/part-of": "ftjob",
        "ftjob.dev/finetunejob": NAME,
    },
    "spec.completions": 1,
    "spec.parallelism": 1,
    "spec.backoffLimit": 2,
    "spec.suspend": False,
    "spec.podReplacementPolicy": "Failed",
    "spec.activeDeadlineSeconds": 7 * 24 * 3600,  # the operator's default: no Job holds GPUs forever
    "spec.ttlSecondsAfterFinished": ABSENT,
    "spec.podFailurePolicy.rules": [
        # Counted: tolerated backoffLimit times, never forever (an eviction for a full disk repeats).
        {"action": "Count", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [2, 3, 4, 6, 7, 9]},
        },
    ],
    "spec.template.metadata.labels": {
        "app.kubernetes.io/name": "ftjob",
        "app.kubernetes.io/instance": NAME,
        "app.kubernetes.io/component": "trainer",
        "app.kubernetes.io/managed-by": "ftjob-operator",
        "app.kubernetes.io/part-of": "ftjob",
        "ftjob.dev/finetunejob": NAME,
    },
    f"{POD}.restartPolicy": "Never",
    f"{POD}.terminationGracePeriodSeconds": 120,
    f"{POD}.automountServiceAccountToken": False,
    f"{POD}.serviceAccountName": ABSENT,
    f"{POD}.priorityClassName": ABSENT,
    f"{POD}.nodeSelector": ABSENT,
    f"{POD}.tolerations": ABSENT,
    f"{POD}.securityContext": {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    f"{C}.image": DEFAULT_TRAINER_IMAGE,
    f"{C}.imagePullPolicy": "IfNotPresent",
    f"{C}.command": ["ftjob-train"],
    f"{C}.resources": {
        "requests": {"cpu": "4", "memory": "32Gi"},
        "limits": {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": "1"},
    },
    f"{C}.securityContext": {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    f"{C}.terminationMessagePath": "/dev/termination-log",
    f"{C}.terminationMessagePolicy": "FallbackToLogsOnError",
    f"{C}.volumeMounts": [
        {"name": "workspace", "mountPath": "/workspace"},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
    ],
    f"{POD}.volumes": [
        {"name": "workspace", "emptyDir": {"sizeLimit": "128Gi"}},  # 4 x the memory (32Gi)
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
        {"name": "tmp", "emptyDir": {}},
    ],
    f"{C}.env[FTJOB_NAME].value": NAME,
    f"{C}.env[FTJOB_NAMESPACE].value": NAMESPACE,
    f"{C}.env[FTJOB_UID].value": UID,
    f"{C}.env[FTJOB_WORKDIR].value": "/workspace",
    f"{C}.env[FTJOB_TERMINATION_LOG].value": "/dev/termination-log",
    f"{C}.env[PYTHONUNBUFFERED].value": "1",
    f"{C}.env[HF_HOME].value": "/workspace/hf-home",
    f"{C}.env[AWS_ACCESS_KEY_ID]": ABSENT,
    f"{C}.env[HF_TOKEN]": ABSENT,
}

CASES = [
    pytest.param({}, SETTINGS, DEFAULTS, id="defaults"),
    pytest.param(
        {"image": "registry.example/trainer:dev"},
        OperatorSettings(trainer_image="ghcr.io/other:1", image_pull_policy="Always"),
        {f"{C}.image": "registry.example/trainer:dev", f"{C}.imagePullPolicy": "Always"},
        id="image-from-spec-overrides-operator-default",
    ),
    pytest.param(
        {},
        OperatorSettings(trainer_image="ghcr.io/other:1"),
        {f"{C}.image": "ghcr.io/other:1"},
        id="operator-image",
    ),
    pytest.param(
        {"resources": {"gpus": 0, "cpu": 2, "memory": "8Gi"}},
        SETTINGS,
        {
            f"{C}.resources": {
                "requests": {"cpu": "2", "memory": "8Gi"},
                "limits": {"cpu": "2", "memory": "8Gi"},
            }
        },
        id="cpu-only-no-gpu-limit",
    ),
    pytest.param(
        {"resources": {"gpus": 1, "gpuResourceName": "amd.com/gpu"}},
        SETTINGS,
        {f"{C}.resources.limits": {"cpu": "4", "memory": "32Gi", "amd.com/gpu": "1"}},
        id="gpu-resource-name-and-count",
    ),
    pytest.param(
        {"scheduling": {"queueName": "team-gpus", "priorityClassName": "training-low"}},
        SETTINGS,
        {
            "spec.suspend": True,
            "metadata.labels": {**DEFAULTS["metadata.labels"], "kueue.x-k8s.io/queue-name": "team-gpus"},
            "spec.template.metadata.labels": DEFAULTS["metadata.labels"],
            f"{POD}.priorityClassName": "training-low",
        },
        id="kueue-queue-created-suspended-with-label",
    ),
    pytest.param({"suspend": True}, SETTINGS, {"spec.suspend": True}, id="suspended-without-queue"),
    pytest.param(
        {"activeDeadlineSeconds": 7200, "backoffLimit": 5, "ttlSecondsAfterFinished": 86400},
        SETTINGS,
        # The TTL is the operator's to apply, after the final status: never the TTL controller's.
        {"spec.activeDeadlineSeconds": 7200, "spec.backoffLimit": 5, "spec.ttlSecondsAfterFinished": ABSENT},
        id="deadline-backoff-ttl",
    ),
    pytest.param(
        {"storage": {"credentialsSecretRef": {"name": "minio-creds", "sessionTokenKey": "token"}}},
        SETTINGS,
        {
            f"{C}.env[AWS_ACCESS_KEY_ID]": {
                "name": "AWS_ACCESS_KEY_ID",
                "valueFrom": {"secretKeyRef": {"name": "minio-creds", "key": "AWS_ACCESS_KEY_ID"}},
            },
            f"{C}.env[AWS_SECRET_ACCESS_KEY]": {
                "name": "AWS_SECRET_ACCESS_KEY",
                "valueFrom": {"secretKeyRef": {"name": "minio-creds", "key": "AWS_SECRET_ACCESS_KEY"}},
            },
            f"{C}.env[AWS_SESSION_TOKEN]": {
                "name": "AWS_SESSION_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": "minio-creds", "key": "token"}},
            },
        },
        id="s3-credentials-as-secret-refs",
    ),
    pytest.param(
        {
            "storage": {
                "credentialsSecretRef": {
                    "name": "keys",
                    "accessKeyIdKey": "id",
                    "secretAccessKeyKey": "secret",
                }
            }
        },
        SETTINGS,
        {
            f"{C}.env[AWS_ACCESS_KEY_ID].valueFrom.secretKeyRef": {"name": "keys", "key": "id"},
            f"{C}.env[AWS_SECRET_ACCESS_KEY].valueFrom.secretKeyRef": {"name": "keys", "key": "secret"},
            f"{C}.env[AWS_SESSION_TOKEN]": ABSENT,
        },
        id="s3-credentials-custom-keys-no-session-token",
    ),
    pytest.param(
        {
            "baseModel": {
                "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct@main",
                "tokenSecretRef": {"name": "hf", "key": "token"},
            }
        },
        SETTINGS,
        {
            f"{C}.env[HF_TOKEN]": {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}},
            }
        },
        id="hf-token-as-secret-ref",
    ),
    pytest.param(
        {
            "resources": {
                "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "shmSize": "16Gi",
                "scratchSize": "200Gi",
            }
        },
        SETTINGS,
        {
            f"{POD}.nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            f"{POD}.tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            f"{POD}.volumes[dshm]": {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
            f"{POD}.volumes[workspace]": {"name": "workspace", "emptyDir": {"sizeLimit": "200Gi"}},
        },
        id="placement-shm-scratch",
    ),
    pytest.param(
        {},
        OperatorSettings(trainer_service_account="ftjob-trainer"),
        {f"{POD}.serviceAccountName": "ftjob-trainer"},
        id="operator-default-service-account",
    ),
    pytest.param(
        {"serviceAccountName": "irsa-bucket-writer"},
        OperatorSettings(trainer_service_account="ftjob-trainer"),
        {f"{POD}.serviceAccountName": "irsa-bucket-writer"},
        id="spec-service-account-wins",
    ),
    pytest.param(
        {},
        OperatorSettings(termination_grace_period_seconds=600),
        {f"{POD}.terminationGracePeriodSeconds": 600},
        id="termination-grace-period-from-settings",
    ),
    pytest.param(
        {"checkpointing": {"terminationGracePeriodSeconds": 900}},
        OperatorSettings(termination_grace_period_seconds=600),
        {f"{POD}.terminationGracePeriodSeconds": 900},
        id="termination-grace-period-from-spec-wins",
    ),
]


@pytest.mark.parametrize(("spec", "settings", "expected"), CASES)
def test_render_job(spec: dict[str, Any], settings: OperatorSettings, expected: dict[str, Any]) -> None:
    job = render_job(ftj(spec), settings)
    mismatches = {path: (dig(job, path), want) for path, want in expected.items() if dig(job, path) != want}
    assert not mismatches, json.dumps(
        {
            p: {"got": "<absent>" if g is ABSENT else g, "want": "<absent>" if w is ABSENT else w}
            for p, (g, w) in mismatches.items()
        },
        indent=1,
    )


def test_trainer_gets_the_whole_validated_spec_except_suspend() -> None:
    obj = ftj({"suspend": True, "training": {"epochs": 1}})
    env = dig(render_job(obj, SETTINGS), f"{C}.env[FTJOB_SPEC].value")
    doc = json.loads(env)
    assert "suspend" not in doc
    assert doc["training"]["epochs"] == 1
    assert doc["peft"]["method"] == "qlora"  # defaults are filled in: the trainer reads the same model
    assert doc["baseModel"] == {"uri": "s3://models/smollm2/", "trustRemoteCode": False}


def test_toggling_suspend_leaves_the_pod_template_alone() -> None:
    running, suspended = (
        render_job(ftj({"suspend": False}), SETTINGS),
        render_job(ftj({"suspend": True}), SETTINGS),
    )
    assert running["spec"]["template"] == suspended["spec"]["template"]
    assert (running["spec"]["suspend"], suspended["spec"]["suspend"]) == (False, True)


def test_no_credential_value_in_the_job() -> None:
    spec = {
        "baseModel": {"uri": "hf://org/model@main", "tokenSecretRef": {"name": "hf", "key": "token"}},
        "storage": {"credentialsSecretRef": {"name": "creds", "sessionTokenKey": "session"}},
    }
    env = dig(render_job(ftj(spec), SETTINGS), f"{C}.env")
    secret_env = [item for item in env if item["name"] in SECRET_ENV_NAMES]
    assert {item["name"] for item in secret_env} == set(SECRET_ENV_NAMES)
    assert all("value" not in item and set(item["valueFrom"]) == {"secretKeyRef"} for item in secret_env)


def test_rendering_is_a_pure_function() -> None:
    obj = ftj({"scheduling": {"queueName": "q"}})
    before = json.dumps(obj, sort_keys=True)
    assert render_job(obj, SETTINGS) == render_job(obj, SETTINGS)
    assert json.dumps(obj, sort_keys=True) == before


@pytest.mark.parametrize(
    ("quantity", "scaled"),
    [("32Gi", "128Gi"), ("1.5Gi", "6Gi"), ("34359738368", "137438953472"), ("1e9", "4e9"), ("500M", "2000M")],
)
def test_scale_quantity(quantity: str, scaled: str) -> None:
    assert scale_quantity(quantity, 4) == scaled


def test_the_workspace_is_bounded_by_default_and_the_deadline_is_the_operator_s() -> None:
    job = render_job(
        ftj({"resources": {"memory": "24Gi"}}), OperatorSettings(default_active_deadline_seconds=60)
    )
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["workspace"]["emptyDir"] == {"sizeLimit": "96Gi"}
    assert job["spec"]["activeDeadlineSeconds"] == 60
    job = render_job(
        ftj({"activeDeadlineSeconds": 7200}), OperatorSettings(default_active_deadline_seconds=60)
    )
    assert job["spec"]["activeDeadlineSeconds"] == 7200


def test_several_gpus_on_one_node_run_torchrun_standalone() -> None:
    job = render_job(ftj({"resources": {"gpus": 4}}), SETTINGS)
    assert "completionMode" not in job["spec"] and job["spec"]["completions"] == 1
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == [
        "ftjob-train",
        "launch",
        "--standalone",
        "--nnodes=1",
        "--nproc-per-node=4",
    ]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    # torchrun's workers get the pod's grace period (less its own exit) to save a checkpoint after SIGTERM.
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == str(SETTINGS.termination_grace_period_seconds - 10)


def test_several_nodes_are_an_indexed_job_behind_a_headless_service() -> None:
    from ftjob_operator.render_distributed import render_service

    obj = ftj({"resources": {"gpus": 2, "nodes": 3}, "backoffLimit": 4})
    job = render_job(obj, SETTINGS)
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    # The run is done when index 0 (global rank 0, which publishes) is: the others are then stopped.
    assert spec["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
    # 4 gang restarts: when index 0 dies the other agents lose its store and fail too (3 pods per restart).
    assert spec["backoffLimit"] == 12
    assert spec["template"]["spec"]["subdomain"] == f"{NAME}-train"
    assert spec["template"]["spec"]["containers"][0]["command"] == [
        "ftjob-train",
        "launch",
        "--nnodes=3",
        "--nproc-per-node=2",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={NAME}-train-0.{NAME}-train:29400",
        f"--rdzv-id={UID}",
        "--max-restarts=4",  # a replaced pod rejoins; the others wait for it instead of failing too
    ]
    service = render_service(obj)
    assert service["metadata"]["name"] == f"{NAME}-train"
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": f"{NAME}-train"}
    assert service["metadata"]["ownerReferences"][0]["uid"] == UID


def test_a_service_name_starts_with_a_letter() -> None:
    from ftjob_operator.names import service_name

    assert service_name("7b-tune") == "ftj-7b-tune-train"
    assert service_name("tune") == "tune-train"
