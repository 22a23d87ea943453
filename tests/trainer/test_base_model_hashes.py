"""The model folder's hashes (recorded in the manifest): computed in threads, equal to hashing each file on
its own, keyed by relative path, for a mounted folder as for the others."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import cast

import pytest

from ftjob.api.model_source import BaseModelSpec
from ftjob_trainer import base_model
from ftjob_trainer.base_model import hash_tree, resolve_base_model
from ftjob_trainer.errors import InputUnavailable
from ftjob_trainer.storage import Storage


def _folder(root: Path) -> dict[str, bytes]:
    contents = {
        "config.json": b'{"model_type": "llama"}',
        "model-00001-of-00002.safetensors": os.urandom(3 << 20),
        "model-00002-of-00002.safetensors": os.urandom((1 << 20) + 17),
        "empty.txt": b"",
        "sub/tokenizer.json": b"{}" * 5000,
    }
    for name, data in contents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return contents


@pytest.mark.parametrize("threads", [1, 3, 8])
def test_hash_tree_equals_each_file_hashed_alone(
    tmp_path: Path, threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base_model, "HASH_THREADS", threads)
    contents = _folder(tmp_path)
    hashes = hash_tree(tmp_path)
    assert hashes == {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    assert list(hashes) == sorted(hashes)


def test_a_mounted_folder_is_hashed_and_a_missing_one_named(tmp_path: Path) -> None:
    contents = _folder(tmp_path / "model")
    unused = cast(Storage, None)  # a mounted folder needs no storage
    spec = BaseModelSpec(uri=f"file://{tmp_path / 'model'}")
    resolved = resolve_base_model(spec, unused, tmp_path / "unused", {})
    assert resolved.files["sub/tokenizer.json"] == hashlib.sha256(contents["sub/tokenizer.json"]).hexdigest()
    assert len(resolved.files) == len(contents)
    with pytest.raises(InputUnavailable, match="no such model folder"):
        resolve_base_model(BaseModelSpec(uri=f"file://{tmp_path / 'absent'}"), unused, tmp_path, {})
