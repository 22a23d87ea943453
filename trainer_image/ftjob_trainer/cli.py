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

from .distributed import Distributed, is_agreed, launch
from .errors import TrainerError
from .progress import LogLineReporter, ProgressReporter
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
    parser.add_argument(
        "command",
        nargs="?",
        choices=("train", "collect", "launch"),
        default="train",
        help="train (the default), or collect: copy the finished run's summary.json from the output prefix "
        "into the termination log (the operator runs it when the trainer pod is gone), or launch "
        "<torchrun options>: train with several processes, exiting with the trainer's exit code",
    )
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    return parser


def _setup_logging(dist: Distributed | None = None) -> None:
    if dist is not None and dist.enabled:
        # torchrun interleaves every worker's output: rank 0 tells the story, the others warn and fail.
        level = logging.INFO if dist.is_main else logging.WARNING
        fmt = f"%(asctime)s %(levelname)s [rank {dist.rank}] %(message)s"
        logging.basicConfig(stream=sys.stdout, level=level, format=fmt, force=True)
    else:
        logging.basicConfig(
            stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
        )
    # Clients that could echo request details at DEBUG stay quiet: no credential ever reaches the log.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "httpx", "filelock", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def write_termination_log(path: Path, summary: TerminationSummary) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(summary.to_message())
    except OSError as exc:
        log.error("cannot write the termination log %s: %s", path, exc)


class _Silent:
    """The progress reporter of every rank but 0: one set of progress records per run."""

    def report(self, record: object) -> None:
        del record


def train(env: Mapping[str, str], stop: StopRequest, dist: Distributed | None = None) -> int:
    """Run once; returns the exit code. Never raises."""
    from .config import TrainerConfig

    dist = dist or Distributed()
    termination_log = Path(env.get(contract.ENV_TERMINATION_LOG, contract.DEFAULT_TERMINATION_LOG))
    ctx = None
    together = True  # every rank ends here at the same point (success, or an error they all know of)
    try:
        config = TrainerConfig.from_env(env)
        config.workdir.mkdir(parents=True, exist_ok=True)
        dist.init()
        from .pipeline import run_pipeline
        from .run_context import RunContext

        reporter: ProgressReporter = LogLineReporter() if dist.is_main else _Silent()
        ctx = RunContext(config, env, reporter, stop, dist)
        try:
            summary = run_pipeline(ctx)
        except Exception as exc:
            from .memory import gpu_memory, is_out_of_memory, out_of_memory_error

            if not is_out_of_memory(exc):
                raise
            log.error("CUDA out of memory: %s", exc)
            raise out_of_memory_error(config.spec, gpu_memory(), ctx.reporter.current) from exc
        code = ExitCode.EVALUATION_GATE_NOT_MET if summary.reason == contract.GATE_NOT_MET else ExitCode.OK
    except TrainerError as exc:
        together = is_agreed(exc)
        code = exc.exit_code
        log.error("%s: %s", exc.reason, exc)
        summary = TerminationSummary(
            outcome="Interrupted" if code == ExitCode.INTERRUPTED else "Failed",
            reason=exc.reason,
            message=str(exc),
            dataset=ctx.state.dataset if ctx else None,
            resumed_from_step=ctx.state.resumed_from_step if ctx else None,
        )
        if ctx is not None and ctx.state.owner is not None and dist.is_main:
            # Only under a prefix this run owns: never over another run's record.
            from .durable_summary import write_failure_summary

            write_failure_summary(ctx.storage, ctx.spec.output.uri, ctx.identity(), summary)
    except Exception as exc:  # the last line of defence must report, not crash silently
        together = is_agreed(exc)
        log.exception("unexpected failure")
        code = ExitCode.INFRASTRUCTURE
        summary = TerminationSummary(
            outcome="Failed", reason="TrainerFailed", message=f"{type(exc).__name__}: {exc}"
        )
    if not dist.is_main:
        summary = worker_summary(dist, code, summary)
    if dist.is_local_main:  # one termination message per pod; node 0's is the run's
        write_termination_log(termination_log, summary)
    log.log(
        logging.INFO if dist.is_main else logging.WARNING,
        "exit %d (%s): %s",
        int(code),
        summary.reason,
        summary.message,
    )
    if together:
        finish_together(dist)
    return int(code)


def finish_together(dist: Distributed) -> None:
    """Every rank leaves at once: torchrun stops the others as soon as one exits with an error, and rank 0
    may still be writing the run's summary."""
    try:
        dist.barrier()
    except Exception as exc:  # a rank that is gone: nothing left to wait for
        log.warning("the other processes did not all finish: %s", exc)


def worker_summary(dist: Distributed, code: int, summary: TerminationSummary) -> TerminationSummary:
    """What a pod other than node 0's says: its rank's outcome in short; rank 0 reports the run."""
    who = f"process {dist.rank} of {dist.world_size} (node {dist.node_rank})"
    if code == ExitCode.OK or summary.outcome == "Succeeded":
        return TerminationSummary(
            outcome=summary.outcome,
            reason="WorkerFinished",
            message=f"{who} finished; rank 0 reports the run",
        )
    return TerminationSummary(
        outcome=summary.outcome, reason=summary.reason, message=f"{who}: {summary.message}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["launch"]:
        # Everything after `launch` is torchrun's: argparse would reject its options.
        _setup_logging()
        return launch(argv[1:], os.environ)
    args = _parser().parse_args(argv)
    dist = Distributed.from_env(os.environ)
    _setup_logging(dist)
    if args.check_config:
        from .config import TrainerConfig

        try:
            TrainerConfig.from_env(os.environ)
        except TrainerError as exc:
            print(f"{exc.reason}: {exc}", file=sys.stderr)
            return int(exc.exit_code)
        print("configuration is valid")
        return 0
    if args.command == "collect":
        from .collect import collect

        code, summary = collect(os.environ)
        write_termination_log(
            Path(os.environ.get(contract.ENV_TERMINATION_LOG, contract.DEFAULT_TERMINATION_LOG)), summary
        )
        log.info("exit %d (%s): %s", code, summary.reason, summary.message)
        return code
    stop = StopRequest()
    stop.install()
    code = train(os.environ, stop, dist)
    dist.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
