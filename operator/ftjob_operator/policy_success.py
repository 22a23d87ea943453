"""Succeeded, with the results: the summary the trainer left (metrics, dataset, artifacts) copied to status.

When the pod that held the summary is gone, the collector Job re-reads it from the output prefix first.
"""

from __future__ import annotations

from typing import Final

from ftjob.api import FineTuneJobSpec
from ftjob.api.conditions import ADMITTED, RUNNING, SUCCEEDED, SUSPENDED, VALIDATED
from ftjob.api.uris import join_uri
from ftjob.contract import SUMMARY_FILE

from .conditions import reason_of
from .names import JsonDict
from .observe import CollectorRun, Pods, summary_of
from .progress import finished_progress
from .status_builder import StatusBuilder

COLLECTING_RESULTS: Final = "CollectingResults"
"""The Job completed without a pod to read the summary from: the collector Job re-reads it from storage."""


def is_collecting(status: JsonDict) -> bool:
    return reason_of(status.get("conditions") or [], RUNNING) == COLLECTING_RESULTS


def succeeded(
    b: StatusBuilder, spec: FineTuneJobSpec, job: JsonDict, p: Pods, collector: CollectorRun | None
) -> JsonDict:
    pod = p.succeeded
    summary = summary_of(pod)
    summary_file = join_uri(spec.output.uri, SUMMARY_FILE)
    if pod is None:
        # The pod garbage collector (or a person) removed the pod before its termination message was read:
        # the collector Job re-reads the summary the trainer also wrote under the output prefix.
        if collector is None or collector.outcome is None:
            return collecting(b, job, summary_file)
        summary = collector.summary
    b.copy_summary(summary)
    b.out["progress"] = finished_progress(b.out.get("progress"))
    completion = (job.get("status") or {}).get("completionTime")
    if completion:
        b.out["completionTime"] = completion
    if summary is not None and summary.message:
        message = summary.message
        if pod is None:
            message = f"{message} (re-read from {summary_file}: the trainer pod was gone)"
    elif summary is not None:
        message = "Training finished; the adapter, the evaluation and the manifest were written."
    elif pod is None and collector is not None:
        message = (
            "The Job completed, but its trainer pod was removed before the operator read the summary, and "
            f"{summary_file} could not be re-read ({collector.failure()}), so the status has no metrics or "
            f"artifacts; look under {spec.output.uri}."
        )
    else:
        message = "The trainer exited successfully but left no summary; see its logs."
    eval_loss = (b.out.get("metrics") or {}).get("evalLoss")
    if eval_loss is not None and "eval loss" not in message.lower():
        message = f"{message} (eval loss {float(eval_loss):.4g})"
    b.conditions.keep(VALIDATED)
    b.conditions.keep(ADMITTED)
    b.conditions.keep(SUSPENDED)
    b.conditions.set(RUNNING, "False", "TrainingSucceeded", message)
    b.conditions.set(SUCCEEDED, "True", "TrainingSucceeded", message)
    return b.finish("Succeeded", message)


def collecting(b: StatusBuilder, job: JsonDict, summary_file: str) -> JsonDict:
    message = (
        f"The Job {job['metadata']['name']} completed, but its trainer pod was removed before the operator "
        f"read the summary; re-reading it from {summary_file}."
    )
    b.out["progress"] = finished_progress(b.out.get("progress"))
    b.conditions.keep(VALIDATED)
    b.conditions.keep(ADMITTED)
    b.conditions.keep(SUSPENDED)
    b.conditions.set(RUNNING, "False", COLLECTING_RESULTS, message)
    return b.finish("Running", message)
