"""`s3://bucket/key` URIs through boto3, for AWS and S3-compatible stores (MinIO, Ceph, R2)."""

from __future__ import annotations

import ipaddress
import logging
import socket
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    SSLError,
)

from ftjob.api.storage import StorageSpec
from ftjob.api.uris import S3Location, endpoint_host, is_never_storage_address, mask_userinfo, parse_s3_uri
from ftjob.contract import (
    ENV_AWS_ACCESS_KEY_ID,
    ENV_AWS_SECRET_ACCESS_KEY,
    ENV_AWS_SESSION_TOKEN,
    SECRET_ENV_NAMES,
)
from ftjob_trainer.errors import ConfigInvalid, InputUnavailable, StorageUnreachable, TrainerError

from ._base import ProgressCallback, StorageOptions, stream_to_file

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

log = logging.getLogger(__name__)

_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_DENIED_CODES = frozenset({"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem"})
_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired"}
)
# Codes botocore's standard mode retries although their status is below 500.
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequestsException",
     "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"}
)  # fmt: skip
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys


EXCERPT_CHARS: Final = 200
"""The most of a storage endpoint's answer (an error message) the trainer ever quotes: what it says goes
into the pod's termination message, the FineTuneJob's status and Events, which the whole team reads. Quoted
at length, a FineTuneJob could make any HTTP service the trainer reaches (an in-cluster service, a
metadata service) answer into its status."""


def make_s3_backend(spec: StorageSpec, env: Mapping[str, str], options: StorageOptions) -> S3Backend:
    if spec.endpoint_url is not None:
        refuse_metadata_endpoint(spec.endpoint_url, env)
    key_id, secret, token = _static_credentials(env)
    ref = spec.credentials_secret_ref
    if ref is not None and (key_id is None or (ref.session_token_key is not None and token is None)):
        # The kubelet refuses to start a pod whose Secret key is missing, but a trainer started otherwise
        # (`ftjob local`, a hand-made pod) must not then carry on as whatever identity the default chain
        # finds: the node's instance role, which may reach other teams' buckets.
        missing = [ENV_AWS_ACCESS_KEY_ID, ENV_AWS_SECRET_ACCESS_KEY]
        if ref.session_token_key is not None:
            missing.append(ENV_AWS_SESSION_TOKEN)
        raise ConfigInvalid(
            f"spec.storage.credentialsSecretRef names Secret '{ref.name}', but "
            f"{' and '.join(name for name in missing if not env.get(name))} is not in the environment: "
            "refusing to fall back to the pod's or the node's identity"
        )
    session = boto3.session.Session(
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        aws_session_token=token,
        region_name=_region(spec, env),
    )
    client = session.client(
        "s3", endpoint_url=spec.endpoint_url, verify=_verify(spec, env), config=_config(spec, options)
    )
    secrets = [env[name] for name in SECRET_ENV_NAMES if env.get(name)]
    return S3Backend(client, options, secrets)


def _static_credentials(env: Mapping[str, str]) -> tuple[str | None, str | None, str | None]:
    """Keys from `env` when it holds them; otherwise none, and boto3's default chain (web identity/IRSA,
    profile, instance metadata) finds the pod's identity."""
    key_id, secret = env.get(ENV_AWS_ACCESS_KEY_ID), env.get(ENV_AWS_SECRET_ACCESS_KEY)
    if bool(key_id) != bool(secret):
        missing = ENV_AWS_SECRET_ACCESS_KEY if key_id else ENV_AWS_ACCESS_KEY_ID
        raise ConfigInvalid(
            f"only one of {ENV_AWS_ACCESS_KEY_ID} and {ENV_AWS_SECRET_ACCESS_KEY} is set ({missing} is missing): "
            "set both, or neither to use the pod's identity"
        )
    if not key_id or not secret:
        return None, None, None
    return key_id, secret, env.get(ENV_AWS_SESSION_TOKEN) or None


