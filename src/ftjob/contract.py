"""What the operator and the trainer agree on: how the trainer is configured, how it reports progress,
what its exit codes mean and what it leaves in the termination message.

Both sides import this module; nothing here does I/O.
"""

from __future__ import annotations

import json
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
ENV_HF_TOKEN: Final = "HF_TOKEN"
ENV_AWS_ACCESS_KEY_ID: Final = "AWS_ACCESS_KEY_ID"
ENV_AWS_SECRET_ACCESS_KEY: Final = "AWS_SECRET_ACCESS_KEY"
ENV_AWS_SESSION_TOKEN: Final = "AWS_SESSION_TOKEN"

DEFAULT_WORKDIR: Final = "/workspace"
DEFAULT_TERMINATION_LOG: Final = "/dev/termination-log"
CONTAINER_NAME: Final = "trainer"
TRAINER_COMMAND: Final = ("ftjob-train",)

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
    INTERRUPTED = 143
    """SIGTERM: a checkpoint was saved and the next attempt resumes from it."""


USER_ERROR_EXIT_CODES: Final = (ExitCode.CONFIG_INVALID, ExitCode.DATA_INVALID, ExitCode.INPUT_UNAVAILABLE)

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
            return ProgressRecord.model_validate_json(line[start + len(PROGRESS_PREFIX) :])
        except ValidationError:
            continue
    return None


# --- termination message: the trainer's last words, at most 4 KiB ---------------------------------
TERMINATION_MESSAGE_LIMIT: Final = 4096

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
    resumed_from_step: int | None = None

    def to_message(self) -> str:
        """Serialise within the kubelet's 4 KiB limit, dropping detail before substance."""
        summary = self.model_copy(deep=True)
        text = summary._dump()
        if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT:
            return text
        if summary.dataset is not None:
            summary.dataset.dropped_by_reason = {}
        text = summary._dump()
        while len(text.encode()) > TERMINATION_MESSAGE_LIMIT and len(summary.message) > 16:
            summary.message = summary.message[: len(summary.message) // 2] + "..."
            text = summary._dump()
        if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
            summary.metrics = None
            text = summary._dump()
        return text

    def _dump(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)

    @classmethod
    def parse(cls, text: str | None) -> TerminationSummary | None:
        """The summary in a termination message, or None when the trainer died without writing one."""
        if not text:
            return None
        try:
            return cls.model_validate(json.loads(text))
        except (ValueError, ValidationError):
            return None
