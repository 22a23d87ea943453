"""Streaming JSONL reading: one line in memory at a time, the file's sha256 computed on the way."""

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

_BOM = b"\xef\xbb\xbf"
_EXCERPT_BYTES = 1024


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
