"""Who owns an output prefix: `<output>/run.json` names the run (the FineTuneJob's uid) whose outputs live
there, and the data it trains on.

Before any model download or training, a run claims the prefix (`claim_output`):

- no outputs of any run there (checkpoints, adapter, merged model, evaluation, manifest): it is this run's;
- outputs of this same run (same uid: a pod retried after a failure, a preemption, a suspend): they are
  kept and its checkpoints resumed, unless the data changed since (see checkpoints.py: trained from scratch);
- outputs of another run, or of an unknown one: `spec.output.onExisting` decides. `Refuse` (the default)
  fails with `OutputPrefixInUse`, naming that run; `Overwrite` deletes that run's outputs, and only them,
  and trains from scratch; `Resume` continues from that run's newest checkpoint (same training
  configuration and data required).

Nothing is resumed or deleted without a log line, and the manifest's `output` records what happened.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, ValidationError

from ftjob.api.meta import ApiModel
from ftjob.api.uris import join_uri

from .checkpoints import CheckpointStore
from .errors import OutputPrefixInUse
from .manifest import InputFile
from .storage import Storage

log = logging.getLogger("ftjob.trainer")

OWNER_RECORD = "run.json"
PRODUCT_FOLDERS = ("checkpoints", "adapter", "merged", "eval", "rejected")
PRODUCT_FILES = ("manifest.json",)
REPORT_FILES = ("data-report.json", "data-report.md")

OnExisting = Literal["Refuse", "Overwrite", "Resume"]
Action = Literal["new", "sameRun", "overwrote", "resumedOther"]


class RunRecord(ApiModel):
    """The content of `run.json`."""

    uid: str
    name: str = ""
    namespace: str = ""
    data: list[InputFile] = Field(default_factory=list)
    data_digest: str = ""

    def describe(self) -> str:
        if not self.uid:
            return "a run that left no owner record"
        who = f"{self.namespace}/{self.name}" if self.name else "FineTuneJob"
        return f"{who} (uid {self.uid})"


def data_digest(inputs: Sequence[InputFile]) -> str:
    """One digest for the data's content (train file first, then validation): URIs do not count."""
    return hashlib.sha256("\n".join(f.sha256 for f in inputs).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class OutputClaim:
    action: Action
    previous: RunRecord | None = None
    notes: list[str] = field(default_factory=list)

    def to_manifest(self, owner: RunRecord) -> dict[str, Any]:
        record: dict[str, Any] = {"owner": owner.uid, "dataDigest": owner.data_digest, "action": self.action}
        if self.previous is not None:
            record["previousOwner"] = self.previous.model_dump(mode="json", by_alias=True)
        if self.notes:
            record["notes"] = list(self.notes)
        return record


def product_keys(keys: Sequence[str]) -> list[str]:
    """The keys (relative to the prefix) that a run's training left: not data reports, not foreign files."""
    return [k for k in keys if ("/" in k and k.split("/", 1)[0] in PRODUCT_FOLDERS) or k in PRODUCT_FILES]


def read_owner(storage: Storage, output_uri: str) -> RunRecord | None:
    """The recorded owner; for prefixes written before `run.json` existed, the manifest's job."""
    for name, extract in ((OWNER_RECORD, _as_record), ("manifest.json", _job_of_manifest)):
        uri = join_uri(output_uri, name)
        if not storage.exists(uri):
            continue
        try:
            record = extract(json.loads(storage.read_bytes(uri)))
        except (ValueError, AttributeError, TypeError, ValidationError):
            log.warning("%s cannot be read as an owner record: ignored", uri)
            continue
        if record is not None:
            return record
    return None


def _as_record(doc: Any) -> RunRecord | None:
    return RunRecord.model_validate(doc, extra="ignore")


def _job_of_manifest(doc: Any) -> RunRecord | None:
    job = doc.get("job") or {}
    if not job.get("uid"):
        return None
    return RunRecord(
        uid=str(job["uid"]), name=str(job.get("name", "")), namespace=str(job.get("namespace", ""))
    )


def claim_output(
    storage: Storage,
    output_uri: str,
    me: RunRecord,
    on_existing: OnExisting,
    checkpoints: CheckpointStore,
    *,
    resume_enabled: bool = True,
) -> OutputClaim:
    """Decide whether this run may use the prefix (see the module docstring), then record it as the owner.
    Raises OutputPrefixInUse when it may not."""
    products = product_keys(storage.list_keys(output_uri))
    recorded = read_owner(storage, output_uri)
    notes: list[str] = []
    if recorded is not None and recorded.uid == me.uid:
        claim = OutputClaim("sameRun", notes=notes)
        if recorded.data_digest and recorded.data_digest != me.data_digest:
            note = (
                f"the data changed since this job's earlier attempt (digest {recorded.data_digest}, now "
                f"{me.data_digest}): its checkpoints are not resumed, training starts from scratch"
            )
            log.warning("%s", note)
            notes.append(note)
        else:
            log.info("%s holds this job's earlier attempt: its checkpoints may be resumed", output_uri)
    elif not products:
        claim = OutputClaim("new", previous=recorded)
        if recorded is not None:
            log.info(
                "taking over %s from %s, which left no training outputs", output_uri, recorded.describe()
            )
    else:
        previous = recorded or RunRecord(uid="")
        held = ", ".join(sorted({k.split("/", 1)[0] for k in products}))
        if on_existing == "Refuse":
            raise OutputPrefixInUse(
                f"{output_uri} holds the outputs of another run, {previous.describe()} ({held}); this job is "
                f"{me.describe()}. Use another spec.output.uri, or set spec.output.onExisting to Overwrite "
                "(delete them and train from scratch) or Resume (continue from its newest checkpoint)"
            )
        if on_existing == "Overwrite":
            note = (
                f"spec.output.onExisting is Overwrite: deleted the outputs of {previous.describe()} ({held})"
            )
            log.warning("%s under %s", note, output_uri)
            delete_outputs(storage, output_uri)
        else:
            if not resume_enabled:
                raise OutputPrefixInUse(
                    f"spec.output.onExisting is Resume, but spec.checkpointing.resume is false: {output_uri} "
                    f"holds the outputs of {previous.describe()} ({held})"
                )
            step = checkpoints.latest_resumable()
            if step is None:
                raise OutputPrefixInUse(
                    f"spec.output.onExisting is Resume, but {output_uri} holds no complete checkpoint of "
                    f"{previous.describe()} made for this training configuration and data (see the log)"
                )
            note = f"spec.output.onExisting is Resume: continuing from step {step} of {previous.describe()}"
            log.warning("%s", note)
        notes.append(note)
        action: Action = "overwrote" if on_existing == "Overwrite" else "resumedOther"
        claim = OutputClaim(action, previous, notes)
    storage.write_bytes(
        join_uri(output_uri, OWNER_RECORD),
        (json.dumps(me.model_dump(mode="json", by_alias=True), indent=2) + "\n").encode(),
    )
    return claim


def ensure_owner(storage: Storage, output_uri: str, me: RunRecord) -> None:
    """Raise OutputPrefixInUse when another run claimed the prefix since this one did (two jobs started on
    one prefix at the same moment): checked before every upload of checkpoints or results."""
    recorded = read_owner(storage, output_uri)
    if recorded is not None and recorded.uid != me.uid:
        raise OutputPrefixInUse(
            f"{output_uri} was claimed by another run, {recorded.describe()}, while this one "
            f"({me.describe()}) was running: stopped without writing there"
        )


def delete_outputs(storage: Storage, output_uri: str) -> None:
    """Delete what a run writes under the prefix, and nothing else (data files may live there too)."""
    for folder in PRODUCT_FOLDERS:
        storage.delete_prefix(join_uri(output_uri, folder))
    for name in PRODUCT_FILES + REPORT_FILES + (OWNER_RECORD,):
        if storage.delete_file(join_uri(output_uri, name)):
            log.info("deleted %s", join_uri(output_uri, name))
