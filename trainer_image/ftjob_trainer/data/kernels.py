"""The per-byte work of the checks, compiled (numba): for a batch of conversations at once, the exact key,
the MinHash signature, its LSH band keys, and the word counts the content checks need.

The definitions are the ones `dedup` states in plain Python (`exact_key`, `shingle_hashes`, `minhash`,
`Signer.band_keys`, `_densify`); the tests hold the two equal. The input is the batch's text as one UTF-8
buffer cut into segments, one or two per message (see `dedup.Signer.hash_batch`):

- a *raw* segment holds a message's content as written (ASCII only): the kernel lower-cases it, collapses
  its whitespace for the exact key (Python's `str.split` whitespace) and finds its words (`\\w+`) for the
  shingles;
- a *prepared* segment (non-ASCII content) holds text Python already normalised: `normalise(content)`
  for the exact key, or the content's `\\w+` words joined by spaces for the shingles.

Compiled once per installation and cached by numba (next to this file, or in `NUMBA_CACHE_DIR`): the
first use after an install takes about 7 s, later processes load it in about 0.6 s. The trainer image
compiles it at build time into `FTJOB_NUMBA_CACHE` (see `_use_prebuilt_cache`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PREBUILT_CACHE_ENV = "FTJOB_NUMBA_CACHE"


def _use_prebuilt_cache() -> None:
    """numba uses only a cache folder it can write to, and a job's root filesystem is read-only: the
    image's prebuilt cache (`FTJOB_NUMBA_CACHE`, compiled for `NUMBA_CPU_NAME=generic` so that any
    x86-64 CPU can load it) is copied to the temporary folder first (a few hundred KB). Where the folder
    is writable (the image build) it is used as it is. An explicit `NUMBA_CACHE_DIR` wins."""
    prebuilt = os.environ.get(PREBUILT_CACHE_ENV)
    if not prebuilt or "NUMBA_CACHE_DIR" in os.environ:
        return
    if os.access(prebuilt, os.W_OK) or not os.path.isdir(prebuilt):
        os.makedirs(prebuilt, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = prebuilt
        return
    target = Path(tempfile.gettempdir()) / "ftjob-numba-cache"
    shutil.copytree(prebuilt, target, dirs_exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = str(target)


_use_prebuilt_cache()

try:  # numba's own types are not annotated
    import numba
except ImportError as err:  # pragma: no cover - a dependency of the trainer extra
    raise ImportError("the data checks need numba (pip install 'ftjob[trainer]')") from err

EXACT: int = 1
"""Segment flag: part of the exact key."""
SHINGLE: int = 2
"""Segment flag: part of the near-duplicate signature."""
RAW: int = 4
"""Segment flag: ASCII content as written (otherwise text Python prepared)."""

_NUM_HASHES = 64
_BIN_SHIFT = np.uint64(58)
_VALUE_MASK = np.uint64(0xFFFFFFFF)
_EMPTY = np.uint64(1 << 32)
_LONG_WORD = 64
_LENGTH_FACTOR = np.uint64(0xD6E8FEB86659FD93)
_WORD_BASE = np.uint64(0x9E3779B97F4A7C15)
_BAND_BASE = np.uint64(0xC2B2AE3D27D4EB4F)
_EXACT_SEED = np.uint64(0x243F6A8885A308D3)
_BAND_KEY_SHIFT = np.uint64(4)

# Byte classes: 1 = whitespace as `str.split` sees it in ASCII, 2 = a word byte of `\w` (ASCII letters,
# digits, "_"; and every byte of a non-ASCII character, which only prepared segments hold).
_CLASS = np.zeros(256, dtype=np.uint8)
for _byte in b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f ":
    _CLASS[_byte] = 1
for _byte in b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_":
    _CLASS[_byte] = 2
_CLASS[0x80:] = 2
_LOWER = np.arange(256, dtype=np.uint8)
_LOWER[ord("A") : ord("Z") + 1] += 32


def _jit(function: Callable[..., Any]) -> Any:
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:  # pragma: no cover - no writable cache location: compile in every process
        return numba.njit(nogil=True)(function)


@_jit
def _mix64(value: Any) -> Any:
    value = value + np.uint64(0x9E3779B97F4A7C15)
    value = (value ^ (value >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    value = (value ^ (value >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return value ^ (value >> np.uint64(31))


@_jit
def _hash_batch(
    buf: Any,
    seg_start: Any,
    seg_end: Any,
    seg_line: Any,
    seg_flags: Any,
    seg_role: Any,
    lines: int,
    role_names: Any,
    role_offsets: Any,
    role_markers: Any,
    char_class: Any,
    lower: Any,
    probes: Any,
    bands: int,
    rows: int,
    near: bool,
) -> Any:
    exact = np.zeros(lines, dtype=np.uint64)
    mins = np.full((lines if near else 0, _NUM_HASHES), _EMPTY, dtype=np.uint64)
    band_keys = np.zeros((lines if near else 0, bands), dtype=np.uint64)
    redo = np.zeros(lines, dtype=np.bool_)
    seg_words = np.zeros(len(seg_start), dtype=np.int64)
    seg_stripped = np.zeros(len(seg_start), dtype=np.int64)
    word_base = np.uint64(0x9E3779B97F4A7C15)
    shift8 = np.uint64(8)
    segment = 0
    for line in range(lines):
        # Exact key state: a stream of bytes, eight at a time.
        h = np.uint64(0x243F6A8885A308D3)
        acc = np.uint64(0)
        filled = 0
        total = 0
        first_exact = True
        # Shingle state: the last three word hashes.
        w1 = np.uint64(0)
        w2 = np.uint64(0)
        words = 0
        while segment < len(seg_start) and seg_line[segment] == line:
            flags = seg_flags[segment]
            role = seg_role[segment]
            start = seg_start[segment]
            end = seg_end[segment]
            raw = (flags & 4) != 0
            if flags & 1:
                # role + "\x1f" + normalise(content), "\x1e" between messages.
                head_start = role_offsets[role]
                head_end = role_offsets[role + 1]
                count = head_end - head_start + 1 + (0 if first_exact else 1)
                for k in range(count):
                    if not first_exact and k == 0:
                        byte = np.uint64(0x1E)
                    elif k == count - 1:
                        byte = np.uint64(0x1F)
                    else:
                        byte = np.uint64(role_names[head_start + k - (0 if first_exact else 1)])
                    acc |= byte << (shift8 * np.uint64(filled))
                    filled += 1
                    total += 1
                    if filled == 8:
                        h = _mix64(h ^ acc)
                        acc = np.uint64(0)
                        filled = 0
                first_exact = False
                pending = False
                started = False
                count_words = 0
                first_char = -1
                last_char = -1
                for position in range(start, end):
                    byte_value = buf[position]
                    if raw and char_class[byte_value] == 1:
                        if started:
                            pending = True
                        continue
                    if not started:
                        first_char = position
                    last_char = position
                    if pending or not started:
                        count_words += 1
                    if pending:
                        acc |= np.uint64(32) << (shift8 * np.uint64(filled))
                        filled += 1
                        total += 1
                        if filled == 8:
                            h = _mix64(h ^ acc)
                            acc = np.uint64(0)
                            filled = 0
                        pending = False
                    started = True
                    acc |= np.uint64(lower[byte_value] if raw else byte_value) << (shift8 * np.uint64(filled))
                    filled += 1
                    total += 1
                    if filled == 8:
                        h = _mix64(h ^ acc)
                        acc = np.uint64(0)
                        filled = 0
                seg_words[segment] = count_words
                seg_stripped[segment] = 0 if first_char < 0 else last_char - first_char + 1
            if near and (flags & 2):
                # The role marker, then the words: runs of word bytes.
                marker = role_markers[role]
                position = start
                word = marker
                have_word = True
                while True:
                    if have_word:
                        if words >= 2:
                            value = (w1 * word_base + w2) * word_base + word + np.uint64(3)
                            shingle = _mix64(value)
                            slot = shingle >> _BIN_SHIFT
                            low = shingle & _VALUE_MASK
                            if low < mins[line, slot]:
                                mins[line, slot] = low
                        w1 = w2
                        w2 = word
                        words += 1
                        have_word = False
                    while position < end and char_class[buf[position]] != 2:
                        position += 1
                    if position >= end:
                        break
                    word_start = position
                    while position < end and char_class[buf[position]] == 2:
                        position += 1
                    length = position - word_start
                    if length > _LONG_WORD:
                        redo[line] = True
                    word = np.uint64(length) * _LENGTH_FACTOR
                    for chunk_start in range(word_start, position, 8):
                        chunk = np.uint64(0)
                        chunk_end = min(chunk_start + 8, position)
                        for k in range(chunk_start, chunk_end):
                            chunk |= np.uint64(lower[buf[k]]) << (shift8 * np.uint64(k - chunk_start))
                        word = _mix64(word ^ chunk)
                    have_word = True
            segment += 1
        if filled > 0:
            h = _mix64(h ^ acc)
        exact[line] = _mix64(h ^ (np.uint64(total) * _LENGTH_FACTOR))
        if not near:
            continue
        if words < 3:
            # One shingle of all the words there are.
            if words == 0:
                redo[line] = True
                continue
            value = w2 if words == 1 else w1 * word_base + w2
            shingle = _mix64(value + np.uint64(words))
            slot = shingle >> _BIN_SHIFT
            low = shingle & _VALUE_MASK
            if low < mins[line, slot]:
                mins[line, slot] = low
        # Densify: an empty bin takes the value of the first filled bin along its probe sequence.
        empty = 0
        for slot in range(_NUM_HASHES):
            if mins[line, slot] == _EMPTY:
                empty += 1
        if empty:
            original = mins[line].copy()
            for slot in range(_NUM_HASHES):
                if original[slot] != _EMPTY:
                    continue
                donor = -1
                for probe in range(probes.shape[1]):
                    if original[probes[slot, probe]] != _EMPTY:
                        donor = probes[slot, probe]
                        break
                if donor < 0:
                    for probe in range(_NUM_HASHES):
                        if original[probe] != _EMPTY:
                            donor = probe
                            break
                mins[line, slot] = original[donor]
        for band in range(bands):
            value = np.uint64(0)
            for row in range(rows):
                value = value * _BAND_BASE + mins[line, band * rows + row]
            band_keys[line, band] = _mix64(value) >> _BAND_KEY_SHIFT
    return exact, mins, band_keys, redo, seg_words, seg_stripped


# --- Key tables: open addressing, linear probing, 64-bit keys and 32-bit values -------------------------

TABLE_EMPTY = np.uint32(0xFFFFFFFF)
"""The value of an empty slot (so no value may be 2**32 - 1)."""


@_jit
def _table_lookup(keys: Any, values: Any, queries: Any, out: Any) -> None:
    mask = np.uint64(len(keys) - 1)
    for index in range(len(queries)):
        query = queries[index]
        slot = np.int64(query & mask)
        while True:
            value = values[slot]
            if value == np.uint32(0xFFFFFFFF):
                out[index] = -1
                break
            if keys[slot] == query:
                out[index] = np.int64(value)
                break
            slot = np.int64((np.uint64(slot) + np.uint64(1)) & mask)


@_jit
def _table_setdefault(keys: Any, values: Any, new_keys: Any, new_values: Any, out: Any) -> int:
    mask = np.uint64(len(keys) - 1)
    inserted = 0
    for index in range(len(new_keys)):
        key = new_keys[index]
        slot = np.int64(key & mask)
        while True:
            value = values[slot]
            if value == np.uint32(0xFFFFFFFF):
                keys[slot] = key
                values[slot] = new_values[index]
                out[index] = -1
                inserted += 1
                break
            if keys[slot] == key:
                out[index] = np.int64(value)
                break
            slot = np.int64((np.uint64(slot) + np.uint64(1)) & mask)
    return inserted


def table_lookup(keys: Any, values: Any, queries: Any) -> Any:
    """Per query: its value, or -1."""
    out = np.empty(len(queries), dtype=np.int64)
    _table_lookup(keys, values, queries, out)
    return out


def table_setdefault(keys: Any, values: Any, new_keys: Any, new_values: Any) -> tuple[Any, int]:
    """Insert each absent key with its value, in order (the table must have room). Returns, per key,
    the value it already had (-1 where it was inserted), and how many were inserted."""
    out = np.empty(len(new_keys), dtype=np.int64)
    inserted = _table_setdefault(keys, values, new_keys, new_values, out)
    return out, int(inserted)


ROLE_CODES: dict[str, int] = {"system": 0, "user": 1, "assistant": 2}
_ROLE_NAMES = np.frombuffer(b"systemuserassistant", dtype=np.uint8)
_ROLE_OFFSETS = np.array([0, 6, 10, 19], dtype=np.int64)


def hash_batch(
    buf: bytes,
    segments: tuple[Any, Any, Any, Any, Any],
    lines: int,
    *,
    role_markers: Any,
    probes: Any,
    bands: int,
    rows: int,
    near: bool,
) -> tuple[Any, Any, Any, Any, Any, Any]:
    """(exact keys, signatures as uint64 rows, band keys, lines to redo in Python, words per segment,
    stripped characters per segment). `segments`: start, end, line, flags, role code per segment."""
    start, end, line, flags, role = segments
    return _hash_batch(  # type: ignore[no-any-return]
        np.frombuffer(buf, dtype=np.uint8),
        start,
        end,
        line,
        flags,
        role,
        lines,
        _ROLE_NAMES,
        _ROLE_OFFSETS,
        role_markers,
        _CLASS,
        _LOWER,
        probes,
        bands,
        rows,
        near,
    )


def warm_up() -> None:
    """Compile (or load) the kernels now: the trainer image calls this at build time."""
    keys, values = np.zeros(4, dtype=np.uint64), np.full(4, TABLE_EMPTY, dtype=np.uint32)
    table_setdefault(keys, values, np.ones(1, dtype=np.uint64), np.zeros(1, dtype=np.uint32))
    table_lookup(keys, values, np.ones(1, dtype=np.uint64))
    empty = np.zeros(0, dtype=np.int64)
    hash_batch(
        b"",
        (empty, empty, empty, np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.uint8)),
        0,
        role_markers=np.zeros(3, dtype=np.uint64),
        probes=np.zeros((_NUM_HASHES, 1024), dtype=np.uint8),
        bands=7,
        rows=9,
        near=True,
    )
