"""Trainer errors, each tied to an exit code and a condition reason the operator shows."""

from __future__ import annotations

from ftjob.contract import ExitCode


class TrainerError(Exception):
    """Base class: `str(err)` is the user-facing message (never containing credentials)."""

    exit_code: ExitCode = ExitCode.INFRASTRUCTURE
    reason: str = "TrainerFailed"


class ConfigInvalid(TrainerError):
    exit_code = ExitCode.CONFIG_INVALID
    reason = "ConfigInvalid"


class DataInvalid(TrainerError):
    exit_code = ExitCode.DATA_INVALID
    reason = "DataInvalid"


class InputUnavailable(TrainerError):
    """Missing object, missing bucket, access denied: retrying will not help."""

    exit_code = ExitCode.INPUT_UNAVAILABLE
    reason = "InputUnavailable"


class OutputPrefixInUse(TrainerError):
    """spec.output.uri holds another run's outputs and the spec does not say to overwrite or resume them."""

    exit_code = ExitCode.OUTPUT_PREFIX_IN_USE
    reason = "OutputPrefixInUse"


class StorageUnreachable(TrainerError):
    """The store did not answer (connection refused, timeouts, 5xx) even after retries."""

    exit_code = ExitCode.STORAGE_UNREACHABLE
    reason = "StorageUnreachable"


class OutOfMemory(TrainerError):
    """CUDA out of memory: deterministic for a given spec and GPU, so retrying would fail the same way."""

    exit_code = ExitCode.OUT_OF_MEMORY
    reason = "OutOfMemory"


class Interrupted(TrainerError):
    """SIGTERM arrived; a checkpoint was saved."""

    exit_code = ExitCode.INTERRUPTED
    reason = "Interrupted"
