"""`ftjob-train`: the trainer's entry point in the pod (and on a laptop).

Configuration comes from the environment only (see ftjob.contract); the exit code tells the Job
controller whether to retry (see ftjob.contract.ExitCode); the last words go to the termination log.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ftjob import contract
from ftjob.contract import ExitCode, TerminationSummary

from .errors import TrainerError
from .progress import LogLineReporter
from .signals import StopRequest

log = logging.getLogger("ftjob.trainer")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftjob-train",
        description="Train a LoRA/QLoRA adapter as described by the FineTuneJob spec in $FTJOB_SPEC, evaluate it "
        "against the base model and publish everything under spec.output.uri.",
        epilog=f"Environment: {contract.ENV_SPEC} (required), {contract.ENV_WORKDIR} (default {contract.DEFAULT_WORKDIR}), "
        f"{contract.ENV_TERMINATION_LOG} (default {contract.DEFAULT_TERMINATION_LOG}), {contract.ENV_NAME}, "
        f"{contract.ENV_NAMESPACE}, {contract.ENV_UID}; credentials from AWS_* / {contract.ENV_HF_TOKEN}.",
    )
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    return parser


def _setup_logging() -> None:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Clients that could echo request details at DEBUG stay quiet: no credential ever reaches the log.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "httpx", "filelock", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def write_termination_log(path: Path, summary: TerminationSummary) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(summary.to_message())
    except OSError as exc:
        log.error("cannot write the termination log %s: %s", path, exc)


def train(env: Mapping[str, str], stop: StopRequest) -> int:
    """Run once; returns the exit code. Never raises."""
    from .config import TrainerConfig

    termination_log = Path(env.get(contract.ENV_TERMINATION_LOG, contract.DEFAULT_TERMINATION_LOG))
    pipeline = None
    try:
        config = TrainerConfig.from_env(env)
        config.workdir.mkdir(parents=True, exist_ok=True)
        from .pipeline import Pipeline

        pipeline = Pipeline(config, env, LogLineReporter(), stop)
        try:
            summary = pipeline.run()
        except Exception as exc:
            from .memory import gpu_memory, is_out_of_memory, out_of_memory_error

            if not is_out_of_memory(exc):
                raise
            log.error("CUDA out of memory: %s", exc)
            raise out_of_memory_error(config.spec, gpu_memory(), pipeline.reporter.current) from exc
        code = ExitCode.OK
    except TrainerError as exc:
        code = exc.exit_code
        log.error("%s: %s", exc.reason, exc)
        summary = TerminationSummary(
            outcome="Interrupted" if code == ExitCode.INTERRUPTED else "Failed",
            reason=exc.reason,
            message=str(exc),
            dataset=pipeline.state.dataset if pipeline else None,
            resumed_from_step=pipeline.state.resumed_from_step if pipeline else None,
        )
    except Exception as exc:  # the last line of defence must report, not crash silently
        log.exception("unexpected failure")
        code = ExitCode.INFRASTRUCTURE
        summary = TerminationSummary(
            outcome="Failed", reason="TrainerFailed", message=f"{type(exc).__name__}: {exc}"
        )
    write_termination_log(termination_log, summary)
    log.info("exit %d (%s): %s", int(code), summary.reason, summary.message)
    return int(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging()
    if args.check_config:
        from .config import TrainerConfig

        try:
            TrainerConfig.from_env(os.environ)
        except TrainerError as exc:
            print(f"{exc.reason}: {exc}", file=sys.stderr)
            return int(exc.exit_code)
        print("configuration is valid")
        return 0
    stop = StopRequest()
    stop.install()
    return train(os.environ, stop)


if __name__ == "__main__":
    sys.exit(main())
