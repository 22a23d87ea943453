"""Checkpoints in the output location: `<output>/checkpoints/checkpoint-<step>/`.

A checkpoint counts only once its `COMPLETE` marker exists (written after every other file), so a pod
killed mid-upload never leaves a half checkpoint that a later attempt would resume from. `job.json`
records the training fingerprint and the data digest: a later run resumes only checkpoints made for the same
training configuration and the same data. Which run may use the prefix at all is ownership.py's business.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ftjob.api.uris import join_uri

from .storage import Storage

log = logging.getLogger("ftjob.trainer")

COMPLETE_MARKER = "COMPLETE"
JOB_MARKER = "job.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)/")


@dataclass
class CheckpointStore:
    storage: Storage
    output_uri: str
    fingerprint: str
    keep_last: int
    data_digest: str = ""
    """sha256 over the data files' sha256s; empty when unknown (then only the fingerprint counts)."""
    guard: Callable[[], None] | None = None
    """Called before each upload; raises when this run no longer owns the output prefix."""

    @property
    def prefix(self) -> str:
        return join_uri(self.output_uri, "checkpoints")

    def complete_steps(self) -> list[int]:
        """Steps with a complete checkpoint, ascending."""
        keys = self.storage.list_keys(self.prefix)
        steps = set()
        for key in keys:
            match = _CHECKPOINT.match(key)
            if match and key == f"checkpoint-{match.group(1)}/{COMPLETE_MARKER}":
                steps.add(int(match.group(1)))
        return sorted(steps)

    def recorded_fingerprint(self) -> str | None:
        return self._recorded("fingerprint")

    def recorded_data_digest(self) -> str:
        return self._recorded("dataDigest") or ""

    def _recorded(self, field: str) -> str | None:
        uri = join_uri(self.prefix, JOB_MARKER)
        if not self.storage.exists(uri):
            return None
        try:
            value = json.loads(self.storage.read_bytes(uri)).get(field)
        except (ValueError, AttributeError):
            return None
        return str(value) if value else None

    def _matches(self) -> bool:
        return (
            self.recorded_fingerprint() == self.fingerprint
            and self.recorded_data_digest() == self.data_digest
        )

    def latest_resumable(self) -> int | None:
        """The newest complete checkpoint made for this training configuration, if any."""
        steps = self.complete_steps()
        if not steps:
            return None
        recorded = self.recorded_fingerprint()
        if recorded != self.fingerprint:
            log.warning(
                "checkpoints under %s were made for another training configuration (%s, this one is %s): "
                "starting from scratch",
                self.prefix,
                recorded,
                self.fingerprint,
            )
            return None
        recorded_data = self.recorded_data_digest()
        if recorded_data != self.data_digest:
            log.warning(
                "checkpoints under %s were trained on other data (digest %s, this data's is %s): starting from "
                "scratch; they are replaced by this run's first checkpoint",
                self.prefix,
                recorded_data or "unrecorded",
                self.data_digest or "unknown",
            )
            return None
        return steps[-1]

    def download(self, step: int, dest_root: Path) -> Path:
        dest = dest_root / f"checkpoint-{step}"
        self.storage.download_prefix(join_uri(self.prefix, f"checkpoint-{step}"), dest)
        (dest / COMPLETE_MARKER).unlink(missing_ok=True)
        return dest

    def publish(self, step: int, local_dir: Path, keep: frozenset[int] = frozenset()) -> None:
        """Upload a checkpoint, mark it complete, then keep only the newest `keep_last` and the steps in
        `keep` (early stopping's best checkpoint, which the end of training loads)."""
        if self.guard is not None:
            self.guard()
        if not self._matches():
            self._claim()
        target = join_uri(self.prefix, f"checkpoint-{step}")
        self.storage.upload_dir(local_dir, target)
        self.storage.write_bytes(join_uri(target, COMPLETE_MARKER), b"")
        log.info("checkpoint at step %d saved to %s", step, target)
        for old in self.complete_steps()[: -self.keep_last]:
            if old in keep:
                continue
            self.storage.delete_prefix(join_uri(self.prefix, f"checkpoint-{old}"))

    def _claim(self) -> None:
        """Stale checkpoints of another configuration or data would be resumed by mistake later: remove them."""
        stale = self.storage.list_keys(self.prefix)
        if stale:
            log.warning(
                "removing %d objects of earlier, different checkpoints under %s", len(stale), self.prefix
            )
            self.storage.delete_prefix(self.prefix)
        marker = json.dumps({"fingerprint": self.fingerprint, "dataDigest": self.data_digest}).encode()
        self.storage.write_bytes(join_uri(self.prefix, JOB_MARKER), marker)
