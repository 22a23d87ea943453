"""Access to S3 and S3-compatible object stores (MinIO, Ceph, R2...)."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import Field

from .common import ObjectName, SecretKey
from .meta import ApiModel
from .rules import FieldRule
from .uris import ENDPOINT_HOST_CEL, URL_USERINFO, endpoint_host, endpoint_host_is_safe

NO_CREDENTIALS_IN_URL = FieldRule(
    holds=lambda url: re.match(URL_USERINFO, url) is None,
    cel=f"!self.matches(r'{URL_USERINFO}')",
    message="must not contain credentials (user:password@); put them in the Secret named by credentialsSecretRef",
)
"""The endpoint is copied into the Job, the status and Events: a password in it would be shown to anyone who
can read those."""

NO_METADATA_ENDPOINT = FieldRule(
    holds=endpoint_host_is_safe,
    cel=ENDPOINT_HOST_CEL,
    message=(
        "must not be a link-local, unspecified or cloud metadata address (or a numeric host that is no "
        "dotted quad): that is the node's metadata service, which hands out the node's credentials"
    ),
)
"""The trainer sends signed requests to the endpoint and quotes its answers in errors: pointed at the
metadata service, a FineTuneJob could read the node's identity. No object store lives there."""

EndpointUrl = Annotated[
    str,
    Field(min_length=1, max_length=512, pattern=r"^https?://[^\s/]+(/[^\s]*)?$"),
    NO_CREDENTIALS_IN_URL,
    NO_METADATA_ENDPOINT,
]

LOOPBACK_HOSTS = ("localhost",)


def loopback_endpoint_problem(url: str) -> str | None:
    """Why a loopback endpoint cannot serve a trainer *pod* (None when it is not one). Not part of the API's
    validation: loopback is the normal endpoint of `ftjob local` (MinIO or moto on the workstation). In a
    cluster the guardrail (a ValidatingAdmissionPolicy, docs/multi-tenant.md) refuses it, and an operator
    may call this to refuse it too."""
    host = endpoint_host(url).rstrip(".")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host in LOOPBACK_HOSTS or host.endswith(".localhost")
    if not loopback:
        return None
    return (
        "must not be a loopback address: in a trainer pod that is the pod itself, where no object store runs"
    )


class CredentialsSecretRef(ApiModel):
    """A Secret with static S3 keys. Leave unset to use the pod's identity (IRSA, workload identity)."""

    name: ObjectName
    """Name of the Secret in the FineTuneJob's namespace."""
    access_key_id_key: SecretKey = "AWS_ACCESS_KEY_ID"
    """Key holding the access key id."""
    secret_access_key_key: SecretKey = "AWS_SECRET_ACCESS_KEY"
    """Key holding the secret access key."""
    session_token_key: SecretKey | None = None
    """Key holding a session token, for temporary credentials."""


class StorageSpec(ApiModel):
    """How `s3://` URIs are reached."""

    endpoint_url: EndpointUrl | None = None
    """Endpoint of an S3-compatible store, e.g. `http://minio.storage:9000`. Unset means AWS S3."""
    region: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")
    """Region of the bucket."""
    path_style: bool = False
    """Address buckets as `endpoint/bucket/key` instead of `bucket.endpoint/key` (MinIO, Ceph need it)."""
    verify_tls: bool = True
    """Verify the endpoint's TLS certificate."""
    credentials_secret_ref: CredentialsSecretRef | None = None
    """Static credentials; without it the default AWS credential chain of the pod applies."""
