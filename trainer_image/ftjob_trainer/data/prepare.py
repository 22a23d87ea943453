"""The one entry point: check, deduplicate, split and measure the training data before any GPU time.

Memory stays bounded by the number of kept examples (an exact key, a signature and a token length
each), never by the size of the files: blocks of lines are streamed in and kept examples streamed out.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, ClassVar, Final, Literal

import numpy as np
import numpy.typing as npt

from ftjob.api.data import DataSpec

from ..errors import DataInvalid
from . import batch, kernels
from .checks import Drop, DropReason
from .dedup import NUM_HASHES, DedupIndex, Fingerprint, Match
from .reader import BOM, JsonlReader, TooLong, decode_line, read_range
from .report import EXCERPT_CHARS, DataReport, DropTally, InputReport, InputRole, token_stats
from .split import runs, split_file

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
    record_lengths: npt.NDArray[np.uint32]
    """Bytes of each kept example as written, in order."""


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
            record_lengths=train.record_lengths,
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
        # and run for a whole block at once (in two threads when two CPUs are usable). Deduplication
        # does, so the verdicts are then taken here, in file order, a block at a time.
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
        sizes = np.concatenate(taker.record_lengths) if taker.record_lengths else np.zeros(0, dtype=np.uint32)
        return _Cleaned(report, lengths, sizes)

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


class _Taker:
    """Takes the verdicts of one file's blocks, in file order, and writes the kept lines.

    The verdicts of a block's lines (duplicate, near duplicate, content, overlap with the training
    file), and the index's growth with each kept line, come from one call of the compiled
    `kernels.block_verdicts`; `compiled = False` takes them one by one through `DedupIndex`'s Python
    definitions instead (the tests hold the two equal). Python then only sees the dropped lines (and,
    when tokens are counted, the kept ones, in order)."""

    compiled: ClassVar[bool] = True

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
        self.record_lengths: list[npt.NDArray[np.uint32]] = []
        """Per block, the length of each kept line as written (for the split)."""

    def take(self, result: batch.BlockResult, sink: BinaryIO) -> None:
        progress = self.progress
        base = progress.lines_done
        checked = result.checked
        codes, matched, equal = self._verdicts(result)
        kept = codes == kernels.KEPT
        counting = self.cleaner.count_tokens is not None
        interesting = np.arange(len(checked)) if counting else np.flatnonzero(~kept)
        events = sorted([*result.drops, *checked[interesting].tolist()])
        positions = np.searchsorted(checked, events).tolist() if events else []
        numbers = result.numbers
        code_of = codes.tolist()
        ends = result.record_ends
        tally = progress.tally
        for index, position in zip(events, positions, strict=True):
            progress.lines_done = base + index
            number = int(numbers[index])
            dropped = result.drops.get(index)
            if dropped is not None:
                tally.record(number, dropped[1], dropped[0])
                continue
            code = code_of[position]
            if code != kernels.KEPT:
                content = result.content.get(position)
                reason = content.reason if code == kernels.CONTENT and content else _REASONS[code]
                if tally.wants_sample(reason):
                    drop = (
                        content
                        if content and code == kernels.CONTENT
                        else _drop(code, matched, equal, position)
                    )
                    tally.record(number, self._text(result, index), drop)
                else:
                    tally.count(reason)
                continue
            assert self.cleaner.count_tokens is not None
            start = int(ends[position - 1]) if position else 0
            record = result.records[start : int(ends[position])]
            progress.lines_done = base + index + 1
            self.lengths.append(_count(self.cleaner.count_tokens, progress.role, number, record))
            progress.kept += 1
        if not counting:
            progress.kept += int(np.count_nonzero(kept))
        self._write(result, kept, sink)
        progress.lines_done = base + len(numbers)

    def _verdicts(
        self, result: batch.BlockResult
    ) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Per checked line: its verdict code (`kernels.KEPT`, ...), the line it matched, and the number
        of equal signature values; kept lines join the index."""
        count = len(result.checked)
        near = self.near and result.signatures is not None and result.bands is not None
        content = np.zeros(count, dtype=np.bool_)
        content[list(result.content)] = True
        lines = result.numbers[result.checked]
        check_exact = self.cleaner.spec.cleaning.drop_duplicates
        if not self.compiled:
            return self._one_by_one(result, lines, content, near=near, check_exact=check_exact)
        own = self.own
        own.reserve(count)
        counts = own.counts()
        verdicts: tuple[npt.NDArray[np.int8], npt.NDArray[np.int64], npt.NDArray[np.int64]] = (
            kernels.block_verdicts(
                result.exact,
                result.signatures if near else np.zeros((count, 0), dtype=np.uint32),
                result.bands if near else np.zeros((count, 0), dtype=np.uint64),
                content,
                lines,
                own.arrays(),
                counts,
                self.reference.arrays() if self.reference is not None else None,
                band_bits=own.band_bits,
                threshold=own.threshold,
                check_exact=check_exact,
                near=near,
            )
        )
        own.set_counts(counts)
        return verdicts

    def _one_by_one(
        self,
        result: batch.BlockResult,
        lines: npt.NDArray[np.int64],
        content: npt.NDArray[np.bool_],
        *,
        near: bool,
        check_exact: bool,
    ) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """`_verdicts` by the definitions: `DedupIndex.find_exact`, `find_near` and `add`, line by line."""
        count = len(lines)
        codes = np.zeros(count, dtype=np.int8)
        matched = np.full(count, -1, dtype=np.int64)
        equal = np.full(count, NUM_HASHES, dtype=np.int64)
        reference = self.reference
        for position in range(count):
            print_ = Fingerprint(
                None,
                near=near,
                exact=int(result.exact[position]),
                signature=result.signatures[position] if near and result.signatures is not None else None,
                bands=result.bands[position].tolist() if near and result.bands is not None else None,
            )
            found: tuple[int, Match | None] = (kernels.KEPT, None)
            if check_exact and (match := self.own.find_exact(print_)):
                found = (kernels.DUPLICATE, match)
            elif near and (match := self.own.find_near(print_)):
                found = (kernels.NEAR_DUPLICATE, match)
            elif content[position]:
                found = (kernels.CONTENT, None)
            elif reference is not None and (match := reference.find_exact(print_)):
                found = (kernels.OVERLAP_EXACT, match)
            elif reference is not None and near and (match := reference.find_near(print_)):
                found = (kernels.OVERLAP_NEAR, match)
            code, match = found
            codes[position] = code
            if match is not None:
                matched[position] = match.line
                equal[position] = round(match.similarity * NUM_HASHES)
            if code == kernels.KEPT:
                self.own.add(print_, int(lines[position]))
        return codes, matched, equal

    def _write(self, result: batch.BlockResult, kept: npt.NDArray[np.bool_], sink: BinaryIO) -> None:
        """The kept lines, as they are in the block's buffer of encoded lines."""
        sizes = np.diff(result.record_ends, prepend=0).astype(np.uint32)
        if kept.all():
            sink.write(result.records)
            self.record_lengths.append(sizes)
        elif kept.any():
            sink.writelines(runs(result.records, kept, result.record_ends))
            self.record_lengths.append(sizes[kept])

    def _text(self, result: batch.BlockResult, index: int) -> str:
        """The start of a line, read again from the file (only for the report's samples)."""
        start, end = int(result.starts[index]), int(result.ends[index])
        length = min(end - start, 4 * EXCERPT_CHARS + 8)
        raw = read_range(str(self.progress.reader.path), result.offset + start, length)
        if int(result.numbers[index]) == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        return decode_line(raw)


