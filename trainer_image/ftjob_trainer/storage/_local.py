"""`file:///path` URIs: the same operations on a local (or mounted) directory, for runs without S3."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ftjob_trainer.errors import ConfigInvalid, InputUnavailable, StorageUnreachable

from ._base import ProgressCallback, StorageOptions, stream_to_file

FILE_SCHEME = "file://"


def local_path(uri: str) -> Path:
    """`file:///a/b` -> `/a/b`. Only absolute, host-less file URIs: a relative path would depend on the cwd."""
    if not uri.startswith(FILE_SCHEME + "/"):
        raise ConfigInvalid(f"{uri}: not a file:///absolute/path URI")
    return Path(uri[len(FILE_SCHEME) :])


class LocalBackend:
    def __init__(self, options: StorageOptions) -> None:
        self._chunk_size = options.chunk_size

    def download_file(self, uri: str, dest: Path, on_progress: ProgressCallback | None) -> str:
        with _errors(uri):
            src = local_path(uri).open("rb")
        # Outside `_errors`: a full local disk is the trainer's problem, not the source's.
        with src:
            return stream_to_file(_read_chunks(src, uri, self._chunk_size), dest, on_progress)

    def upload_file(self, src: Path, uri: str, on_progress: ProgressCallback | None) -> None:
        # The source is the trainer's own file: its errors are bugs, not storage failures, so open it outside.
        with src.open("rb") as source, _errors(uri):
            stream_to_file(iter(lambda: source.read(self._chunk_size), b""), local_path(uri), on_progress)

    def read_bytes(self, uri: str) -> bytes:
        with _errors(uri):
            return local_path(uri).read_bytes()

    def write_bytes(self, uri: str, data: bytes) -> None:
        with _errors(uri):
            stream_to_file([data], local_path(uri))

    def exists(self, uri: str) -> bool:
        return local_path(uri).is_file()

    def list_keys(self, uri: str) -> list[str]:
        root = local_path(uri)
        with _errors(uri):
            if not root.is_dir():
                return []
            return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def delete_prefix(self, uri: str) -> int:
        root = local_path(uri)
        if root == Path(root.anchor):
            raise ConfigInvalid(f"{uri}: refusing to delete a whole filesystem")
        with _errors(uri):
            if not root.is_dir():
                return 0
            count = sum(1 for p in root.rglob("*") if p.is_file())
            shutil.rmtree(root)
            return count

    def delete_file(self, uri: str) -> bool:
        path = local_path(uri)
        with _errors(uri):
            if not path.is_file():
                return False
            path.unlink()
            return True


def _read_chunks(src: BinaryIO, uri: str, chunk_size: int) -> Iterator[bytes]:
    """Chunks of `src`, with read errors blamed on the source URI rather than on the destination."""
    while True:
        with _errors(uri):
            chunk = src.read(chunk_size)
        if not chunk:
            return
        yield chunk


@contextmanager
def _errors(uri: str) -> Iterator[None]:
    """Map OS errors to the trainer's: missing or forbidden paths are the user's to fix, the rest (EIO on a
    network mount, a full volume) may pass."""
    try:
        yield
    except FileNotFoundError as err:
        raise InputUnavailable(f"{uri}: no such file or directory") from err
    except IsADirectoryError as err:
        raise InputUnavailable(f"{uri}: is a directory, expected a file") from err
    except (NotADirectoryError, FileExistsError) as err:
        # mkdir of a parent that exists as a file raises FileExistsError; opening through it NotADirectoryError.
        raise InputUnavailable(f"{uri}: a parent of this path is a file, not a directory") from err
    except PermissionError as err:
        raise InputUnavailable(f"{uri}: permission denied") from err
    except OSError as err:
        raise StorageUnreachable(f"{uri}: {err.strerror or err}") from err
