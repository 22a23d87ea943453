"""`ftjob` - check manifests offline, regenerate the CRD, run a FineTuneJob locally, follow one on a cluster."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ftjob.manifests import ManifestError, validate_file


def _cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            results = validate_file(Path(path))
        except ManifestError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        if not results:
            print(f"{path}: no documents", file=sys.stderr)
            failed += 1
        for result in results:
            if result.ok:
                print(f"{path}: FineTuneJob {result.name}: valid")
            else:
                failed += 1
                print(f"{path}: FineTuneJob {result.name}: invalid", file=sys.stderr)
                for line in result.errors:
                    print(f"  {line}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from ftjob.schema.generate import drifted, write_all

    root = Path(args.root)
    if args.check:
        stale = drifted(root)
        for path in stale:
            print(f"{path}: differs from a fresh generation; run `ftjob generate`", file=sys.stderr)
        return 1 if stale else 0
    for path in write_all(root):
        print(f"wrote {path}")
    return 0


def _cmd_local(args: argparse.Namespace) -> int:
    from ftjob.manifests import load_job
    from ftjob_cli.local_run import LocalRunError, describe, execute, parse_secret_flags, plan_local_run

    try:
        job = load_job(Path(args.file))
        run_dir = Path(args.run_dir or Path(".ftjob") / (job.metadata.name or "local")).resolve()
        plan = plan_local_run(job, run_dir, secrets=parse_secret_flags(args.secret), local_env=os.environ)
    except (ManifestError, LocalRunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"ftjob local: running {plan.job['metadata']['name']} as a local process in {run_dir}", flush=True)
    result = execute(plan, verbose=args.verbose)
    print("\n" + describe(result), flush=True)
    print(f"the trainer's whole log: {plan.trainer_log}")
    return result.exit_code


def build_parser() -> argparse.ArgumentParser:
    # Installed as `kubectl-ftjob` too, kubectl runs it as a plugin: `kubectl ftjob get`.
    plugin = Path(sys.argv[0]).name == "kubectl-ftjob"
    parser = argparse.ArgumentParser(prog="kubectl ftjob" if plugin else "ftjob", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate", help="check FineTuneJob manifests offline")
    validate.add_argument("files", nargs="+", metavar="FILE.yaml")
    validate.set_defaults(func=_cmd_validate)

    generate = sub.add_parser(
        "generate", help="regenerate the CRD, the Helm CRD template and the API reference"
    )
    generate.add_argument("--check", action="store_true", help="only report files that drifted (exit 1)")
    generate.add_argument("--root", default=".", help="repository root (default: .)")
    generate.set_defaults(func=_cmd_generate)
    local = sub.add_parser(
        "local",
        help="run a FineTuneJob without a cluster: render its Job as the operator would, run its container locally",
    )
    local.add_argument("file", metavar="FILE.yaml")
    local.add_argument(
        "--secret", action="append", default=[], metavar="NAME/KEY=VALUE", help="value of a secretKeyRef"
    )
    local.add_argument("--run-dir", help="where the container's volumes live (default: .ftjob/<name>)")
    local.add_argument(
        "-v", "--verbose", action="store_true", help="the trainer's whole output: records, library warnings"
    )
    local.set_defaults(func=_cmd_local)

    from ftjob_cli.data_check import add_parser as register_data_commands

    register_data_commands(sub)

    from ftjob_cli.cluster import register as register_cluster_commands

    register_cluster_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
