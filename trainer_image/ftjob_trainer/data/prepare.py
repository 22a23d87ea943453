"""The one entry point: check, deduplicate, split and measure the training data before any GPU time.

Memory stays bounded by the number of kept examples (an exact key, a signature and a token length
each), never by the size of the files: blocks of lines are streamed in and kept examples streamed out.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import numpy.typing as npt

from ftjob.api.data import DataSpec

from ..errors import DataInvalid
from . import batch
from .checks import Drop, DropReason
from .dedup import DedupIndex, Fingerprint, Match
from .reader import BOM, JsonlReader, TooLong, decode_line, read_range
from .report import EXCERPT_CHARS, DataReport, DropTally, InputReport, InputRole, token_stats
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
            block_bytes=batch.BLOCK_BYTES,
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
        reader = JsonlReader(path, max_line_bytes=self.max_line_bytes)
        progress = self._current = _Progress(reader, role)
        own = self.train_index if role == "train" else DedupIndex(self.spec.cleaning.near_duplicate_threshold)
        lengths: array[int] = array("I")
        # The file travels in blocks of whole lines: parsing and hashing do not depend on earlier lines,
        # and run for a whole block at once (in worker processes for large files). Deduplication does,
        # so the verdicts are then taken here, in file order.
        blocks = (
            batch.too_long(item.offset, item.number, item.text, self.max_line_bytes)
            if isinstance(item, TooLong)
            else item
            for item in reader.blocks(batch.BLOCK_BYTES)
        )
        workers = batch.worker_count(path.stat().st_size)
        taker = _Taker(self, progress, own, reference, lengths)
        with out.open("wb", buffering=_WRITE_BUFFER) as sink:
            for result in self.runner.run(blocks, workers=workers):
                reader.count(len(result.numbers), result.blank)
                taker.take(result, sink)
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

    def verdict(
        self, content: Drop | None, print_: Fingerprint, own: DedupIndex, reference: DedupIndex | None
    ) -> Drop | None:
        cleaning = self.spec.cleaning
        return (
            _duplicate_of(own, print_, exact=cleaning.drop_duplicates, near=cleaning.drop_near_duplicates)
            or content
            or (_overlap_with(reference, print_) if reference is not None else None)
        )


class _Taker:
    """Takes the verdicts of one file's blocks, in file order, and writes the kept lines.

    Most lines share no exact key and no band key with any line kept before or with any other line of
    their block: nothing can match them, so they are kept and indexed all at once. The others (and all
    lines when tokens are counted) go one by one, in order, through the same verdicts."""

    def __init__(
        self,
        cleaner: _Cleaner,
        progress: _Progress,
        own: DedupIndex,
        reference: DedupIndex | None,
        lengths: array[int],
    ) -> None:
        self.cleaner = cleaner
        self.progress = progress
        self.own = own
        self.reference = reference
        self.lengths = lengths
        self.near = cleaner.spec.cleaning.drop_near_duplicates

    def take(self, result: batch.BlockResult, sink: BinaryIO) -> None:
        progress = self.progress
        base = progress.lines_done
        numbers = result.numbers.tolist()
        checked = result.checked
        exact, signatures = result.exact, result.signatures
        bands = result.bands if self.near else None
        one_by_one = self._one_by_one(result, bands)
        ends = result.record_ends
        records = memoryview(result.records)
        events = sorted([*result.drops, *checked[np.flatnonzero(one_by_one)].tolist()])
        positions = np.searchsorted(checked, events).tolist() if events else []
        # Simple lines are indexed all at once at the end of the block: nothing in the block can match
        # them, so the one-by-one verdicts do not depend on when they join the index.
        simple = ~one_by_one
        pieces: list[memoryview | bytes] = []
        done = 0  # checked lines written so far

        def write_simple(upto: int) -> None:
            nonlocal done
            if upto > done:
                pieces.append(records[(ends[done - 1] if done else 0) : ends[upto - 1]])
                done = upto

        for index, position in zip(events, positions, strict=True):
            write_simple(position)
            progress.lines_done = base + index
            number = numbers[index]
            dropped = result.drops.get(index)
            if dropped is not None:
                progress.tally.record(number, dropped[1], dropped[0])
                continue
            print_ = Fingerprint(
                None,
                near=self.near,
                exact=int(exact[position]),
                signature=signatures[position] if self.near and signatures is not None else None,
                bands=bands[position].tolist() if bands is not None else None,
            )
            drop = self.cleaner.verdict(result.content.get(position), print_, self.own, self.reference)
            done = position + 1
            if drop is not None:
                text = self._text(result, index) if progress.tally.wants_sample(drop.reason) else ""
                progress.tally.record(number, text, drop)
                continue
            record = bytes(records[(ends[position - 1] if position else 0) : ends[position]])
            if self.cleaner.count_tokens is not None:
                progress.lines_done = base + index + 1
                self.lengths.append(_count(self.cleaner.count_tokens, progress.role, number, record))
            self.own.add(print_, number)
            pieces.append(record)
            progress.kept += 1
        write_simple(len(checked))
        sink.writelines(pieces)
        if simple.any():
            which = np.flatnonzero(simple)
            self.own.add_many(
                exact[which],
                result.numbers[checked[which]].tolist(),
                signatures[which] if self.near and signatures is not None else None,
                bands[which] if bands is not None else None,
            )
            progress.kept += len(which)
        progress.lines_done = base + len(numbers)

    def _one_by_one(
        self, result: batch.BlockResult, bands: npt.NDArray[np.uint64] | None
    ) -> npt.NDArray[np.bool_]:
        """Per checked line: whether it must go one by one."""
        exact = result.exact
        if self.cleaner.count_tokens is not None:
            return np.ones(len(exact), dtype=np.bool_)
        found = self.own.known(exact, bands) | _repeated(exact)
        if bands is not None:
            for column in bands.T:
                found |= _repeated(column)
        if self.reference is not None:
            found |= self.reference.known(exact, bands)
        if result.content:
            found[list(result.content)] = True
        return found

    def _text(self, result: batch.BlockResult, index: int) -> str:
        """The start of a line, read again from the file (only for the report's samples)."""
        start, end = int(result.starts[index]), int(result.ends[index])
        length = min(end - start, 4 * EXCERPT_CHARS + 8)
        raw = read_range(str(self.progress.reader.path), result.offset + start, length)
        if int(result.numbers[index]) == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        return decode_line(raw)


def _repeated(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
    """Per value: whether it occurs more than once."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    same = ordered[1:] == ordered[:-1]
    flags = np.zeros(len(values), dtype=np.bool_)
    flags[1:] |= same
    flags[:-1] |= same
    result = np.empty(len(values), dtype=np.bool_)
    result[order] = flags
    return result


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
