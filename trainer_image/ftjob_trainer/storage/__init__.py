"""The trainer's only door to object storage: `s3://bucket/key` (AWS or S3-compatible) and `file:///path`.

Every operation takes full URIs, so callers pass the spec's URIs through without caring about the scheme.
Failures raise `InputUnavailable` (missing or forbidden: the user must fix something) or
`StorageUnreachable` (the store did not answer after bounded retries), with messages that name the URI
and the cause and never a credential.

    storage = open_storage(spec.storage, os.environ)
    sha = storage.download_file("s3://data/train.jsonl", workdir / "train.jsonl")
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from ftjob.api.storage import StorageSpec
from ftjob.api.uris import parse_s3_uri
from ftjob_trainer.errors import ConfigInvalid, InputUnavailable

from ._base import Backend, ProgressCallback, StorageOptions, is_folder_marker, safe_destination
from ._local import FILE_SCHEME, LocalBackend

__all__ = ["ProgressCallback", "Storage", "StorageOptions", "open_storage"]

log = logging.getLogger(__name__)

S3_SCHEME = "s3://"


def open_storage(
    spec: StorageSpec | None = None,
    env: Mapping[str, str] | None = None,
    options: StorageOptions | None = None,
) -> Storage:
    """Storage for `spec` (endpoint, region, addressing, TLS) with credentials from `env` (default:
    the process environment). Nothing is contacted until the first `s3://` operation."""
    return Storage(
        spec or StorageSpec(), dict(os.environ if env is None else env), options or StorageOptions()
    )


class Storage:
    """Routes each URI to its backend; directory-level operations are written once, on top of both."""

    def __init__(self, spec: StorageSpec, env: Mapping[str, str], options: StorageOptions) -> None:
        self._spec = spec
        self._env = env
        self._options = options
        self._local = LocalBackend(options)
        self._s3: Backend | None = None

    def download_file(self, uri: str, dest: Path, on_progress: ProgressCallback | None = None) -> str:
        """Stream one object to `dest` (replaced atomically) and return its sha256 hex digest."""
        sha256 = self._backend(uri).download_file(uri, dest, on_progress)
        log.debug("downloaded %s to %s (sha256 %s)", uri, dest, sha256)
        return sha256

    def download_prefix(self, uri: str, dest_dir: Path) -> dict[str, str]:
        """Download every object under the folder `uri` into `dest_dir`; returns relative path -> sha256.

        Every key is checked before the first byte is written, so a hostile key leaves nothing behind.
        """
        backend = self._backend(uri)
        relative_keys = [key for key in backend.list_keys(uri) if not is_folder_marker(key)]
        if not relative_keys:
            raise InputUnavailable(f"{uri}: no objects under this prefix")
        base = uri.rstrip("/")
        # The raw `base/key` (not join_uri, which would tidy `m//x` into `m/x`) names the key as stored.
        targets = {key: safe_destination(dest_dir, key, f"{base}/{key}") for key in relative_keys}
        digests = {
            key: backend.download_file(f"{base}/{key}", target, None) for key, target in targets.items()
        }
        log.info("downloaded %d objects from %s to %s", len(digests), uri, dest_dir)
        return digests

    def upload_file(self, src: Path, uri: str, on_progress: ProgressCallback | None = None) -> None:
        """Upload one local file to `uri` (in parts when large)."""
        self._backend(uri).upload_file(src, uri, on_progress)
        log.debug("uploaded %s to %s", src, uri)

    def upload_dir(self, src_dir: Path, uri: str) -> list[str]:
        """Upload every file under `src_dir` to the folder `uri`; returns the URIs written, in order."""
        backend = self._backend(uri)
        base = uri.rstrip("/")
        written = []
        for path in sorted(p for p in src_dir.rglob("*") if p.is_file()):
            target = f"{base}/{path.relative_to(src_dir).as_posix()}"
            backend.upload_file(path, target, None)
            written.append(target)
        log.info("uploaded %d files from %s to %s", len(written), src_dir, uri)
        return written

    def read_bytes(self, uri: str) -> bytes:
        """The whole object, in memory: meant for small JSON files."""
        return self._backend(uri).read_bytes(uri)

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write a small object in one request (or one atomic rename for file://)."""
        self._backend(uri).write_bytes(uri, data)

    def exists(self, uri: str) -> bool:
        """Whether the object `uri` exists; a missing bucket is an error, not False."""
        return self._backend(uri).exists(uri)

    def list_keys(self, uri: str) -> list[str]:
        """Keys under the folder `uri`, relative to it and sorted; empty when there are none."""
        return self._backend(uri).list_keys(uri)

    def delete_prefix(self, uri: str) -> int:
        """Delete everything under the folder `uri` (checkpoint retention); returns how many objects went."""
        count = self._backend(uri).delete_prefix(uri)
        log.info("deleted %d objects under %s", count, uri)
        return count

    def delete_file(self, uri: str) -> bool:
        """Delete the object `uri`; False when there was none."""
        return self._backend(uri).delete_file(uri)

    def _backend(self, uri: str) -> Backend:
        if uri.startswith(FILE_SCHEME):
            return self._local
        if uri.startswith(S3_SCHEME):
            try:
                parse_s3_uri(uri)
            except ValueError as err:
                raise ConfigInvalid(f"{uri}: not a valid s3://bucket/key URI") from err
            return self._s3_backend()
        raise ConfigInvalid(f"{uri}: unsupported storage URI (expected s3://bucket/key or file:///path)")

    def _s3_backend(self) -> Backend:
        # Imported here so that file:// runs and `--help` never pay for loading boto3.
        if self._s3 is None:
            from ._s3 import make_s3_backend

            self._s3 = make_s3_backend(self._spec, self._env, self._options)
        return self._s3
