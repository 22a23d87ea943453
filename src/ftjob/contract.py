"""What the operator and the trainer agree on: how the trainer is configured, how it reports progress,
what its exit codes mean and what it leaves in the termination message.

Both sides import this module; nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import IntEnum
from typing import Final, Literal

from pydantic import Field, ValidationError

from ftjob.api.meta import ApiModel
from ftjob.api.status import Artifacts, DatasetStats, Metrics

# --- configuration: everything the trainer needs is in its environment -------------------------------
ENV_SPEC: Final = "FTJOB_SPEC"
"""The FineTuneJob spec as JSON (camelCase, as stored by the API server)."""
ENV_NAME: Final = "FTJOB_NAME"
ENV_NAMESPACE: Final = "FTJOB_NAMESPACE"
ENV_UID: Final = "FTJOB_UID"
ENV_WORKDIR: Final = "FTJOB_WORKDIR"
"""Every file the trainer writes lives under this directory."""
ENV_TERMINATION_LOG: Final = "FTJOB_TERMINATION_LOG"
ENV_CONTRACT_VERSION: Final = "FTJOB_CONTRACT_VERSION"
"""The version of this contract the operator rendered the Job with (an integer; absent means 1)."""
CONTRACT_VERSION: Final = 1
"""Raised only by incompatible changes. Compatible ones (a new spec field with a default, a new optional
summary field) keep it: each side ignores the fields it does not know, so an older trainer image pinned
through spec.image keeps working under a newer operator, and the other way round."""
ENV_HF_TOKEN: Final = "HF_TOKEN"
ENV_AWS_ACCESS_KEY_ID: Final = "AWS_ACCESS_KEY_ID"
ENV_AWS_SECRET_ACCESS_KEY: Final = "AWS_SECRET_ACCESS_KEY"
ENV_AWS_SESSION_TOKEN: Final = "AWS_SESSION_TOKEN"

DEFAULT_WORKDIR: Final = "/workspace"
DEFAULT_TERMINATION_LOG: Final = "/dev/termination-log"
CONTAINER_NAME: Final = "trainer"
TRAINER_COMMAND: Final = ("ftjob-train",)
COLLECT_COMMAND: Final = ("ftjob-train", "collect")
GATE_NOT_MET: Final = "EvaluationGateNotMet"
"""The reason of a run whose tuned model missed spec.evaluation.gate (exit code 9)."""
"""Re-reads a finished run's summary from its output prefix (see DurableSummary) into the termination log."""

# Environment variable names that hold credentials: never logged, never written anywhere.
SECRET_ENV_NAMES: Final = frozenset(
    {ENV_HF_TOKEN, ENV_AWS_ACCESS_KEY_ID, ENV_AWS_SECRET_ACCESS_KEY, ENV_AWS_SESSION_TOKEN}
)


class ExitCode(IntEnum):
    """Trainer exit codes. User errors make the Job fail at once (podFailurePolicy FailJob); the others
    count against `backoffLimit` and are retried."""

    OK = 0
    INFRASTRUCTURE = 1
    """Unexpected failure (a bug, a lost node, a flaky dependency): retry."""
    CONFIG_INVALID = 2
    """The configuration cannot work (unknown architecture, bad spec JSON): do not retry."""
    DATA_INVALID = 3
    """Too little usable data, or data that cannot be parsed: do not retry."""
    INPUT_UNAVAILABLE = 4
    """An input is missing or access is denied (no such bucket or key, 403): do not retry."""
    STORAGE_UNREACHABLE = 5
    """The object store did not answer after retries: retry later."""
    OUTPUT_PREFIX_IN_USE = 6
    """spec.output.uri holds the outputs of another run (another FineTuneJob uid): do not retry."""
    OUT_OF_MEMORY = 7
    """The GPU ran out of memory: the same spec on the same GPU fails the same way, so do not retry."""
    RESULTS_NOT_FOUND = 8
    """`ftjob-train collect`: the output prefix holds no summary of this run (this uid)."""
    EVALUATION_GATE_NOT_MET = 9
    """The tuned model missed spec.evaluation.gate: training again the same way would miss it again."""
    INTERRUPTED = 143
    """SIGTERM: a checkpoint was saved and the next attempt resumes from it."""


