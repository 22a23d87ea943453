"""What the S3 and file backends share: tuning options, the backend interface, atomic streaming writes and
the check that keeps downloaded keys inside their destination directory."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ftjob_trainer.errors import InputUnavailable

MiB = 1024 * 1024

ProgressCallback = Callable[[int], None]
"""Called with the number of bytes moved by each chunk (not a running total). During a multipart upload
a retried part reports a negative amount first, undoing its earlier progress (s3transfer's convention)."""


@dataclass(frozen=True)
class StorageOptions:
    """How hard to try and how much to hold in memory. The defaults suit a training pod; tests shrink the
    timeouts and attempts so that an unreachable endpoint fails in about a second."""

    max_attempts: int = 5
    """Attempts per request, the first included (botocore standard retry mode)."""
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    chunk_size: int = 1 * MiB
    """Bytes read per step while streaming a download: memory use stays near this, whatever the object size."""
    multipart_threshold: int = 64 * MiB
    """Uploads at least this large go in parts of this size."""
    max_concurrency: int = 4
    """Parallel part uploads per file."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 (got {self.max_attempts})")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("timeouts must be > 0")
        # S3 refuses multipart parts under 5 MiB, so a smaller threshold could never upload.
        if self.chunk_size < 1 or self.multipart_threshold < 5 * MiB or self.max_concurrency < 1:
            raise ValueError("chunk_size, max_concurrency must be >= 1 and multipart_threshold >= 5 MiB")


class Backend(Protocol):
    """One URI scheme. Prefix operations treat the URI as a directory: `.../ckpt-1` never matches `ckpt-10`."""

    def download_file(self, uri: str, dest: Path, on_progress: ProgressCallback | None) -> str: ...

    def upload_file(self, src: Path, uri: str, on_progress: ProgressCallback | None) -> None: ...

    def read_bytes(self, uri: str) -> bytes: ...

    def write_bytes(self, uri: str, data: bytes) -> None: ...

    def exists(self, uri: str) -> bool: ...

    def list_keys(self, uri: str) -> list[str]: ...

    def delete_prefix(self, uri: str) -> int: ...

    def delete_file(self, uri: str) -> bool: ...


def stream_to_file(chunks: Iterable[bytes], dest: Path, on_progress: ProgressCallback | None = None) -> str:
    """Write `chunks` to `dest` and return their sha256 (hex).

    The bytes go to a hidden sibling first and are renamed at the end, so an interrupted transfer never
    leaves a truncated file under the final name for a resumed run to mistake for a complete one.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
                if on_progress is not None:
                    on_progress(len(chunk))
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def is_folder_marker(relative_key: str) -> bool:
    """Zero-byte `dir/` objects that consoles create to show folders; they hold no data."""
    return relative_key.endswith("/")


def safe_destination(dest_dir: Path, relative_key: str, key_uri: str) -> Path:
    """Where `relative_key` lands under `dest_dir`, or InputUnavailable naming the key if it would escape.

    Object keys are arbitrary strings: `m/../../x` or `m//etc/x` would write anywhere the trainer can. The
    resolved check also catches a symlink already inside `dest_dir` that points elsewhere.
    """
    problem = _key_problem(relative_key)
    target = dest_dir
    if problem is None:
        root = dest_dir.resolve()
        target = (root / relative_key).resolve()
        if target == root or not target.is_relative_to(root):
            problem = "it resolves outside the destination"
    if problem is not None:
        raise InputUnavailable(
            f"{key_uri}: refusing to download key {relative_key!r} into {dest_dir}: {problem}"
        )
    return target


def _key_problem(relative_key: str) -> str | None:
    if "\x00" in relative_key:
        return "it contains a NUL character"
    if relative_key.startswith("/"):
        return "it is absolute (an empty path segment after the prefix)"
    segments = relative_key.split("/")
    if ".." in segments:
        return "it has a '..' segment"
    if "" in segments or "." in segments:
        return "it has an empty or '.' segment"
    return None
