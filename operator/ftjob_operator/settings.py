"""Operator settings: one frozen value built from command-line flags and `FTJOB_*` environment variables.

Flags win over the environment, the environment over the defaults. Nothing else in the operator reads the
environment, so tests pass settings in instead of patching globals.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_TRAINER_IMAGE = "ghcr.io/ftjob/trainer:0.1.0"

ENV_NAMESPACES = "FTJOB_NAMESPACES"
ENV_TRAINER_IMAGE = "FTJOB_TRAINER_IMAGE"
ENV_TRAINER_SERVICE_ACCOUNT = "FTJOB_TRAINER_SERVICE_ACCOUNT"
ENV_LOG_LEVEL = "FTJOB_LOG_LEVEL"
ENV_IMAGE_PULL_POLICY = "FTJOB_IMAGE_PULL_POLICY"
ENV_PROGRESS_INTERVAL = "FTJOB_PROGRESS_INTERVAL"
ENV_IMAGE_PULL_GRACE = "FTJOB_IMAGE_PULL_GRACE_SECONDS"
ENV_TERMINATION_GRACE = "FTJOB_TERMINATION_GRACE_SECONDS"

IMAGE_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class OperatorSettings:
    """Everything the operator is configured with. Pure builders take it as an argument."""

    trainer_image: str = DEFAULT_TRAINER_IMAGE
    """Trainer image used when a FineTuneJob does not name one."""
    image_pull_policy: str = "IfNotPresent"
    trainer_service_account: str | None = None
    """ServiceAccount of trainer pods when the spec names none (None: the namespace's `default`)."""
    termination_grace_period_seconds: int = 120
    """Time between SIGTERM and SIGKILL: the trainer saves and uploads a checkpoint in it."""
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means all namespaces."""
    progress_interval_seconds: float = 15.0
    """How often running trainers' logs are read for progress (and every live job is re-checked)."""
    image_pull_grace_seconds: float = 300.0
    """How long a pod may fail to pull its image (or to get its Secrets) before the job fails."""
    default_active_deadline_seconds: int = 7 * 24 * 3600
    """activeDeadlineSeconds of a Job whose FineTuneJob sets none: no trainer holds GPUs forever."""
    log_tail_lines: int = 200
    """Lines of the trainer log read per progress poll."""
    workers: int = 8
    """Threads that reconcile FineTuneJobs side by side (each one FineTuneJob at a time)."""
    liveness_port: int = 8080
    metrics_port: int = 9090
    """0 disables the metrics endpoint."""
    log_level: str = "INFO"
    allow_loopback_endpoints: bool = False
    """Accept spec.storage.endpointUrl on loopback. In a trainer pod that is the pod itself, where no object
    store runs; only a test harness that runs pods as local processes needs it."""

    @property
    def all_namespaces(self) -> bool:
        return not self.namespaces


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0 (got {text})")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number (got {text})")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftjob-operator",
        description="Reconcile FineTuneJobs (ftjob.dev/v1alpha1) into trainer Jobs and back into status.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        action="append",
        default=None,
        metavar="NS",
        help=f"watch this namespace (repeatable; env {ENV_NAMESPACES}, comma separated)",
    )
    scope.add_argument("--all-namespaces", action="store_true", help="watch every namespace (the default)")
    parser.add_argument("--trainer-image", help=f"default trainer image (env {ENV_TRAINER_IMAGE})")
    parser.add_argument(
        "--trainer-service-account",
        help=f"default ServiceAccount of trainer pods (env {ENV_TRAINER_SERVICE_ACCOUNT})",
    )
    parser.add_argument(
        "--image-pull-policy", choices=IMAGE_PULL_POLICIES, help=f"env {ENV_IMAGE_PULL_POLICY}"
    )
    parser.add_argument(
        "--termination-grace-period",
        type=int,
        metavar="SECONDS",
        help=f"SIGTERM-to-SIGKILL time of trainer pods (env {ENV_TERMINATION_GRACE}; default 120)",
    )
    parser.add_argument(
        "--progress-interval",
        type=_positive_float,
        metavar="SECONDS",
        help=f"progress poll interval (env {ENV_PROGRESS_INTERVAL}; default 15)",
    )
    parser.add_argument(
        "--image-pull-grace-period",
        type=_positive_float,
        metavar="SECONDS",
        help=f"how long image pull errors are tolerated (env {ENV_IMAGE_PULL_GRACE}; default 300)",
    )
    parser.add_argument(
        "--default-active-deadline",
        type=int,
        metavar="SECONDS",
        help="activeDeadlineSeconds of Jobs whose FineTuneJob sets none (default 604800: 7 days)",
    )
    parser.add_argument(
        "--allow-loopback-endpoints",
        action="store_true",
        help="accept storage endpoints on loopback (only for harnesses that run trainer pods as local processes)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="FineTuneJobs reconciled side by side (default 8): reconciles wait on the API server, not the CPU",
    )
    parser.add_argument("--liveness-port", type=_port, default=8080, help="kopf liveness endpoint /healthz")
    parser.add_argument("--metrics-port", type=_port, default=9090, help="Prometheus metrics (0 disables)")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, help=f"env {ENV_LOG_LEVEL}")
    return parser


