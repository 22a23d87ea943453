"""Bring the base model to a local folder: from the Hugging Face Hub (revision pinned), from an S3 prefix
holding a saved model folder, or from a mounted path."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ftjob import contract
from ftjob.api.model_source import BaseModelSpec
from ftjob.api.uris import parse_hf_uri

from .errors import InputUnavailable, StorageUnreachable
from .storage import Storage

log = logging.getLogger("ftjob.trainer")


@dataclass(frozen=True)
class ResolvedModel:
    uri: str
    path: Path
    revision: str | None
    files: dict[str, str] = field(default_factory=dict)
    """Relative path -> sha256 of every file of the model folder."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def resolve_base_model(
    spec: BaseModelSpec, storage: Storage, dest: Path, env: Mapping[str, str]
) -> ResolvedModel:
    uri = spec.uri
    if uri.startswith("s3://"):
        files = storage.download_prefix(uri, dest)
        return ResolvedModel(uri=uri, path=dest, revision=None, files=files)
    if uri.startswith("hf://"):
        return _from_hub(uri, dest, env)
    path = Path(uri.removeprefix("file://"))
    if not path.is_dir():
        raise InputUnavailable(f"{uri}: no such model folder (is the volume mounted?)")
    return ResolvedModel(uri=uri, path=path, revision=None, files=hash_tree(path))


def _from_hub(uri: str, dest: Path, env: Mapping[str, str]) -> ResolvedModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    hub = parse_hf_uri(uri)
    token = env.get(contract.ENV_HF_TOKEN) or None
    try:
        path = snapshot_download(repo_id=hub.repo_id, revision=hub.revision, cache_dir=str(dest), token=token)
    except GatedRepoError as exc:
        raise InputUnavailable(
            f"{uri}: gated model; set spec.baseModel.tokenSecretRef to a token with access"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise InputUnavailable(
            f"{uri}: no such model repository (or it is private and no token was given)"
        ) from exc
    except RevisionNotFoundError as exc:
        raise InputUnavailable(f"{uri}: revision {hub.revision!r} does not exist") from exc
    except (HfHubHTTPError, OSError) as exc:
        raise StorageUnreachable(f"{uri}: download from the Hub failed: {type(exc).__name__}") from exc
    folder = Path(path)
    return ResolvedModel(uri=uri, path=folder, revision=folder.name, files=hash_tree(folder))
