"""The part of the checks that does not depend on earlier lines, a block of the file at a time: splitting
it into lines, parsing, the structural and content checks, the exact key, the MinHash signature and its
band keys, and the lines as they will be written. Deduplication, which depends on every earlier line,
is done by the caller, in file order.

A block (`BLOCK_BYTES` of whole lines) is decoded at once by msgspec when every line has the usual
shape, its structure is checked with numpy for all lines together, and its keys and signatures come
from one call of the compiled kernel (`kernels`); any line that needs a closer look goes through the
line-by-line definitions (`reader`, `checks.parse_conversation`), which give the verdicts.

A file larger than one block is checked in two threads when the process may use two CPUs or more
(`worker_count`; `FTJOB_DATA_WORKERS=N` sets N, 0 or 1 for none): the scanner, the kernel, the block
verdicts, hashing and I/O run without Python's global lock, so a second core overlaps them with the
Python work (on the benchmark's 2-core machine about 1.4x the wall clock of one thread, for about 10%
more CPU). Worker processes would each spend about 1.7 s of CPU and 190 MiB loading numpy, pydantic
and numba: more than they save on files of this size.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple, TypeAlias, cast

import msgspec
import numpy as np
import numpy.typing as npt

from ftjob.api.data import CleaningSpec

from . import kernels
from .checks import (
    Conversation,
    Drop,
    DropReason,
    check_content,
    check_structure,
    decode_chat_lines,
    parse_conversation,
)
from .dedup import BatchHashes, Scanned, Signer
from .kernels import EXACT, RAW, ROLE_CODES
from .reader import BOM, EXCERPT_BYTES, Block, decode_line
from .split import runs

BLOCK_BYTES: Final = 1024 * 1024
"""The file is read, checked and sent to workers in blocks of about this many bytes (whole lines)."""
WORKERS_ENV: Final = "FTJOB_DATA_WORKERS"
"""Threads for the block work: 0 or 1 means none (all in the cleaning thread); unset: `worker_count`."""
DEFAULT_WORKERS: Final = 2
_CPU_MAX: Final = "/sys/fs/cgroup/cpu.max"
_IN_FLIGHT_PER_WORKER: Final = 2
_OPEN: Final = ord("{")
_CLOSE: Final = ord("}")
_NEWLINE: Final = ord("\n")
_CR: Final = ord("\r")

Item: TypeAlias = "str | Drop"
"""A line's text, or the verdict the reader already reached (too long, not UTF-8)."""


class Checked(NamedTuple):
    """A line that passed the structural checks (as `BatchChecker.check` returns it)."""

    exact: int
    content: Drop | None
    """The content checks' verdict: they run after deduplication, so it counts only if that passes."""
    record: bytes
    """The line as the cleaned file gets it: `{"messages": [{"role", "content"}, ...]}` and a newline."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    items: list[Checked | Drop]
    signatures: npt.NDArray[np.uint32] | None
    """One row per `Checked` item, in order; None when near-duplicates are not looked for."""
    bands: list[list[int]] | None


@dataclass(frozen=True, slots=True)
class BlockResult:
    """One block's lines. Indices count the block's non-blank lines (0-based)."""

    offset: int
    """Where the block starts in the file."""
    first_number: int
    """The file's line number of the block's first physical line."""
    numbers: npt.NDArray[np.int64]
    """Line number of each non-blank line."""
    starts: npt.NDArray[np.int64]
    """Offset in the block of each non-blank line (for excerpts)."""
    ends: npt.NDArray[np.int64]
    blank: int
    drops: dict[int, tuple[Drop, str]]
    """Lines that failed a structural check: the verdict and the line's text (for the report)."""
    checked: npt.NDArray[np.int64]
    """The other lines, in order."""
    exact: npt.NDArray[np.uint64]
    """Per checked line."""
    signatures: npt.NDArray[np.uint32] | None
    bands: npt.NDArray[np.uint64] | None
    content: dict[int, Drop]
    """Per checked line (its position in `checked`) that failed a content check."""
    records: bytes
    """The checked lines as the cleaned file gets them, one after the other."""
    record_ends: npt.NDArray[np.int64]