def settings_from(argv: Sequence[str], environ: Mapping[str, str]) -> OperatorSettings:
    """Parse flags over environment over defaults. Exits with status 2 on bad input, like argparse."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    defaults = OperatorSettings()

    def env(name: str) -> str | None:
        value = environ.get(name, "").strip()
        return value or None

    if args.all_namespaces:
        namespaces: tuple[str, ...] = ()
    elif args.namespace:
        namespaces = tuple(dict.fromkeys(args.namespace))
    else:
        listed = env(ENV_NAMESPACES) or ""
        namespaces = tuple(dict.fromkeys(ns.strip() for ns in listed.split(",") if ns.strip()))

    def from_env(name: str, convert: type[float] | type[int], default: float) -> float:
        raw = env(name)
        if raw is None:
            return default
        try:
            value = convert(raw)
        except ValueError:
            parser.error(f"{name} must be a number (got {raw!r})")
        if value <= 0:
            parser.error(f"{name} must be > 0 (got {raw!r})")
        return value

    pull_policy = args.image_pull_policy or env(ENV_IMAGE_PULL_POLICY) or defaults.image_pull_policy
    if pull_policy not in IMAGE_PULL_POLICIES:
        parser.error(
            f"{ENV_IMAGE_PULL_POLICY} must be one of {', '.join(IMAGE_PULL_POLICIES)} (got {pull_policy!r})"
        )
    log_level = (args.log_level or env(ENV_LOG_LEVEL) or defaults.log_level).upper()
    if log_level not in LOG_LEVELS:
        parser.error(f"{ENV_LOG_LEVEL} must be one of {', '.join(LOG_LEVELS)} (got {log_level!r})")
    grace = args.termination_grace_period
    if grace is None:
        grace = int(from_env(ENV_TERMINATION_GRACE, int, defaults.termination_grace_period_seconds))
    if grace < 0:
        parser.error(f"--termination-grace-period must be >= 0 (got {grace})")

    deadline = args.default_active_deadline or defaults.default_active_deadline_seconds
    if deadline <= 0:
        parser.error(f"--default-active-deadline must be > 0 (got {deadline})")

    workers = args.workers if args.workers is not None else defaults.workers
    if not 1 <= workers <= 64:
        parser.error(f"--workers must be between 1 and 64 (got {workers})")

    return OperatorSettings(
        workers=workers,
        trainer_image=args.trainer_image or env(ENV_TRAINER_IMAGE) or defaults.trainer_image,
        image_pull_policy=pull_policy,
        trainer_service_account=args.trainer_service_account or env(ENV_TRAINER_SERVICE_ACCOUNT),
        termination_grace_period_seconds=grace,
        namespaces=namespaces,
        progress_interval_seconds=args.progress_interval
        or from_env(ENV_PROGRESS_INTERVAL, float, defaults.progress_interval_seconds),
        image_pull_grace_seconds=args.image_pull_grace_period
        or from_env(ENV_IMAGE_PULL_GRACE, float, defaults.image_pull_grace_seconds),
        liveness_port=args.liveness_port,
        metrics_port=args.metrics_port,
        log_level=log_level,
        default_active_deadline_seconds=deadline,
        allow_loopback_endpoints=args.allow_loopback_endpoints,
    )


def log_level_number(settings: OperatorSettings) -> int:
    return logging.getLevelNamesMapping()[settings.log_level]
