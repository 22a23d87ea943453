"""`ftjob results`: copy a run's reports from its output prefix, with the user's own credentials.

The operator never holds object-store credentials (docs/progress.md says why), so the files come straight
from the store to the user: boto3's usual chain (environment, `--profile`/AWS_PROFILE, SSO, instance
role), and the endpoint, region and addressing style the job's own spec.storage names (MinIO, Ceph, R2...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ftjob.api.uris import join_uri, parse_s3_uri

RESULT_FILES: Final = (
    "eval/report.md",
    "eval/eval.json",
    "eval/predictions.jsonl",
    "eval/loss_curve.png",
    "eval/metrics.png",
    "data-report.md",
    "data-report.json",
    "manifest.json",
)
"""What a person looks at; the adapter and checkpoints are for machines and can be large."""


class ResultsError(Exception):
    pass


@dataclass(frozen=True)
class Download:
    bucket: str
    key: str
    relative: str


@dataclass
class Fetched:
    written: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Expected files that are not there (a run that failed before evaluating has no eval/)."""


def plan_downloads(output_uri: str, files: tuple[str, ...] = RESULT_FILES) -> list[Download]:
    """The objects to fetch for an `s3://` output prefix (pure)."""
    if not output_uri.startswith("s3://"):
        raise ResultsError(f"spec.output.uri {output_uri!r} is not in an object store: nothing to download")
    downloads = []
    for relative in files:
        location = parse_s3_uri(join_uri(output_uri, *relative.split("/")))
        downloads.append(Download(location.bucket, location.key, relative))
    return downloads


def client_options(storage: Mapping[str, Any]) -> dict[str, Any]:
    """boto3 client arguments from the job's spec.storage (camelCase, as the API server returns it) (pure)."""
    options: dict[str, Any] = {}
    if storage.get("endpointUrl"):
        options["endpoint_url"] = storage["endpointUrl"]
    if storage.get("region"):
        options["region_name"] = storage["region"]
    if storage.get("verifyTls") is False:
        options["verify"] = False
    if storage.get("pathStyle"):
        from botocore.config import Config

        options["config"] = Config(s3={"addressing_style": "path"})
    return options


def s3_client(storage: Mapping[str, Any], profile: str | None = None) -> Any:
    try:
        import boto3
    except ImportError as exc:
        raise ResultsError("`ftjob results` needs boto3: pip install 'ftjob[cli]'") from exc
    session = boto3.Session(profile_name=profile) if profile else boto3.Session()
    return session.client("s3", **client_options(storage))


def fetch(client: Any, downloads: list[Download], dest: Path) -> Fetched:
    from botocore.exceptions import ClientError, NoCredentialsError

    fetched = Fetched()
    for item in downloads:
        target = dest / item.relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            client.download_file(item.bucket, item.key, str(target))
        except NoCredentialsError as exc:
            raise ResultsError(
                "no credentials for the object store: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE or --profile"
            ) from exc
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                fetched.missing.append(item.relative)
                continue
            if code in ("403", "AccessDenied"):
                raise ResultsError(
                    f"access denied to s3://{item.bucket}/{item.key} with your credentials"
                ) from exc
            raise ResultsError(f"s3://{item.bucket}/{item.key}: {exc}") from exc
        fetched.written.append(target)
    return fetched