class BatchChecker:
    def __init__(self, cleaning: CleaningSpec) -> None:
        self.cleaning = cleaning
        self.signer = Signer(cleaning.near_duplicate_threshold)

    def check(self, batch: list[Item]) -> BatchResult:
        """Lines already read (the reader's texts and verdicts), one result per line."""
        cleaning = self.cleaning
        parsed = [
            item if isinstance(item, Drop) else parse_conversation(item, max_messages=cleaning.max_messages)
            for item in batch
        ]
        good: list[Conversation] = [item for item in parsed if not isinstance(item, Drop)]
        hashed = self._hash(good)
        content = self._content(good, hashed)
        records = iter(encode_many(good))
        exact = iter(hashed.exact.tolist() if hashed else ())
        items: list[Checked | Drop] = []
        position = 0
        for item in parsed:
            if isinstance(item, Drop):
                items.append(item)
                continue
            items.append(Checked(next(exact), content.get(position), next(records)))
            position += 1
        signatures = hashed.signatures if hashed else None
        bands = hashed.bands.tolist() if hashed and hashed.bands is not None else None
        return BatchResult(items, signatures, bands)

    def check_block(self, block: Block) -> BlockResult:
        """Every line of a block of whole lines."""
        data = block.data
        array_, starts, ends = lines_of(data)
        fast = self._decode_fast(block, array_, starts, ends)
        if fast is not None:
            return self._finish_fast(block, starts, ends, *fast)
        lines = data.split(b"\n")
        if data.endswith(b"\n"):
            lines.pop()
        return self._finish_slow(block, lines)

    def _decode_fast(
        self,
        block: Block,
        data: npt.NDArray[np.uint8],
        starts: npt.NDArray[np.int64],
        ends: npt.NDArray[np.int64],
    ) -> tuple[list[Conversation | Drop], npt.NDArray[np.uint8], Scanned | None, list[int]] | None:
        """The block decoded at once, when every line is one JSON object of the usual shape; None when
        any line needs a closer look (blank, too long, a byte order mark, another shape, invalid).
        Returns the conversations (or drops), the role codes, where the messages are in the block, and
        the lines that may have failed a check."""
        if not len(ends) or int((ends - starts).max()) > self.cleaning.max_line_bytes:
            return None
        # Each line starts with "{" and ends with "}" (a "\r" before the newline allowed): then no JSON
        # value can run from one line into the next (a value continues after "}" only with "," "]" or
        # "}", and strings cannot hold a raw newline), so decoding the block line by line or at once
        # gives the same values, exactly one per line when the counts agree.
        if (ends <= starts).any() or (data[starts] != _OPEN).any():
            return None
        last = ends - 1
        closing = data[last]
        carriage = closing == _CR
        if carriage.any():
            closing = np.where(carriage, data[np.maximum(last - 1, 0)], closing)
        if (closing != _CLOSE).any():
            return None
        try:
            decoded = decode_chat_lines(block.data)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            return None
        if len(decoded) != len(ends):
            return None
        messages = [line.messages for line in decoded]
        conversations: list[Conversation | Drop] = list(messages)
        sizes = np.fromiter(map(len, messages), dtype=np.int64, count=len(messages))
        scanned = _scan(block.data, data, starts, ends, sizes)
        suspects, roles = _suspects(
            messages, self.cleaning.max_messages, sizes, scanned.role if scanned is not None else None
        )
        suspect_list = suspects.tolist()
        for index in suspect_list:
            conversation = messages[index]
            if len(conversation) > self.cleaning.max_messages:
                text = block.data[starts[index] : ends[index]].rstrip(b"\r").decode()
                conversations[index] = parse_conversation(text, max_messages=self.cleaning.max_messages)
            else:
                conversations[index] = check_structure(conversation) or conversation
        return conversations, roles, scanned, suspect_list

    def _finish_fast(
        self,
        block: Block,
        starts: npt.NDArray[np.int64],
        ends: npt.NDArray[np.int64],
        parsed: list[Conversation | Drop],
        roles: npt.NDArray[np.uint8],
        scanned: Scanned | None,
        suspects: list[int],
    ) -> BlockResult:
        numbers = np.arange(block.first_number, block.first_number + len(parsed), dtype=np.int64)
        drops: dict[int, tuple[Drop, str]] = {}
        for index in suspects:
            item = parsed[index]
            if isinstance(item, Drop):
                drops[index] = (item, decode_line(block.data[starts[index] : ends[index]]))
        if drops and scanned is not None:
            keep = np.ones(len(parsed), dtype=np.bool_)
            keep[list(drops)] = False
            scanned = scanned.subset(keep)
        return self._finish(
            block, numbers, starts, ends, 0, parsed, drops, roles if not drops else None, scanned
        )

    def _finish_slow(self, block: Block, lines: list[bytes]) -> BlockResult:
        """Line by line, as the reader and `parse_conversation` define it."""
        limit = self.cleaning.max_line_bytes
        numbers: list[int] = []
        starts: list[int] = []
        ends: list[int] = []
        parsed: list[Conversation | Drop] = []
        drops: dict[int, tuple[Drop, str]] = {}
        blank = 0
        offset = 0
        for number, line in enumerate(lines, start=block.first_number):
            start, offset = offset, offset + len(line) + 1
            raw = line[:limit] if len(line) > limit else line.rstrip(b"\r")
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            if len(line) > limit:
                item: Item = Drop(DropReason.LINE_TOO_LONG, f"longer than maxLineBytes {limit}")
                text = raw[:EXCERPT_BYTES].decode("utf-8", "replace")
            elif not raw.strip():
                blank += 1
                continue
            else:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    text = raw.decode("utf-8", "replace")
                    item = Drop(DropReason.INVALID_JSON, f"not valid UTF-8 (byte {err.start + 1})")
                else:
                    item = text
            if isinstance(item, str):
                result = parse_conversation(item, max_messages=self.cleaning.max_messages)
            else:
                result = item
            if isinstance(result, Drop):
                drops[len(parsed)] = (result, text)
            parsed.append(result)
            numbers.append(number)
            starts.append(start)
            ends.append(start + len(line))
        return self._finish(
            block,
            np.array(numbers, dtype=np.int64),
            np.array(starts, dtype=np.int64),
            np.array(ends, dtype=np.int64),
            blank,
            parsed,
            drops,
        )

    def _finish(
        self,
        block: Block,
        numbers: npt.NDArray[np.int64],
        starts: npt.NDArray[np.int64],
        ends: npt.NDArray[np.int64],
        blank: int,
        parsed: list[Conversation | Drop],
        drops: dict[int, tuple[Drop, str]],
        roles: npt.NDArray[np.uint8] | None = None,
        scanned: Scanned | None = None,
    ) -> BlockResult:
        # Every `Drop` in `parsed` is in `drops`: the lines between them are the conversations.
        good = cast("list[Conversation]", parsed)
        checked = np.arange(len(parsed), dtype=np.int64)
        if drops:
            good = []
            previous = 0
            for index in sorted(drops):
                good.extend(cast("list[Conversation]", parsed[previous:index]))
                previous = index + 1
            good.extend(cast("list[Conversation]", parsed[previous:]))
            checked = np.delete(checked, sorted(drops))
        hashed = self._hash(good, roles, scanned)
        content = self._content(good, hashed)
        records, record_ends = (
            scanned.written.records_of(checked, good)
            if scanned is not None and scanned.written is not None
            else encode_block(good)
        )
        empty_keys = np.zeros(0, dtype=np.uint64)
        return BlockResult(
            offset=block.offset,
            first_number=block.first_number,
            numbers=numbers,
            starts=starts,
            ends=ends,
            blank=blank,
            drops=drops,
            checked=checked,
            exact=hashed.exact if hashed else empty_keys,
            signatures=hashed.signatures if hashed else None,
            bands=hashed.bands if hashed else None,
            content=content,
            records=records,
            record_ends=record_ends,
        )

    def _hash(
        self,
        good: list[Conversation],
        roles: npt.NDArray[np.uint8] | None = None,
        scanned: Scanned | None = None,
    ) -> BatchHashes | None:
        if not good:
            return None
        return self.signer.hash_batch(
            good, near=self.cleaning.drop_near_duplicates, roles=roles, scanned=scanned
        )

    def _content(self, good: list[Conversation], hashed: BatchHashes | None) -> dict[int, Drop]:
        """`check_content` of the conversations that may fail it: the kernel's word and character counts
        clear the ASCII conversations that pass (most), the others are checked one by one."""
        if hashed is None:
            return {}
        cleaning = self.cleaning
        suspects: Iterable[int]
        if cleaning.output_format == "json":
            suspects = range(len(good))
        else:
            segments = hashed.segments
            raw = (segments.flags & (RAW | EXACT)) == (RAW | EXACT)
            short = raw & (
                ((segments.role == 2) & (hashed.seg_words < cleaning.min_assistant_words))
                | ((segments.role == 1) & (hashed.seg_stripped < cleaning.min_user_chars))
            )
            flagged = np.zeros(len(good), dtype=np.bool_)
            flagged[segments.line[short]] = True
            flagged |= ~np.array(segments.ascii, dtype=np.bool_)
            suspects = np.flatnonzero(flagged).tolist()
        verdicts: dict[int, Drop] = {}
        for index in suspects:
            verdict = check_content(good[index], cleaning)
            if verdict is not None:
                verdicts[index] = verdict
        return verdicts