USER_ERROR_EXIT_CODES: Final = (
    ExitCode.CONFIG_INVALID,
    ExitCode.DATA_INVALID,
    ExitCode.INPUT_UNAVAILABLE,
    ExitCode.OUTPUT_PREFIX_IN_USE,
    ExitCode.OUT_OF_MEMORY,
    ExitCode.EVALUATION_GATE_NOT_MET,
)

# --- progress: one line per record on stdout, read back by the operator from the pod log ------------
PROGRESS_PREFIX: Final = "FTJOB_PROGRESS "

Stage = Literal[
    "starting",
    "downloading",
    "validating-data",
    "loading-model",
    "training",
    "evaluating",
    "uploading",
    "done",
]


class ProgressRecord(ApiModel):
    """A machine-readable progress record."""

    stage: Stage
    step: int = Field(default=0, ge=0)
    total_steps: int = Field(default=0, ge=0)
    epoch: float = Field(default=0.0, ge=0.0)
    loss: float | None = None
    tokens_per_second: float | None = Field(default=None, ge=0.0)
    eta_seconds: int | None = Field(default=None, ge=0)
    time: str
    """ISO 8601 UTC time the record was emitted."""


def format_progress_line(record: ProgressRecord) -> str:
    return PROGRESS_PREFIX + record.model_dump_json(by_alias=True, exclude_none=True)


def parse_latest_progress(log_text: str) -> ProgressRecord | None:
    """The newest well-formed progress record in a chunk of log; malformed lines are skipped."""
    for line in reversed(log_text.splitlines()):
        start = line.find(PROGRESS_PREFIX)
        if start < 0:
            continue
        try:
            # Fields a newer trainer image added are ignored (the contract version says what is compatible).
            return ProgressRecord.model_validate_json(line[start + len(PROGRESS_PREFIX) :], extra="ignore")
        except ValidationError:
            continue
    return None


# --- termination message: the trainer's last words, at most 4 KiB ---------------------------------
TERMINATION_MESSAGE_LIMIT: Final = 4096
"""Bytes of UTF-8. The kubelet cuts a longer message, and a cut JSON document no longer parses: the job
would show Succeeded with no results."""

Outcome = Literal["Succeeded", "Failed", "Interrupted"]


class TerminationSummary(ApiModel):
    """Written to the termination log when the trainer exits; the operator copies it into the status."""

    outcome: Outcome
    reason: str = Field(max_length=64)
    """A condition reason (`TrainingSucceeded`, `DataInvalid`, `ConfigInvalid`, ...)."""
    message: str = ""
    metrics: Metrics | None = None
    dataset: DatasetStats | None = None
    artifacts: Artifacts | None = None
    resumed_from_step: int | None = Field(default=None, ge=0, le=2**63 - 1)

    def to_message(self) -> str:
        """JSON of at most TERMINATION_MESSAGE_LIMIT bytes, whatever the fields hold.

        When the whole summary is too long, detail goes before substance, in `_SHEDDING` order, until it
        fits. What is left at the end (outcome, a reason of at most 64 characters, a step number) takes
        under 500 bytes, so the bound holds by construction. Nothing is lost for good: the data report,
        `eval/eval.json` and `manifest.json` in the output location hold it all, and the trainer's log
        has the full message.
        """
        summary = self.model_copy(deep=True)
        for shed in _SHEDDING:
            text = summary._dump()
            if _fits(text):
                return text
            shed(summary)
        return summary._dump()

    def _dump(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)

    @classmethod
    def parse(cls, text: str | None) -> TerminationSummary | None:
        """The summary in a termination message, or None when the trainer died without writing one.

        The message may be a log tail instead (terminationMessagePolicy FallbackToLogsOnError), so any
        text must give None rather than raise."""
        if not text:
            return None
        try:
            # Fields a newer trainer image added are ignored, not a reason to lose the whole summary.
            return cls.model_validate(json.loads(text), extra="ignore")
        except (ValueError, ValidationError, RecursionError):
            return None


