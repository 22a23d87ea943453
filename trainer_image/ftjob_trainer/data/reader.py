"""Streaming JSONL reading: one line (or one block of whole lines) in memory at a time, the file's sha256
computed on the way."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ftjob.api.data import MAX_LINE_BYTES_CEILING

MAX_LINE_BYTES = MAX_LINE_BYTES_CEILING
"""A longer line is reported instead of read: a file without newlines must not be able to make the
trainer load it whole. The spec's `cleaning.maxLineBytes` usually sets a lower limit."""

BOM = b"\xef\xbb\xbf"
EXCERPT_BYTES = 1024
"""Of a line too long to read, this much is kept for the report."""
_BOM = BOM
_EXCERPT_BYTES = EXCERPT_BYTES


@dataclass(frozen=True, slots=True)
class Line:
    """One non-blank line. When `problem` is set the line is unusable and `text` is only good for an
    excerpt (undecodable bytes replaced, an over-long line cut)."""

    number: int
    """1-based line number in the file, as an editor shows it."""
    text: str
    problem: str | None = None
    too_long: bool = False
    """The line exceeded the reader's limit (then `problem` says so, and `text` is its start)."""


@dataclass(frozen=True, slots=True)
class Block:
    """Whole lines of a file: `data`, which starts `offset` bytes into it with line `first_number`."""

    path: str
    offset: int
    length: int
    first_number: int
    data: bytes


def read_range(path: str, offset: int, length: int) -> bytes:
    """Bytes of a file (the report's excerpts of lines dropped after their block was let go)."""
    with open(path, "rb") as stream:
        stream.seek(offset)
        return stream.read(length)


def decode_line(raw: bytes) -> str:
    """A line's text as the reader gives it (for the report's excerpts)."""
    return raw.rstrip(b"\r\n").decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class TooLong:
    """A line longer than the reader's limit, found by `JsonlReader.blocks`."""

    offset: int
    number: int
    text: str
    """The start of the line (`EXCERPT_BYTES`, undecodable bytes replaced)."""


class JsonlReader:
    """Iterate once over the non-blank lines of a file; afterwards the counters and the digest describe
    the whole file (blank lines and over-long lines included)."""

    def __init__(self, path: Path, *, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.path = path
        self.max_line_bytes = max_line_bytes
        self.size_bytes = 0
        self.lines = 0
        """Non-blank lines yielded."""
        self.blank_lines = 0
        self._digest = hashlib.sha256()
        self._done = False

    @property
    def sha256(self) -> str:
        if not self._done:
            raise RuntimeError(f"{self.path}: the digest is known only after the whole file was read")
        return self._digest.hexdigest()

    def __iter__(self) -> Iterator[Line]:
        if self._done:
            raise RuntimeError(f"{self.path}: a JsonlReader reads its file once")
        with self.path.open("rb") as stream:
            for number, (raw, complete) in enumerate(self._physical_lines(stream), start=1):
                if number == 1 and raw.startswith(_BOM):
                    # Editors on Windows write a byte order mark; json.loads would refuse the first line.
                    raw = raw[len(_BOM) :]
                line = self._decode(number, raw, complete)
                if line is None:
                    self.blank_lines += 1
                    continue
                self.lines += 1
                yield line
        self._done = True

    def blocks(self, size: int) -> Iterator[Block | TooLong]:
        """The file as blocks of whole lines of about `size` bytes, in order; a line longer than
        `max_line_bytes` that no block can hold comes as `TooLong` (its start only) between them. The
        counters `lines` and `blank_lines` are the caller's to fill in (`count`); the size and the digest
        are known at the end."""
        if self._done:
            raise RuntimeError(f"{self.path}: a JsonlReader reads its file once")
        limit = self.max_line_bytes
        number = 1
        offset = 0
        path = str(self.path)
        with self.path.open("rb", buffering=0) as stream:
            carry = b""
            while True:
                data = stream.read(size)
                self._digest.update(data)
                self.size_bytes += len(data)
                if not data:
                    if carry:
                        yield Block(path, offset, len(carry), number, carry)
                    break
                buffer = carry + data if carry else data
                cut = buffer.rfind(b"\n") + 1
                if cut:
                    yield Block(path, offset, cut, number, buffer[:cut])
                    number += buffer.count(b"\n", 0, cut)
                    offset += cut
                    carry = buffer[cut:]
                else:
                    carry = buffer
                if len(carry) > limit:
                    # A line longer than the limit: its start for the report, the rest skipped.
                    head = carry[:limit]
                    if number == 1 and head.startswith(BOM):
                        head = head[len(BOM) :]
                    yield TooLong(offset, number, head[:EXCERPT_BYTES].decode("utf-8", "replace"))
                    offset += len(carry)
                    while (end := carry.find(b"\n")) < 0:
                        carry = stream.read(size)
                        self._digest.update(carry)
                        self.size_bytes += len(carry)
                        if not carry:
                            break
                        offset += len(carry)
                    number += 1
                    if end >= 0:
                        offset -= len(carry) - end - 1
                        carry = carry[end + 1 :]
        self._done = True

    def count(self, lines: int, blank: int) -> None:
        """Lines of a block, as the caller of `blocks` found them."""
        self.lines += lines
        self.blank_lines += blank

    def _physical_lines(self, stream: BinaryIO) -> Iterator[tuple[bytes, bool]]:
        """Yield (line without its newline, whether it was read whole)."""
        limit = self.max_line_bytes
        while chunk := self._read(stream, limit + 1):
            if chunk.endswith(b"\n") or len(chunk) <= limit:
                yield chunk.rstrip(b"\r\n"), True
                continue
            head = chunk[:limit]
            while chunk and not chunk.endswith(b"\n"):
                chunk = self._read(stream, limit)
            yield head, False

    def _read(self, stream: BinaryIO, limit: int) -> bytes:
        chunk = stream.readline(limit)
        self._digest.update(chunk)
        self.size_bytes += len(chunk)
        return chunk

    def _decode(self, number: int, raw: bytes, complete: bool) -> Line | None:
        if not complete:
            excerpt = raw[:_EXCERPT_BYTES].decode("utf-8", "replace")
            return Line(number, excerpt, f"line is longer than {self.max_line_bytes} bytes", too_long=True)
        if not raw.strip():
            return None
        try:
            return Line(number, raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            return Line(number, raw.decode("utf-8", "replace"), f"not valid UTF-8 (byte {err.start + 1})")
