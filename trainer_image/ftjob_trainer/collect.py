"""`ftjob-train collect`: copy a finished run's `summary.json` into this pod's termination message.

The operator runs it (in a small Job of its own, with the trainer's environment and credentials) when the
trainer's Job completed but its pod, and so the termination message, is gone. Only a summary written by the
same FineTuneJob (uid) counts: a prefix may hold a later or an earlier run's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ftjob.contract import ExitCode, TerminationSummary

from .config import TrainerConfig
from .durable_summary import read_summary, summary_uri
from .errors import InputUnavailable, TrainerError
from .storage import open_storage

log = logging.getLogger("ftjob.trainer")


def collect(env: Mapping[str, str]) -> tuple[int, TerminationSummary]:
    """(exit code, the summary for the termination log). Never raises."""
    try:
        config = TrainerConfig.from_env(env)
        output = config.spec.output.uri
        storage = open_storage(config.spec.storage, env)
        try:
            record = read_summary(storage, output)
        except InputUnavailable:
            return _not_found(
                f"{summary_uri(output)} does not exist: the trainer did not finish writing its results"
            )
        except ValueError as exc:
            return _not_found(f"{summary_uri(output)} is not a run summary: {str(exc)[:200]}")
        if record.uid != config.uid:
            return _not_found(
                f"{summary_uri(output)} belongs to another run (FineTuneJob uid {record.uid}, not {config.uid})"
            )
        log.info("re-read the summary of this run from %s", summary_uri(output))
        return int(ExitCode.OK), record.summary
    except TrainerError as exc:
        log.error("%s: %s", exc.reason, exc)
        return int(exc.exit_code), TerminationSummary(outcome="Failed", reason=exc.reason, message=str(exc))
    except Exception as exc:  # the last line of defence must report, not crash silently
        log.exception("unexpected failure")
        message = f"{type(exc).__name__}: {exc}"
        return int(ExitCode.INFRASTRUCTURE), TerminationSummary(
            outcome="Failed", reason="TrainerFailed", message=message
        )


def _not_found(message: str) -> tuple[int, TerminationSummary]:
    log.error("ResultsNotFound: %s", message)
    return int(ExitCode.RESULTS_NOT_FOUND), TerminationSummary(
        outcome="Failed", reason="ResultsNotFound", message=message
    )
