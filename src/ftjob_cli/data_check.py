"""`ftjob data check`: the trainer's data gate, run locally before anything is submitted.

The same code as the trainer's `validating-data` stage (`ftjob_trainer.data.prepare_data`): the same
checks, drop reasons, report and verdict. No model is needed; with `--tokenizer DIR` the kept examples
are also rendered with the model's chat template and counted with its fast tokenizer, in batches.

Exit codes: 0 the data would be accepted, 1 it would be rejected (`DataInvalid`), 2 the check could not
run (a file missing, a manifest invalid, a tokenizer that cannot be loaded).

Importing this module is instant: the trainer's data package (numpy, msgspec, numba; no torch) is imported when
the command runs, and transformers only with `--tokenizer`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ftjob.api.data import DataSpec
    from ftjob_trainer.data import DataReport

EXIT_ACCEPTED: Final = 0
EXIT_REJECTED: Final = 1
EXIT_CANNOT_CHECK: Final = 2
_TOKENIZER_BATCH: Final = 256


def add_parser(commands: Any) -> None:
    """Register `data check` on the `ftjob` command's subparsers."""
    data = commands.add_parser("data", help="check training data locally, as the trainer will")
    actions = data.add_subparsers(dest="data_command", required=True)
    check = actions.add_parser(
        "check",
        help="run the trainer's data checks on local files; exit 1 when the job would be rejected",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("train", metavar="FILE.jsonl", type=Path, help="training data, chat JSONL")
    check.add_argument("--validation", metavar="FILE", type=Path, help="validation data (default: split)")
    check.add_argument(
        "--job",
        metavar="FILE.yaml",
        type=Path,
        help="a FineTuneJob manifest: its spec.data (cleaning, minExamples, validationSplit), seed and "
        "maxSeqLength are used (default: the defaults)",
    )
    check.add_argument(
        "--tokenizer",
        metavar="DIR",
        type=Path,
        help="a model folder with tokenizer files and a chat template: adds token statistics",
    )
    check.add_argument("--output-format", choices=("text", "json"), default="text")
    check.add_argument("--out", metavar="DIR", type=Path, help="keep the cleaned files here")
    check.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from ftjob_trainer.data import DataRejected, prepare_data
    except ImportError as err:  # pragma: no cover - depends on the installation
        print(
            f"error: the data checks need the trainer's packages ({err}); install ftjob[trainer]",
            file=sys.stderr,
        )
        return EXIT_CANNOT_CHECK
    for path in (args.train, args.validation):
        if path is not None and not path.is_file():
            print(f"error: {path}: no such file", file=sys.stderr)
            return EXIT_CANNOT_CHECK
    try:
        spec, seed, max_seq_length = _settings(args)
        counter = _token_lengths(args.tokenizer) if args.tokenizer else None
    except _CannotCheck as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    with tempfile.TemporaryDirectory(prefix="ftjob-data-") as scratch:
        out_dir = args.out or Path(scratch)
        try:
            prepared = prepare_data(
                args.train, args.validation, spec, seed=seed, max_seq_length=max_seq_length, out_dir=out_dir
            )
        except DataRejected as err:
            _print(err.report, args.output_format)
            return EXIT_REJECTED
        except ValueError as err:  # an input that the cleaned output would overwrite
            print(f"error: {err}", file=sys.stderr)
            return EXIT_CANNOT_CHECK
        report = prepared.report
        if counter is not None:
            try:
                report = report.model_copy(
                    update={
                        "train_tokens": _stats(counter, prepared.train_path, max_seq_length),
                        "validation_tokens": _stats(counter, prepared.validation_path, max_seq_length),
                    }
                )
            except _TemplateFailed as err:
                report = report.model_copy(update={"error": str(err)})
                _print(report, args.output_format)
                return EXIT_REJECTED
    _print(report, args.output_format)
    return EXIT_ACCEPTED


class _CannotCheck(Exception):
    pass


class _TemplateFailed(Exception):
    pass


def _settings(args: argparse.Namespace) -> tuple[DataSpec, int, int]:
    from ftjob.api.data import DataSpec
    from ftjob.api.training import TrainingSpec

    if args.job is None:
        uri = args.train.resolve().as_uri()
        return DataSpec(train_uri=uri), TrainingSpec().seed, TrainingSpec().max_seq_length
    from ftjob.manifests import ManifestError, load_job

    try:
        job = load_job(args.job)
    except ManifestError as err:
        raise _CannotCheck(str(err)) from None
    data = job.spec.data
    if data.validation_uri is not None and args.validation is None:
        print(
            f"note: {args.job} names a validation file ({data.validation_uri}); without --validation the "
            "check holds out a split instead",
            file=sys.stderr,
        )
        data = data.model_copy(update={"validation_uri": None})
    return data, job.spec.training.seed, job.spec.training.max_seq_length


def _token_lengths(folder: Path) -> Callable[[list[list[dict[str, str]]]], list[int]]:
    """Token lengths of conversations rendered with the folder's chat template, as the trainer counts
    them (`apply_chat_template(..., tokenize=True)`): rendered one by one, tokenized in batches by the
    fast tokenizer."""
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as err:
        raise _CannotCheck(f"{folder}: cannot load a tokenizer ({type(err).__name__}: {err})") from None
    if not getattr(tokenizer, "is_fast", False):
        raise _CannotCheck(f"{folder}: {type(tokenizer).__name__} is not a fast tokenizer")

    def lengths(conversations: list[list[dict[str, str]]]) -> list[int]:
        texts: list[str] = []
        for conversation in conversations:
            try:
                texts.append(str(tokenizer.apply_chat_template(conversation, tokenize=False)))
            except Exception as err:
                raise _TemplateFailed(
                    f"the base model's chat template cannot render a kept example "
                    f"({type(err).__name__}: {err})"
                ) from err
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]

    return lengths


def _stats(
    counter: Callable[[list[list[dict[str, str]]]], list[int]], path: Path, max_seq_length: int
) -> Any:
    from ftjob_trainer.data.report import token_stats

    lengths: array[int] = array("I")
    for batch in _conversations(path):
        lengths.extend(counter(batch))
    return token_stats(lengths, max_seq_length)


def _conversations(path: Path) -> Iterator[list[list[dict[str, str]]]]:
    from ftjob_trainer.data.batch import decode

    batch: list[list[dict[str, str]]] = []
    with path.open("rb") as lines:
        for line in lines:
            batch.append(decode(line))
            if len(batch) >= _TOKENIZER_BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def _print(report: DataReport, output_format: str) -> None:
    if output_format == "json":
        print(report.to_json())
    else:
        print(report.to_markdown(), end="")
