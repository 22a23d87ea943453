"""Bring the base model to a local folder: from the Hugging Face Hub (revision pinned), from an S3 prefix
holding a saved model folder, or from a mounted path."""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ftjob import contract
from ftjob.api.model_source import BaseModelSpec
from ftjob.api.uris import parse_hf_uri

from .errors import InputUnavailable, StorageUnreachable
from .storage import Storage
from .storage._base import is_folder_marker, safe_destination

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


HASH_THREADS: Final = 8


def hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path. The files are hashed in threads (hashlib lets go
    of the GIL while it hashes): a 7B model's 14.5 GB in three shards took 9 s one file after another, time
    the first training step waits for; a file's own hash stays sequential."""
    files = [p for p in sorted(root.rglob("*")) if p.is_file()]
    started = time.monotonic()
    threads = max(1, min(len(files), os.cpu_count() or 1, HASH_THREADS))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sha256") as pool:
        digests = list(pool.map(sha256_file, files))
    total = sum(p.stat().st_size for p in files)
    log.info(
        "hashed %d files of %s (%.2f GB) in %.1f s, %d threads",
        len(files),
        root,
        total / 1e9,
        time.monotonic() - started,
        threads,
    )
    return {p.relative_to(root).as_posix(): digest for p, digest in zip(files, digests, strict=True)}


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


WEIGHT_PATTERNS: Final = (
    "*.safetensors",
    "*.bin",
    "*.pt",
    "*.pth",
    "*.ckpt",
    "*.gguf",
    "*.h5",
    "*.msgpack",
    "*.onnx",
    "*.ot",
    "*.tflite",
)
"""Weight files: everything else at the top of a model folder (tokenizer, chat template, configs, remote
code) is small."""


def _is_weight(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in WEIGHT_PATTERNS)


def resolve_tokenizer_files(
    spec: BaseModelSpec, storage: Storage, dest: Path, env: Mapping[str, str]
) -> Path:
    """A folder with the base model's files minus its weights (top level only): enough to load the tokenizer
    and check the data before the weights, often tens of GB, are downloaded."""
    uri = spec.uri
    if uri.startswith("s3://"):
        keys = [
            key
            for key in storage.list_keys(uri)
            if "/" not in key and not is_folder_marker(key) and not _is_weight(key)
        ]
        if not keys:
            raise InputUnavailable(
                f"{uri}: no tokenizer files (tokenizer.json, tokenizer_config.json, ...) here"
            )
        base = uri.rstrip("/")
        # Checked like any prefix download: a hostile key ("..") cannot write outside `dest`.
        targets = {key: safe_destination(dest, key, f"{base}/{key}") for key in keys}
        for key, target in targets.items():
            storage.download_file(f"{base}/{key}", target)
        return dest
    if uri.startswith("hf://"):
        # The same cache folder as the full download later, which then fetches only the weights.
        return _from_hub(uri, dest, env, ignore_patterns=[*WEIGHT_PATTERNS, "*/*"]).path
    path = Path(uri.removeprefix("file://"))
    if not path.is_dir():
        raise InputUnavailable(f"{uri}: no such model folder (is the volume mounted?)")
    return path


def _from_hub(
    uri: str, dest: Path, env: Mapping[str, str], ignore_patterns: list[str] | None = None
) -> ResolvedModel:
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
        path = snapshot_download(
            repo_id=hub.repo_id,
            revision=hub.revision,
            cache_dir=str(dest),
            token=token,
            ignore_patterns=ignore_patterns,
        )
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
