"""The run's summary under its output prefix (`summary.json`): the record that outlives the pod.

The termination message is read from the pod; a pod removed before the operator read it would take the
metrics and artifact URIs with it. This copy is what `ftjob-train collect` re-reads then (collect.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ftjob.api.uris import join_uri
from ftjob.contract import SUMMARY_FILE, DurableSummary, TerminationSummary

from .errors import TrainerError
from .storage import Storage

log = logging.getLogger("ftjob.trainer")


def summary_uri(output_uri: str) -> str:
    return join_uri(output_uri, SUMMARY_FILE)


@dataclass(frozen=True)
class RunIdentity:
    """Whose summary it is, and what it was trained from."""

    uid: str
    spec_digest: str
    data_digest: str


def write_summary(storage: Storage, output_uri: str, run: RunIdentity, summary: TerminationSummary) -> None:
    record = DurableSummary(
        uid=run.uid, spec_digest=run.spec_digest, data_digest=run.data_digest, summary=summary
    )
    storage.write_bytes(
        summary_uri(output_uri), record.model_dump_json(by_alias=True, exclude_none=True).encode()
    )


def read_summary(storage: Storage, output_uri: str) -> DurableSummary:
    """Raises InputUnavailable when there is none, ValueError when it does not parse."""
    return DurableSummary.model_validate_json(storage.read_bytes(summary_uri(output_uri)), extra="ignore")


def finished_before(storage: Storage, output_uri: str, run: RunIdentity) -> TerminationSummary | None:
    """The summary of this very run (same uid, spec and data) if it already succeeded under the prefix.

    A re-run of a finished run (`ftjob local` again with the same name and spec; a pod retried after it
    published everything) would otherwise resume its final checkpoint, train 0 steps and report that.
    """
    try:
        record = read_summary(storage, output_uri)
    except (TrainerError, ValueError):
        return None
    same = (record.uid, record.spec_digest, record.data_digest) == (run.uid, run.spec_digest, run.data_digest)
    if (
        not same
        or record.summary.outcome != "Succeeded"
        or not storage.exists(join_uri(output_uri, "manifest.json"))
    ):
        return None
    return record.summary


def write_failure_summary(
    storage: Storage, output_uri: str, run: RunIdentity, summary: TerminationSummary
) -> None:
    """Best effort: the run already failed, and the termination message says why on its own."""
    try:
        write_summary(storage, output_uri, run, summary)
    except Exception as exc:  # a store that just failed the run may fail this too
        log.warning("could not write %s under %s: %s", SUMMARY_FILE, output_uri, exc)
