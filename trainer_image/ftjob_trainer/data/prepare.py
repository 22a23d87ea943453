"""The one entry point: check, deduplicate, split and measure the training data before any GPU time.

Memory stays bounded by the number of kept examples (an exact key, a signature and a token length
each), never by the size of the files: lines are streamed in and kept examples streamed out.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ftjob.api.data import DataSpec

from ..errors import DataInvalid
from . import batch
from .checks import Drop, DropReason
from .dedup import DedupIndex, Fingerprint, Match
from .reader import JsonlReader, Line
from .report import DataReport, DropTally, InputReport, InputRole, token_stats
from .split import split_file

TokenCounter = Callable[[list[dict[str, str]]], int]
"""Tokens in one conversation rendered with the base model's chat template."""

TRAIN_FILE = "train.clean.jsonl"
VALIDATION_FILE = "validation.clean.jsonl"
_KEPT_FILE = "train.kept.jsonl"
_WRITE_BUFFER = 256 * 1024


class DataRejected(DataInvalid):
    """Too little usable data. Carries the report so the caller can upload it before exiting."""

    def __init__(self, message: str, report: DataReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class PreparedData:
    train_path: Path
    """Cleaned training examples, one `{"messages": [...]}` per line."""
    validation_path: Path
    train_examples: int
    validation_examples: int
    report: DataReport


@dataclass(frozen=True)
class _Cleaned:
    """What one pass over an input file produced."""

    input: InputReport
    lengths: array[int]
    """Token lengths of the kept examples, in order; empty when tokens are not counted."""


@dataclass
class _Progress:
    """One input file as far as it has been read."""

    reader: JsonlReader
    role: InputRole
    tally: DropTally = field(default_factory=DropTally)
    kept: int = 0
    lines_done: int = 0
    """Lines checked so far (the reader may have read a batch further)."""

    def report(self, *, finished: bool = True) -> InputReport:
        return InputReport(
            role=self.role,
            name=self.reader.path.name,
            sha256=self.reader.sha256 if finished else "(not read to the end)",
            size_bytes=self.reader.size_bytes,
            lines=self.reader.lines if finished else self.lines_done,
            blank_lines=self.reader.blank_lines,
            kept=self.kept,
            dropped=self.tally.summaries(),
        )


class _TokenizerFailed(Exception):
    def __init__(self, role: InputRole, line: int, error: Exception) -> None:
        super().__init__(
            f"{role} line {line}: the base model's chat template cannot render this example "
            f"({type(error).__name__}: {error})"
        )


def prepare_data(
    train_path: Path,
    validation_path: Path | None,
    spec: DataSpec,
    *,
    seed: int,
    max_seq_length: int,
    out_dir: Path,
    count_tokens: TokenCounter | None = None,
) -> PreparedData:
    """Check both files, write the kept examples to `out_dir`, and report.

    Raises `DataRejected` (a `DataInvalid`, with `.report`) when fewer than `spec.minExamples` training
    examples or no validation example remain, or when the chat template rejects an example."""
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = _Outputs(out_dir, train_path, validation_path)
    cleaner = _Cleaner(spec, count_tokens)
    try:
        report = _run(cleaner, outputs, seed=seed, max_seq_length=max_seq_length)
    except _TokenizerFailed as err:
        report = cleaner.partial_report(outputs, seed=seed, error=str(err))
        raise DataRejected(str(err), report) from err.__cause__
    finally:
        cleaner.close()
    problems = _problems(report)
    if problems:
        report = report.model_copy(update={"error": problems})
        raise DataRejected(problems, report)
    return PreparedData(
        train_path=outputs.train,
        validation_path=outputs.validation,
        train_examples=report.train_examples,
        validation_examples=report.validation_examples,
        report=report,
    )


@dataclass(frozen=True)
class _Outputs:
    out_dir: Path
    train_input: Path
    validation_input: Path | None

    def __post_init__(self) -> None:
        inputs = {
            self.train_input.resolve(),
            *([self.validation_input.resolve()] if self.validation_input else []),
        }
        clash = inputs & {self.train.resolve(), self.validation.resolve(), self.kept.resolve()}
        if clash:
            raise ValueError(
                f"an input would be overwritten by the cleaned output: {sorted(map(str, clash))}"
            )

    @property
    def validation_source(self) -> Literal["file", "split"]:
        return "split" if self.validation_input is None else "file"

    @property
    def train(self) -> Path:
        return self.out_dir / TRAIN_FILE

    @property
    def validation(self) -> Path:
        return self.out_dir / VALIDATION_FILE

    @property
    def kept(self) -> Path:
        return self.out_dir / _KEPT_FILE


def _run(cleaner: _Cleaner, outputs: _Outputs, *, seed: int, max_seq_length: int) -> DataReport:
    spec = cleaner.spec
    if outputs.validation_input is None:
        train = cleaner.clean(outputs.train_input, "train", outputs.kept, reference=None)
        split = split_file(
            outputs.kept,
            train_path=outputs.train,
            validation_path=outputs.validation,
            usable=train.input.kept,
            fraction=spec.effective_validation_split,
            seed=seed,
            lengths=train.lengths,
        )
        outputs.kept.unlink()
        counts, lengths = (split.train, split.validation), (split.train_lengths, split.validation_lengths)
        inputs = [train.input]
    else:
        train = cleaner.clean(outputs.train_input, "train", outputs.train, reference=None)
        validation = cleaner.clean(
            outputs.validation_input, "validation", outputs.validation, reference=cleaner.train_index
        )
        counts, lengths = (train.input.kept, validation.input.kept), (train.lengths, validation.lengths)
        inputs = [train.input, validation.input]
    return DataReport(
        inputs=inputs,
        train_examples=counts[0],
        validation_examples=counts[1],
        validation_source=outputs.validation_source,
        validation_split=spec.effective_validation_split if outputs.validation_input is None else None,
        seed=seed,
        min_examples=spec.min_examples,
        cleaning=spec.cleaning,
        train_tokens=token_stats(lengths[0], max_seq_length),
        validation_tokens=token_stats(lengths[1], max_seq_length),
    )


class _Cleaner:
    """Cleans input files one after the other; the training file's index stays for the overlap check."""

    def __init__(self, spec: DataSpec, count_tokens: TokenCounter | None) -> None:
        self.spec = spec
        self.count_tokens = count_tokens
        self.max_line_bytes = spec.cleaning.max_line_bytes
        self.train_index = DedupIndex(spec.cleaning.near_duplicate_threshold)
        self.runner = batch.Runner(spec.cleaning)
        self._done: list[InputReport] = []
        self._current: _Progress | None = None

    def clean(self, path: Path, role: InputRole, out: Path, *, reference: DedupIndex | None) -> _Cleaned:
        progress = self._current = _Progress(JsonlReader(path, max_line_bytes=self.max_line_bytes), role)
        own = self.train_index if role == "train" else DedupIndex(self.spec.cleaning.near_duplicate_threshold)
        lengths: array[int] = array("I")
        near = self.spec.cleaning.drop_near_duplicates
        # Lines travel in batches: parsing and hashing do not depend on earlier lines, and run for a
        # whole batch at once (in worker processes for large files). Deduplication does, so the verdicts
        # are then taken here, line by line, in file order.
        lines: deque[Line] = deque()
        items = (self._item(line, lines) for line in progress.reader)
        workers = batch.worker_count(path.stat().st_size)
        results = self.runner.run(batch.batches(items, parallel=workers > 1), workers=workers)
        # With workers, a large buffer: each flush releases the GIL, which the pool's threads then hold
        # for a while.
        with out.open("wb", buffering=_WRITE_BUFFER if workers > 1 else -1) as sink:
            for result in results:
                signatures = iter(result.signatures if result.signatures is not None else ())
                bands = iter(result.bands or ())
                for checked in result.items:
                    line = lines.popleft()
                    progress.lines_done += 1
                    if isinstance(checked, Drop):
                        progress.tally.record(line.number, line.text, checked)
                        continue
                    print_ = Fingerprint(
                        None,
                        near=near,
                        exact=checked.exact,
                        signature=next(signatures) if near else None,
                        bands=next(bands) if near else None,
                    )
                    drop = self._verdict(checked, print_, own, reference)
                    if drop is not None:
                        progress.tally.record(line.number, line.text, drop)
                        continue
                    if self.count_tokens is not None:
                        lengths.append(_count(self.count_tokens, role, line.number, checked.record))
                    own.add(print_, line.number)
                    sink.write(checked.record)
                    progress.kept += 1
        self._current = None
        report = progress.report()
        self._done.append(report)
        return _Cleaned(report, lengths)

    def close(self) -> None:
        self.runner.close()

    def partial_report(self, outputs: _Outputs, *, seed: int, error: str) -> DataReport:
        """What is known when a pass stops half-way (the file being read is described up to there)."""
        inputs = list(self._done)
        if self._current is not None:
            inputs.append(self._current.report(finished=False))
        return DataReport(
            inputs=inputs,
            train_examples=0,
            validation_examples=0,
            validation_source=outputs.validation_source,
            seed=seed,
            min_examples=self.spec.min_examples,
            cleaning=self.spec.cleaning,
            error=error,
        )

    def _item(self, line: Line, lines: deque[Line]) -> batch.Item:
        lines.append(line)
        if line.too_long:
            return Drop(DropReason.LINE_TOO_LONG, f"longer than maxLineBytes {self.max_line_bytes}")
        if line.problem is not None:
            return Drop(DropReason.INVALID_JSON, line.problem)
        return line.text

    def _verdict(
        self, checked: batch.Checked, print_: Fingerprint, own: DedupIndex, reference: DedupIndex | None
    ) -> Drop | None:
        cleaning = self.spec.cleaning
        return (
            _duplicate_of(own, print_, exact=cleaning.drop_duplicates, near=cleaning.drop_near_duplicates)
            or checked.content
            or (_overlap_with(reference, print_) if reference is not None else None)
        )


def _count(count_tokens: TokenCounter, role: InputRole, line: int, record: bytes) -> int:
    try:
        return count_tokens(batch.decode(record))
    except Exception as err:
        # A template that refuses an example refuses it on every attempt: a data problem for the user
        # to fix, not a failure to retry.
        raise _TokenizerFailed(role, line, err) from err


def _duplicate_of(index: DedupIndex, print_: Fingerprint, *, exact: bool, near: bool) -> Drop | None:
    match = index.find_exact(print_) if exact else None
    if match is not None:
        return Drop(DropReason.DUPLICATE, f"same as line {match.line} after normalising case and whitespace")
    match = index.find_near(print_) if near else None
    if match is not None:
        return Drop(DropReason.NEAR_DUPLICATE, f"{_similar(match)} line {match.line}")
    return None


def _overlap_with(train: DedupIndex, print_: Fingerprint) -> Drop | None:
    """Validation examples also seen in training would make the validation loss look better than the
    model is; exact copies are always looked for, near copies when near-duplicate detection is on."""
    exact = train.find_exact(print_)
    if exact is not None:
        return Drop(
            DropReason.OVERLAP_WITH_TRAIN,
            f"same as training line {exact.line} after normalising case and whitespace",
        )
    near = train.find_near(print_)
    if near is not None:
        return Drop(DropReason.OVERLAP_WITH_TRAIN, f"{_similar(near)} training line {near.line}")
    return None


def _similar(match: Match) -> str:
    return f"estimated Jaccard similarity {match.similarity:.2f} with"


def _problems(report: DataReport) -> str:
    problems: list[str] = []
    if report.train_examples < report.min_examples:
        problems.append(_too_few_train(report))
    if report.validation_examples == 0:
        problems.append(_no_validation(report))
    if problems and report.dropped_by_reason():
        problems.append(f"top drop reasons: {report.top_reasons()}")
    return "; ".join(problems)


def _too_few_train(report: DataReport) -> str:
    message = (
        f"only {report.train_examples} usable training examples remain, fewer than minExamples "
        f"{report.min_examples}"
    )
    train = report.inputs[0]
    message += f" ({train.kept} of {train.lines} lines passed the checks"
    if report.validation_source == "split":
        message += f", {report.validation_examples} held out for validation"
    return message + ")"


def _no_validation(report: DataReport) -> str:
    if report.validation_source == "split":
        return (
            f"no validation example remains: {report.inputs[0].kept} usable example(s) are too few to "
            "hold any out (at least 2 are needed)"
        )
    validation = report.inputs[1]
    return f"no validation example remains: {validation.kept} of {validation.lines} lines of {validation.name} passed"