_REASONS: Final = {
    kernels.DUPLICATE: DropReason.DUPLICATE,
    kernels.NEAR_DUPLICATE: DropReason.NEAR_DUPLICATE,
    kernels.OVERLAP_EXACT: DropReason.OVERLAP_WITH_TRAIN,
    kernels.OVERLAP_NEAR: DropReason.OVERLAP_WITH_TRAIN,
}


def _drop(code: int, matched: npt.NDArray[np.int64], equal: npt.NDArray[np.int64], position: int) -> Drop:
    """The verdict of a duplicate or an overlap, with its detail."""
    line = int(matched[position])
    similar = f"estimated Jaccard similarity {int(equal[position]) / NUM_HASHES:.2f} with"
    if code == kernels.DUPLICATE:
        return Drop(DropReason.DUPLICATE, f"same as line {line} after normalising case and whitespace")
    if code == kernels.NEAR_DUPLICATE:
        return Drop(DropReason.NEAR_DUPLICATE, f"{similar} line {line}")
    if code == kernels.OVERLAP_EXACT:
        # Validation examples also seen in training would make the validation loss look better than
        # the model is; exact copies are always looked for, near copies when near-duplicate detection
        # is on.
        return Drop(
            DropReason.OVERLAP_WITH_TRAIN,
            f"same as training line {line} after normalising case and whitespace",
        )
    return Drop(DropReason.OVERLAP_WITH_TRAIN, f"{similar} training line {line}")


def _count(count_tokens: TokenCounter, role: InputRole, line: int, record: bytes) -> int:
    try:
        return count_tokens(batch.decode(record))
    except Exception as err:
        # A template that refuses an example refuses it on every attempt: a data problem for the user
        # to fix, not a failure to retry.
        raise _TokenizerFailed(role, line, err) from err


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