def lines_of(
    data: bytes,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The block's bytes, and where each line starts and ends (at its newline, or the end of the
    block): the pieces `data.split(b"\\n")` cuts, without a last empty one."""
    array_ = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(array_ == _NEWLINE).astype(np.int64)
    ends = newlines if data.endswith(b"\n") else np.append(newlines, len(data)).astype(np.int64)
    starts = np.concatenate(([0], newlines[: len(ends) - 1] + 1)).astype(np.int64)
    return array_, starts, ends


def _scan(
    raw: bytes,
    data: npt.NDArray[np.uint8],
    line_starts: npt.NDArray[np.int64],
    line_ends: npt.NDArray[np.int64],
    sizes: npt.NDArray[np.int64],
) -> Scanned | None:
    """Where the block's messages are in its raw lines (`kernels.scan_block`); None when a line is not
    simple enough to tell, or the messages found are not those msgspec decoded (counted per line)."""
    ok, counts, line, role, start, end, ascii, scratch, records, ends, written = kernels.scan_block(
        data, line_starts, line_ends
    )
    if not ok or not np.array_equal(counts, sizes):
        return None
    return Scanned(
        raw + scratch.tobytes(),
        counts,
        line,
        role,
        start,
        end,
        ascii,
        Written(records.tobytes(), ends, written),
    )


@dataclass(frozen=True, slots=True)
class Written:
    """A block's lines as `encode` writes them, from the scanner (`kernels.scan_block`)."""

    records: bytes
    ends: npt.NDArray[np.int64]
    """Per line of the block: where its record ends in `records` (an unwritten line's is empty)."""
    written: npt.NDArray[np.bool_]
    """Per line: whether the scanner wrote it (else `encode` must)."""

    def records_of(
        self, checked: npt.NDArray[np.int64], conversations: list[Conversation]
    ) -> tuple[bytes, npt.NDArray[np.int64]]:
        """`encode_block(conversations)`, the conversations being the block's lines `checked`."""
        sizes = np.diff(self.ends, prepend=0)
        if self.written[checked].all():
            keep = np.zeros(len(self.ends), dtype=np.bool_)
            keep[checked] = True
            data = self.records if keep.all() else b"".join(runs(self.records, keep, self.ends))
            return data, np.cumsum(sizes[checked])
        view = memoryview(self.records)
        pieces: list[bytes | memoryview] = []
        for position, line in enumerate(checked.tolist()):
            if self.written[line]:
                pieces.append(view[int(self.ends[line]) - int(sizes[line]) : int(self.ends[line])])
            else:
                pieces.append(encode(conversations[position]))
        return b"".join(pieces), np.cumsum([len(piece) for piece in pieces], dtype=np.int64)