def _fits(text: str) -> bool:
    return len(text.encode()) <= TERMINATION_MESSAGE_LIMIT


def _shorten_message(floor_bytes: int) -> Callable[[TerminationSummary], None]:
    """Cut the message to the longest prefix with which the summary fits, but not below `floor_bytes`
    bytes of UTF-8 (the later steps then shed something else first)."""

    def shed(summary: TerminationSummary) -> None:
        full = summary.message

        def cut(chars: int) -> str:
            if chars >= len(full):
                return full
            return full[:chars] + "…" if chars else ""

        low, high = 0, len(full)  # the longest prefix that fits lies in [low, high]
        while low < high:
            middle = (low + high + 1) // 2
            summary.message = cut(middle)
            if _fits(summary._dump()):
                low = middle
            else:
                high = middle - 1
        floor = len(full.encode()[:floor_bytes].decode(errors="ignore"))
        summary.message = cut(max(low, floor))

    return shed


def _drop_dropped_by_reason(summary: TerminationSummary) -> None:
    if summary.dataset is not None:
        summary.dataset.dropped_by_reason = {}


def _drop_base_metrics(summary: TerminationSummary) -> None:
    if summary.metrics is not None:
        summary.metrics.base = {}


def _drop(field: str) -> Callable[[TerminationSummary], None]:
    def shed(summary: TerminationSummary) -> None:
        setattr(summary, field, None)

    return shed


def _drop_artifact(field: str) -> Callable[[TerminationSummary], None]:
    def shed(summary: TerminationSummary) -> None:
        if summary.artifacts is not None:
            setattr(summary.artifacts, field, None)

    return shed


def _last_resort(summary: TerminationSummary) -> None:
    # Only reachable for a summary built without validation: what remains must fit the bound.
    summary.message = ""
    summary.artifacts = None
    summary.resumed_from_step = None
    summary.reason = summary.reason[:64]


_SHEDDING: Final[tuple[Callable[[TerminationSummary], None], ...]] = (
    _drop_dropped_by_reason,  # the data report has the per-reason counts, with samples
    _shorten_message(256),  # the trainer's log has it whole; on success it restates the metrics
    _drop_base_metrics,  # eval/eval.json and manifest.json have every metric
    _drop("dataset"),
    _drop("metrics"),
    _drop_artifact("merged_model"),
    _drop_artifact("eval_results"),
    _drop_artifact("data_report"),
    _drop_artifact("eval_report"),
    _drop_artifact("manifest"),
    _drop_artifact("adapter"),
    _shorten_message(0),
    _last_resort,
)
"""What goes first when the summary is too long; the loop stops as soon as it fits."""


# --- the durable record: the summary, also under the output prefix --------------------------------------
SUMMARY_FILE: Final = "summary.json"
"""`<spec.output.uri>/summary.json`. The termination message lives only as long as the pod; when the pod is
gone before the operator read it (pod garbage collection, a person, a node lost after the run), the operator
runs a collector pod (`ftjob-train collect`, with the trainer's own credentials, which the operator never
holds) that copies this file into its own termination message."""


class DurableSummary(ApiModel):
    """What `summary.json` holds: the summary, and whose run it is (a prefix can be re-used by a later run)."""

    uid: str
    """The FineTuneJob's metadata.uid."""
    spec_digest: str = ""
    """Of the whole spec the run trained with (suspend aside): an identical re-run is answered from here."""
    data_digest: str = ""
    summary: TerminationSummary
