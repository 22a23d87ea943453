"""`ftjob` - check manifests offline, regenerate the CRD, run a FineTuneJob locally."""

from __future__ import annotations

import argparse
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftjob", description=__doc__)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