def _suspects(
    conversations: list[Conversation],
    max_messages: int,
    sizes: npt.NDArray[np.int64],
    codes: npt.NDArray[np.uint8] | None = None,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.uint8]]:
    """The conversations that may fail `check_structure` or have too many messages (found for all at
    once; `check_structure` then gives the verdict): the others are an optional system message, then
    user and assistant turns alternating, starting with user and ending with assistant. `sizes`: the
    messages per conversation; `codes`: their role codes, when known."""
    count = len(conversations)
    total = int(sizes.sum())
    if codes is None:
        codes = np.fromiter(
            map(ROLE_CODES.__getitem__, [m.role for c in conversations for m in c]),
            dtype=np.uint8,
            count=total,
        )
    wide = codes.astype(np.int64)
    line = np.repeat(np.arange(count), sizes)
    starts = np.cumsum(sizes) - sizes
    nonempty = sizes > 0
    first = np.where(nonempty, wide[np.minimum(starts, max(total - 1, 0))] if total else 0, -1)
    last = np.where(nonempty, wide[np.maximum(starts + sizes - 1, 0)] if total else 0, -1)
    system = first == 0
    after = np.arange(total) - starts[line] - system[line]
    expected = np.where(after < 0, 0, np.where(after % 2 == 0, 1, 2))
    bad = np.bincount(line[wide != expected], minlength=count) > 0
    bad |= (last != 2) | (sizes > max_messages)
    return np.flatnonzero(bad), codes


_encoders = threading.local()


def _encoder() -> msgspec.json.Encoder:
    encoder: msgspec.json.Encoder | None = getattr(_encoders, "encoder", None)
    if encoder is None:
        encoder = _encoders.encoder = msgspec.json.Encoder()
    return encoder


