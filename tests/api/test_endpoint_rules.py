"""spec.storage.endpointUrl may never be the node's metadata service: the real API server (the generated
CRD's CEL rule) and the model that `ftjob validate`, the operator and the trainer run refuse the same
endpoints with the same words. Loopback stays valid in the API (`ftjob local` runs against MinIO or moto on
the workstation); in a cluster the guardrail refuses it (tests/tenancy)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from ftjob.api.storage import loopback_endpoint_problem
from ftjob.manifests import validate_document
from tests.api.apiserver import create
from tests.support.kube_client import KubeClient

QUICKSTART = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml").read_text()
)
MESSAGE = "must not be a link-local, unspecified or cloud metadata address"

REFUSED = [
    "http://169.254.169.254/latest/meta-data/",  # AWS, Azure, GCP, OCI metadata
    "http://169.254.170.2/v2/credentials",  # ECS task credentials
    "http://169.254.43518/",  # the same address, two-part form
    "http://2852039166/",  # 169.254.169.254 as one number
    "http://0xa9fea9fe/",  # and in hex
    "http://0251.0376.0251.0376/",  # and in octal
    "http://010.0.0.1:9000",  # leading zeros: octal to some resolvers
    "http://[fe80::1]:9000",
    "http://[FE80::a9fe:a9fe%25eth0]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::]:9000",
    "http://0.0.0.0:9000",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://Metadata.Google.Internal.:80/",
    "http://metadata/",
    "http://instance-data/latest/",
    "http://100.100.100.200/latest/meta-data/",  # Alibaba Cloud
    "http://[fd00:ec2::254]/",  # AWS over IPv6
]
ACCEPTED = [
    "http://minio.minio-system.svc:9000",
    "https://s3.eu-west-1.amazonaws.com",
    "https://storage.googleapis.com",
    "http://10.20.0.7:9000",
    "http://[2001:db8::7]:9000",
    "http://metadata-store.team-a.svc:9000",  # a name that merely starts like one
    "http://169.254.169.254.example.com/",  # a name: the trainer judges what it resolves to
    "http://127.0.0.1:9000",  # loopback: `ftjob local`; the cluster guardrail refuses it
    "http://localhost:9000",
    "http://[::1]:9000",
]


def with_endpoint(url: str) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(QUICKSTART)
    doc["spec"]["storage"] = {"endpointUrl": url, "pathStyle": True}
    return doc


def test_server_and_model_refuse_metadata_endpoints_with_the_same_words(
    api: KubeClient, namespace: str
) -> None:
    disagreements = []
    for url in REFUSED:
        answer = create(api, namespace, with_endpoint(url))
        errors = validate_document(with_endpoint(url), "case").errors
        if (
            answer.status != 422
            or MESSAGE not in answer.message
            or "spec.storage.endpointUrl" not in answer.message
        ):
            disagreements.append(f"server, {url}: {answer}")
        if len(errors) != 1 or not errors[0].startswith(f"spec.storage.endpointUrl: {MESSAGE}"):
            disagreements.append(f"model, {url}: {errors}")
    assert disagreements == []


def test_server_and_model_accept_other_endpoints(api: KubeClient, namespace: str) -> None:
    disagreements = []
    for url in ACCEPTED:
        answer = create(api, namespace, with_endpoint(url))
        errors = validate_document(with_endpoint(url), "case").errors
        if not answer.ok or errors:
            disagreements.append(f"{url}: server {answer}, model {errors}")
    assert disagreements == []


def test_loopback_is_named_for_whoever_runs_trainers_in_pods() -> None:
    for url in ("http://127.0.0.1:9000", "http://127.9.9.9/", "http://localhost:9000", "http://[::1]:9000"):
        assert loopback_endpoint_problem(url) == (
            "must not be a loopback address: in a trainer pod that is the pod itself, where no object store runs"
        )
    for url in ("http://minio.minio-system.svc:9000", "http://10.0.0.1/", "http://localhost.example.com/"):
        assert loopback_endpoint_problem(url) is None
