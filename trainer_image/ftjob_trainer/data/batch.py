"""The part of the checks that does not depend on earlier lines, a batch of lines at a time: parsing, the
structural and content checks, the exact key, the MinHash signature and its band keys, and the line as it
will be written. It runs in the cleaning process or, for large files, in worker processes (both cores);
deduplication, which depends on every earlier line, stays in the cleaning process, in file order.

Workers are started with `spawn` (the trainer may hold CUDA and threads, which `fork` must not copy) and
import only this package (numpy and msgspec, no torch). At most `_IN_FLIGHT_PER_WORKER` batches per
worker are queued, so memory stays bounded by the batch size, not by the file.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.pool import AsyncResult, Pool
from typing import Final, NamedTuple, TypeAlias

import msgspec
import numpy as np
import numpy.typing as npt

from ftjob.api.data import CleaningSpec

from .checks import Conversation, Drop, check_content, parse_conversation
from .dedup import Signer, exact_key

BATCH_LINES: Final = 256
BATCH_CHARS: Final = 24 * 1024
"""A batch ends at whichever comes first; the characters bound numpy's working memory per batch (about
20 bytes per character)."""
PARALLEL_BATCH_CHARS: Final = 128 * 1024
"""Batches sent to workers are larger: numpy's cost per call is spread over more lines (about 240 lines
of 500 characters hash fastest: larger batches fall out of the CPU caches)."""
WORKERS_ENV: Final = "FTJOB_DATA_WORKERS"
"""Worker processes for the batch work: 0 or 1 means none (all in the cleaning process). Unset: one per
usable CPU core (at most `_MAX_WORKERS`), for files of at least `PARALLEL_MIN_BYTES`."""
PARALLEL_MIN_BYTES: Final = 16 * 1024 * 1024
"""Below this, starting worker processes (about half a second) costs more than it saves."""
_MAX_WORKERS: Final = 4
_IN_FLIGHT_PER_WORKER: Final = 4

Item: TypeAlias = "str | Drop"
"""A line's text, or the verdict the reader already reached (too long, not UTF-8)."""


class Checked(NamedTuple):
    """A line that passed the structural checks. (A named tuple: it unpickles about three times faster
    than a dataclass, and the cleaning process unpickles one per line it gets from a worker.)"""

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


class BatchChecker:
    def __init__(self, cleaning: CleaningSpec) -> None:
        self.cleaning = cleaning
        self.signer = Signer(cleaning.near_duplicate_threshold)

    def check(self, batch: list[Item]) -> BatchResult:
        cleaning = self.cleaning
        parsed = [
            item if isinstance(item, Drop) else parse_conversation(item, max_messages=cleaning.max_messages)
            for item in batch
        ]
        good: list[Conversation] = [item for item in parsed if not isinstance(item, Drop)]
        signatures = bands = None
        if cleaning.drop_near_duplicates and good:
            signatures = self.signer.signatures(good)
            bands = self.signer.band_keys(signatures).tolist()
        items: list[Checked | Drop] = [
            item
            if isinstance(item, Drop)
            else Checked(exact_key(item), check_content(item, cleaning), encode(item))
            for item in parsed
        ]
        return BatchResult(items, signatures, bands)


_encode_record = msgspec.json.Encoder().encode


def encode(conversation: Conversation) -> bytes:
    # Only role and content are written: extra keys vary between lines and would give the datasets
    # loader inconsistent columns.
    return _encode_record({"messages": conversation}) + b"\n"


class _ChatRecord(msgspec.Struct):
    messages: list[dict[str, str]]


_decode_record = msgspec.json.Decoder(_ChatRecord).decode


def decode(record: bytes) -> list[dict[str, str]]:
    """The messages of a line written by `encode`."""
    return _decode_record(record).messages


def batches(items: Iterable[Item], *, parallel: bool = False) -> Iterator[list[Item]]:
    max_lines, max_chars = (2 * BATCH_LINES, PARALLEL_BATCH_CHARS) if parallel else (BATCH_LINES, BATCH_CHARS)
    batch: list[Item] = []
    chars = 0
    for item in items:
        batch.append(item)
        chars += len(item) if isinstance(item, str) else 0
        if len(batch) >= max_lines or chars >= max_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def worker_count(file_bytes: int) -> int:
    if multiprocessing.parent_process() is not None:
        # A worker (or a script that `spawn` re-ran without an `if __name__ == "__main__"` guard) never
        # starts workers of its own.
        return 0
    configured = os.environ.get(WORKERS_ENV, "").strip()
    if configured:
        return max(int(configured), 0)
    if file_bytes < PARALLEL_MIN_BYTES:
        return 0
    return min(
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
        _MAX_WORKERS,
    )


class Runner:
    """Checks batches in order, in this process or in a pool of worker processes."""

    def __init__(self, cleaning: CleaningSpec) -> None:
        self.cleaning = cleaning
        self._local = BatchChecker(cleaning)
        self._pool: Pool | None = None
        self._workers = 0

    def run(self, batches: Iterable[list[Item]], *, workers: int) -> Iterator[BatchResult]:
        if workers <= 1:
            return map(self._local.check, batches)
        return self._parallel(batches, workers)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def _parallel(self, batches: Iterable[list[Item]], workers: int) -> Iterator[BatchResult]:
        if self._pool is None or self._workers != workers:
            self.close()
            context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(workers, initializer=_start_worker, initargs=(self.cleaning,))
            self._workers = workers
        pool = self._pool
        pending: deque[AsyncResult[BatchResult]] = deque()
        for batch in batches:
            pending.append(pool.apply_async(_check_in_worker, (batch,)))
            if len(pending) >= workers * _IN_FLIGHT_PER_WORKER:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


_worker_checker: BatchChecker | None = None


def _start_worker(cleaning: CleaningSpec) -> None:
    global _worker_checker
    _worker_checker = BatchChecker(cleaning)


def _check_in_worker(batch: list[Item]) -> BatchResult:
    assert _worker_checker is not None
    return _worker_checker.check(batch)