def encode(conversation: Conversation) -> bytes:
    # Only role and content are written: extra keys vary between lines and would give the datasets
    # loader inconsistent columns.
    return _encoder().encode({"messages": conversation}) + b"\n"


class _Record(msgspec.Struct, gc=False):
    messages: Conversation


def encode_many(conversations: list[Conversation]) -> list[bytes]:
    """`encode` of each conversation."""
    buffer, ends = encode_block(conversations)
    return [buffer[start:end] for start, end in zip([0, *ends.tolist()], ends.tolist(), strict=False)]


def encode_block(conversations: list[Conversation]) -> tuple[bytes, npt.NDArray[np.int64]]:
    """`encode` of each conversation, as one buffer, and the end of each line in it."""
    buffer = _encoder().encode_lines([_Record(conversation) for conversation in conversations])
    ends = np.flatnonzero(np.frombuffer(buffer, dtype=np.uint8) == _NEWLINE) + 1
    return buffer, ends.astype(np.int64)


class _ChatRecord(msgspec.Struct):
    messages: list[dict[str, str]]


_decode_record = msgspec.json.Decoder(_ChatRecord).decode


def decode(record: bytes) -> list[dict[str, str]]:
    """The messages of a line written by `encode`."""
    return _decode_record(record).messages


def worker_count(file_bytes: int) -> int:
    """Threads to check blocks in: `WORKERS_ENV` when set; otherwise 2 when the file has more than one
    block and the process may use two CPUs or more; 0 means the cleaning thread."""
    configured = os.environ.get(WORKERS_ENV, "").strip()
    if configured:
        return max(int(configured), 0)
    return DEFAULT_WORKERS if file_bytes > BLOCK_BYTES and usable_cpus() >= DEFAULT_WORKERS else 0


def usable_cpus() -> int:
    """The CPUs this process may run on, bounded by its cgroup's CPU quota (a pod's CPU limit)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        count = os.cpu_count() or 1
    try:
        quota, period = Path(_CPU_MAX).read_text(encoding="ascii").split()[:2]
    except (OSError, ValueError):
        return count
    return count if quota == "max" else max(1, min(count, int(quota) // int(period)))


class Runner:
    """Checks blocks in order, in this thread or in a pool of threads (the compiled kernel, the file's
    digest and the writes run without Python's global lock, so the threads overlap on other cores)."""

    def __init__(self, cleaning: CleaningSpec) -> None:
        self.cleaning = cleaning
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._workers = 0

    def run(self, blocks: Iterable[Block | BlockResult], *, workers: int) -> Iterator[BlockResult]:
        """Blocks in, results out, in order. A `BlockResult` passes through (the reader's own verdict on
        a line too long to read)."""
        if workers <= 1:
            return (item if isinstance(item, BlockResult) else self._check(item) for item in blocks)
        return self._parallel(blocks, workers)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _check(self, block: Block) -> BlockResult:
        checker: BatchChecker | None = getattr(self._local, "checker", None)
        if checker is None:
            checker = self._local.checker = BatchChecker(self.cleaning)
        return checker.check_block(block)

    def _parallel(self, blocks: Iterable[Block | BlockResult], workers: int) -> Iterator[BlockResult]:
        if self._pool is None or self._workers != workers:
            self.close()
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="ftjob-data")
            self._workers = workers
        pool = self._pool
        pending: deque[Future[BlockResult] | BlockResult] = deque()
        for block in blocks:
            pending.append(block if isinstance(block, BlockResult) else pool.submit(self._check, block))
            if len(pending) >= workers * _IN_FLIGHT_PER_WORKER:
                yield _get(pending.popleft())
        while pending:
            yield _get(pending.popleft())


def _get(item: Future[BlockResult] | BlockResult) -> BlockResult:
    return item if isinstance(item, BlockResult) else item.result()


def too_long(offset: int, number: int, text: str, limit: int) -> BlockResult:
    """The result for a line the reader found longer than `limit` bytes without reading it whole."""
    empty = np.zeros(0, dtype=np.int64)
    return BlockResult(
        offset=offset,
        first_number=number,
        numbers=np.array([number], dtype=np.int64),
        starts=np.zeros(1, dtype=np.int64),
        ends=np.zeros(1, dtype=np.int64),
        blank=0,
        drops={0: (Drop(DropReason.LINE_TOO_LONG, f"longer than maxLineBytes {limit}"), text)},
        checked=empty,
        exact=np.zeros(0, dtype=np.uint64),
        signatures=None,
        bands=None,
        content={},
        records=b"",
        record_ends=empty,
    )