def refuse_metadata_endpoint(endpoint: str, env: Mapping[str, str]) -> None:
    """Refuse an endpoint that is, or whose name resolves to, a link-local, unspecified or metadata address.
    The API refuses such literals; a name (`169.254.169.254.nip.io`, a DNS record an attacker controls)
    is only known here. Through an HTTP proxy the proxy resolves, and its own policy applies."""
    host = endpoint_host(endpoint)
    if not host or _proxied(endpoint, env):
        return
    port = urlsplit(endpoint).port or (443 if endpoint.startswith("https:") else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return  # unresolvable: the first request fails with StorageUnreachable, naming the endpoint
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if is_never_storage_address(address):
            raise ConfigInvalid(
                f"spec.storage.endpointUrl: {mask_userinfo(endpoint)} resolves to {address}, a link-local, "
                "unspecified or cloud metadata address (the node's metadata service): refused"
            )


def _proxied(endpoint: str, env: Mapping[str, str]) -> bool:
    scheme = "https" if endpoint.startswith("https:") else "http"
    proxy = env.get(f"{scheme}_proxy") or env.get(f"{scheme.upper()}_PROXY")
    return bool(proxy) and not urllib.request.proxy_bypass(endpoint_host(endpoint))


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """A short, single-line, printable excerpt of what a server said, any URL credentials masked."""
    flat = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    flat = mask_userinfo(flat)
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"


def _region(spec: StorageSpec, env: Mapping[str, str]) -> str | None:
    region = spec.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    # SigV4 signs with a region even where the store ignores it; MinIO and Ceph expect us-east-1.
    if region is None and spec.endpoint_url is not None:
        return "us-east-1"
    return region


def _verify(spec: StorageSpec, env: Mapping[str, str]) -> bool | str:
    if not spec.verify_tls:
        return False
    return env.get("AWS_CA_BUNDLE") or True


def _config(spec: StorageSpec, options: StorageOptions) -> Config:
    extra: dict[str, Any] = {}
    if spec.endpoint_url is not None:
        # boto3 >= 1.36 sends CRC checksums on every upload by default, which several S3-compatible stores
        # (older MinIO, Ceph RGW, some R2 paths) reject; only send them where the operation requires one.
        extra = {
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
        }
    return Config(
        # Not "auto": with a custom endpoint botocore reads "auto" as path style. "virtual" still falls back
        # to path style for an IP endpoint (dot-free bucket names) and for dotted bucket names over https.
        s3={"addressing_style": "path" if spec.path_style else "virtual"},
        retries={"mode": "standard", "total_max_attempts": options.max_attempts},
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        signature_version="s3v4",
        max_pool_connections=max(10, options.max_concurrency),
        **extra,
    )


class S3Backend:
    def __init__(self, client: S3Client, options: StorageOptions, secrets: Sequence[str] = ()) -> None:
        self._client = client
        self._options = options
        self._secrets = tuple(secrets)
        self._transfer = TransferConfig(
            multipart_threshold=options.multipart_threshold,
            multipart_chunksize=options.multipart_threshold,
            max_concurrency=options.max_concurrency,
        )

    @property
    def endpoint(self) -> str:
        return self._client.meta.endpoint_url

    def download_file(self, uri: str, dest: Path, on_progress: ProgressCallback | None) -> str:
        loc = parse_s3_uri(uri)
        with self._errors(uri):
            body = self._client.get_object(Bucket=loc.bucket, Key=loc.key)["Body"]
            with body:
                return stream_to_file(body.iter_chunks(self._options.chunk_size), dest, on_progress)

    def upload_file(self, src: Path, uri: str, on_progress: ProgressCallback | None) -> None:
        loc = parse_s3_uri(uri)
        with self._errors(uri):
            self._client.upload_file(
                str(src), loc.bucket, loc.key, Callback=on_progress, Config=self._transfer
            )

    def read_bytes(self, uri: str) -> bytes:
        loc = parse_s3_uri(uri)
        with self._errors(uri):
            return self._client.get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read()

    def write_bytes(self, uri: str, data: bytes) -> None:
        loc = parse_s3_uri(uri)
        with self._errors(uri):
            self._client.put_object(Bucket=loc.bucket, Key=loc.key, Body=data)

    def exists(self, uri: str) -> bool:
        loc = parse_s3_uri(uri)
        with self._errors(uri):
            try:
                self._client.head_object(Bucket=loc.bucket, Key=loc.key)
            except ClientError as err:
                if _status(err) != 404:
                    raise
                # HEAD answers carry no body, so a bare 404 cannot tell a missing key from a missing bucket.
                self._require_bucket(uri, loc)
                return False
        return True

    def list_keys(self, uri: str) -> list[str]:
        loc = parse_s3_uri(uri)
        prefix = _dir_prefix(loc.key)
        return [key[len(prefix) :] for key in self._iter_keys(uri, loc.bucket, prefix)]

    def delete_prefix(self, uri: str) -> int:
        loc = parse_s3_uri(uri)
        prefix = _dir_prefix(loc.key)
        if not prefix:
            raise ConfigInvalid(f"{uri}: refusing to delete a whole bucket")
        keys = list(self._iter_keys(uri, loc.bucket, prefix))
        for start in range(0, len(keys), _DELETE_BATCH):
            batch: list[ObjectIdentifierTypeDef] = [
                {"Key": key} for key in keys[start : start + _DELETE_BATCH]
            ]
            with self._errors(uri):
                answer = self._client.delete_objects(
                    Bucket=loc.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            # DeleteObjects answers 200 and reports refusals per key.
            if failures := answer.get("Errors"):
                first = failures[0]
                key_uri = f"s3://{loc.bucket}/{first.get('Key', '')}"
                raise self._classify(key_uri, first.get("Code", ""), 0, 1, first.get("Message", ""))
        return len(keys)

    def delete_file(self, uri: str) -> bool:
        if not self.exists(uri):
            return False
        loc = parse_s3_uri(uri)
        with self._errors(uri):
            self._client.delete_object(Bucket=loc.bucket, Key=loc.key)
        return True

    def _iter_keys(self, uri: str, bucket: str, prefix: str) -> Iterator[str]:
        with self._errors(uri):
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield obj["Key"]

    def _require_bucket(self, uri: str, loc: S3Location) -> None:
        try:
            self._client.head_bucket(Bucket=loc.bucket)
        except ClientError as err:
            if _status(err) == 404:
                raise InputUnavailable(f"{uri}: bucket '{loc.bucket}' does not exist") from err
            raise

    @contextmanager
    def _errors(self, uri: str) -> Iterator[None]:
        """Translate botocore failures (after its own retries) into trainer errors naming `uri` and the cause."""
        try:
            yield
        except TrainerError:
            raise
        except S3UploadFailedError as err:
            # boto3 flattens the ClientError into a string, raised while handling it: the original is the context.
            cause = err.__cause__ or err.__context__
            if isinstance(cause, ClientError):
                raise self._from_client_error(uri, cause) from cause
            raise StorageUnreachable(self._redact(f"{uri}: upload failed: {excerpt(str(err))}")) from err
        except ClientError as err:
            raise self._from_client_error(uri, err) from err
        except (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError) as err:
            raise InputUnavailable(
                self._redact(f"{uri}: no usable credentials: {excerpt(str(err))}")
            ) from err
        except SSLError as err:
            hint = "(trust its CA with AWS_CA_BUNDLE, or set spec.storage.verifyTls: false)"
            message = f"{uri}: TLS failure talking to {self.endpoint} {hint}: {excerpt(str(err))}"
            raise InputUnavailable(self._redact(message)) from err
        except (ConnectionError, HTTPClientError, IncompleteReadError) as err:
            raise StorageUnreachable(
                self._redact(
                    f"{uri}: endpoint {self.endpoint} unreachable: {excerpt(str(err))} ({self._attempts_note()})"
                )
            ) from err
        except BotoCoreError as err:
            raise StorageUnreachable(self._redact(f"{uri}: {excerpt(str(err))}")) from err

    def _from_client_error(self, uri: str, err: ClientError) -> TrainerError:
        code = err.response.get("Error", {}).get("Code", "")
        meta = err.response.get("ResponseMetadata", {})
        attempts = meta.get("RetryAttempts", 0) + 1
        message = err.response.get("Error", {}).get("Message", "")
        return self._classify(uri, code, meta.get("HTTPStatusCode", 0), attempts, message)

    def _classify(self, uri: str, code: str, status: int, attempts: int, message: str) -> TrainerError:
        bucket = parse_s3_uri(uri).bucket
        if code == "NoSuchBucket":
            return InputUnavailable(f"{uri}: bucket '{bucket}' does not exist")
        if code in _MISSING_KEY_CODES:
            return InputUnavailable(f"{uri}: no such key (bucket '{bucket}' exists)")
        if code in _CREDENTIAL_CODES:
            return InputUnavailable(f"{uri}: credentials rejected ({code})")  # code: one of ours
        if code in _DENIED_CODES:
            return InputUnavailable(f"{uri}: access denied ({code})")
        # The error code and message are the server's words: an excerpt, never the whole answer.
        detail = f"{excerpt(code, 64) or 'error'} (HTTP {status})" + (
            f": {excerpt(message)}" if message else ""
        )
        if status >= 500 or status == 429 or code in _TRANSIENT_CODES:
            return StorageUnreachable(
                self._redact(f"{uri}: endpoint {self.endpoint} answered {detail} after {attempts} attempt(s)")
            )
        return InputUnavailable(self._redact(f"{uri}: request refused: {detail}"))

    def _attempts_note(self) -> str:
        return f"gave up after retries, max_attempts={self._options.max_attempts}"

    def _redact(self, text: str) -> str:
        """Servers and libraries sometimes echo request details; make sure no credential ever leaves."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _dir_prefix(key: str) -> str:
    """`a/b` and `a/b/` both mean the folder `a/b/`, so `ckpt-1` never matches `ckpt-10`."""
    return key.rstrip("/") + "/" if key.strip("/") else ""


def _status(err: ClientError) -> int:
    return int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
