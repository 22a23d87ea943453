"""The per-byte and per-line work of the checks, compiled (numba): where a block's messages are in its raw
lines and the lines as they will be written (`scan_block`); for a batch of conversations at once, the
exact key, the MinHash signature, its LSH band keys, and the word counts the content checks need
(`hash_batch`); a block's deduplication verdicts against the index, in file order (`block_verdicts`);
and the held-out split's selection (`select`).

The definitions are the ones `dedup` states in plain Python (`exact_key`, `shingle_hashes`, `minhash`,
`Signer.band_keys`, `_densify`); the tests hold the two equal. The input is the batch's text as one UTF-8
buffer cut into segments, one or two per message (see `dedup.Signer.hash_batch`):

- a *raw* segment holds a message's content as written (ASCII only): the kernel lower-cases it, collapses
  its whitespace for the exact key (Python's `str.split` whitespace) and finds its words (`\\w+`) for the
  shingles;
- a *prepared* segment (non-ASCII content) holds text Python already normalised: `normalise(content)`
  for the exact key, or the content's `\\w+` words joined by spaces for the shingles.

Compiled once per installation and cached by numba (next to this file, or in `NUMBA_CACHE_DIR`): the
first use after an install takes about 15 s for all, later processes load them in about 0.7 s. The
trainer image compiles them at build time into `FTJOB_NUMBA_CACHE` (`warm_up`, `_use_prebuilt_cache`).
"""

from __future__ import annotations

import contextlib
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
                count_words = 0
                first_char = -1
                last_char = -1
                if not raw:
                    # Prepared text: already normalised, every byte as it is.
                    for position in range(start, end):
                        acc |= np.uint64(buf[position]) << (shift8 * np.uint64(filled))
                        filled += 1
                        if filled == 8:
                            h = _mix64(h ^ acc)
                            acc = np.uint64(0)
                            filled = 0
                    total += end - start
                else:
                    # Whitespace runs collapse to one space between words, and none at either end.
                    shift = shift8 * np.uint64(filled)
                    emitted = 0
                    pending = False
                    for position in range(start, end):
                        byte_value = buf[position]
                        if char_class[byte_value] == 1:
                            pending = count_words > 0
                            continue
                        if count_words == 0:
                            first_char = position
                            count_words = 1
                        elif pending:
                            count_words += 1
                            acc |= np.uint64(32) << shift
                            shift += shift8
                            emitted += 1
                            if shift == np.uint64(64):
                                h = _mix64(h ^ acc)
                                acc = np.uint64(0)
                                shift = np.uint64(0)
                        pending = False
                        last_char = position
                        acc |= np.uint64(lower[byte_value]) << shift
                        shift += shift8
                        emitted += 1
                        if shift == np.uint64(64):
                            h = _mix64(h ^ acc)
                            acc = np.uint64(0)
                            shift = np.uint64(0)
                    filled = np.int64(shift >> np.uint64(3))  # type: ignore[assignment]
                    total += emitted
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
                    # The first eight bytes are gathered on the way: most words have no more.
                    first_chunk = np.uint64(0)
                    shift = np.uint64(0)
                    while position < end and char_class[buf[position]] == 2:
                        if shift < np.uint64(64):
                            first_chunk |= np.uint64(lower[buf[position]]) << shift
                            shift += shift8
                        position += 1
                    length = position - word_start
                    if length > _LONG_WORD:
                        redo[line] = True
                    word = _mix64((np.uint64(length) * _LENGTH_FACTOR) ^ first_chunk)
                    for chunk_start in range(word_start + 8, position, 8):
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


# --- Where a block's messages are (the raw JSON lines, after msgspec accepted them) -------------------

_QUOTE = 34
_BACKSLASH = 92
_KEY_OTHER = 0
_KEY_MESSAGES = 1
_KEY_ROLE = 2
_KEY_CONTENT = 3
_NAMES = np.frombuffer(b"messagesrolecontentsystemuserassistant", dtype=np.uint8)
# Offsets in `_NAMES`: messages, role, content, then the roles in `ROLE_CODES` order.
_NAME_AT = np.array([0, 8, 12, 19, 25, 29, 38], dtype=np.int64)
_RECORD_HEAD = np.frombuffer(b'{"messages":[', dtype=np.uint8)
_RECORD_TAIL = np.frombuffer(b"]}\n", dtype=np.uint8)
_MESSAGE_HEAD = np.frombuffer(b'{"role":"', dtype=np.uint8)
_MESSAGE_MIDDLE = np.frombuffer(b'","content":"', dtype=np.uint8)
_MESSAGE_TAIL = np.frombuffer(b'"}', dtype=np.uint8)
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_SHORT_ESCAPES = np.zeros(32, dtype=np.uint8)
for _byte, _escape in zip(b"\x08\t\n\x0c\r", b"btnfr", strict=True):
    _SHORT_ESCAPES[_byte] = _escape
_ESCAPED = np.zeros(256, dtype=np.uint8)
for _escape, _byte in zip(b'"\\/bfnrt', b'"\\/\x08\x0c\n\r\t', strict=True):
    _ESCAPED[_escape] = _byte


@_jit
def _is_name(data: Any, start: int, end: int, names: Any, at: Any, which: int) -> bool:
    length = at[which + 1] - at[which]
    if end - start != length:
        return False
    for k in range(length):  # noqa: SIM110 - a loop numba compiles, not a generator
        if data[start + k] != names[at[which] + k]:
            return False
    return True


@_jit
def _hex(data: Any, position: int) -> int:
    value = 0
    for k in range(4):
        byte = np.int64(data[position + k])
        if 48 <= byte <= 57:
            digit = byte - 48
        elif 97 <= byte <= 102:
            digit = byte - 87
        elif 65 <= byte <= 70:
            digit = byte - 55
        else:
            return -1
        value = value * 16 + digit  # type: ignore[assignment]
    return value


@_jit
def _put(out: Any, at: int, text: Any) -> int:
    for k in range(len(text)):
        out[at + k] = text[k]
    return at + len(text)


@_jit
def _put_string(out: Any, at: int, text: Any, start: int, stop: int) -> int:
    """`text[start:stop]` (ASCII) as msgspec writes it inside a JSON string."""
    for k in range(start, stop):
        byte = text[k]
        if byte == _QUOTE or byte == _BACKSLASH:  # noqa: SIM109 - plain comparisons for numba
            out[at] = _BACKSLASH
            out[at + 1] = byte
            at += 2
        elif byte < 32:
            short = _SHORT_ESCAPES[byte]
            out[at] = _BACKSLASH
            if short:
                out[at + 1] = short
                at += 2
            else:
                out[at + 1] = 117  # \u00XX, lower-case hex
                out[at + 2] = 48
                out[at + 3] = 48
                out[at + 4] = _HEX_DIGITS[byte >> 4]
                out[at + 5] = _HEX_DIGITS[byte & 15]
                at += 6
        else:
            out[at] = byte
            at += 1
    return at


@_jit
def _scan_block(data: Any, line_starts: Any, line_ends: Any, names: Any, at: Any, escaped: Any) -> Any:
    """The messages of JSON lines of the shape `{"messages": [{"role": ..., "content": ...}, ...]}`
    (which msgspec has checked): per message, its line, role code, and where its content is in `data`
    followed by `scratch`, the text of escaped contents; and whether the content is ASCII (otherwise its
    place is not given). `ok` is False when a line is not as simple: a key or a role spelt with escapes,
    a key given twice.

    Also each line as `batch.encode` writes it (msgspec: `{"messages":[{"role":..,"content":..},..]}`
    and a newline, no spaces, strings escaped as msgspec escapes them): a content without escapes is
    copied as it is (msgspec would write it so: it holds no quote, backslash or control character), an
    ASCII one with escapes is written again from its text; a line with a non-ASCII content spelt with
    escapes is not written (`written` False; the caller encodes it)."""
    lines = len(line_starts)
    records = np.empty(2 * len(data) + 64, dtype=np.uint8)
    record_ends = np.zeros(lines, dtype=np.int64)
    written = np.ones(lines, dtype=np.bool_)
    out = 0
    capacity = len(data) // 16 + 1
    message_line = np.empty(capacity, dtype=np.int64)
    message_role = np.empty(capacity, dtype=np.uint8)
    message_start = np.empty(capacity, dtype=np.int64)
    message_end = np.empty(capacity, dtype=np.int64)
    message_ascii = np.empty(capacity, dtype=np.bool_)
    counts = np.zeros(lines, dtype=np.int64)
    scratch = np.empty(len(data), dtype=np.uint8)
    used = 0
    ok = True
    count = 0
    base = len(data)
    for line in range(lines):
        position = line_starts[line]
        end = line_ends[line]
        depth = 0
        expect_key = False
        key = _KEY_OTHER
        seen_messages = 0
        role = -1
        content_start = -1
        content_end = -1
        content_ascii = False
        content_escaped = False
        first = count
        line_start = out
        out = _put(records, out, _RECORD_HEAD)
        while position < end:
            byte = data[position]
            if byte == _QUOTE:
                start = position + 1
                position = start
                has_escape = False
                ascii = True
                while data[position] != _QUOTE:
                    if data[position] == _BACKSLASH:
                        has_escape = True
                        position += 2
                        continue
                    if data[position] >= 128:
                        ascii = False
                    position += 1
                stop = position
                position += 1
                if expect_key:
                    expect_key = False
                    key = _KEY_OTHER
                    if not has_escape:
                        if depth == 1 and _is_name(data, start, stop, names, at, 0):
                            key = _KEY_MESSAGES
                            seen_messages += 1
                        elif depth == 3 and _is_name(data, start, stop, names, at, 1):
                            key = _KEY_ROLE
                        elif depth == 3 and _is_name(data, start, stop, names, at, 2):
                            key = _KEY_CONTENT
                    if key == _KEY_OTHER:
                        ok = False
                elif depth == 3 and key == _KEY_ROLE:
                    if role >= 0 or has_escape:
                        ok = False
                    for code in range(3):
                        if _is_name(data, start, stop, names, at, 3 + code):
                            role = code
                    if role < 0:
                        ok = False
                elif depth == 3 and key == _KEY_CONTENT:
                    if content_start >= 0 or content_end >= 0:
                        ok = False
                    content_ascii = ascii
                    content_escaped = has_escape
                    content_start, content_end = start, stop
                    if has_escape and ascii:
                        # The text of the string: the escapes resolved, while it stays ASCII.
                        mark = used
                        k = start
                        while k < stop:
                            byte = data[k]
                            if byte != _BACKSLASH:
                                scratch[used] = byte
                                used += 1
                                k += 1
                                continue
                            kind = data[k + 1]
                            if kind == 117:  # \uXXXX
                                value = _hex(data, k + 2)
                                if value < 0 or value >= 128:
                                    content_ascii = False
                                    break
                                scratch[used] = np.uint8(value)
                                k += 6
                            else:
                                if escaped[kind] == 0:
                                    ok = False
                                scratch[used] = escaped[kind]
                                k += 2
                            used += 1
                        if content_ascii:
                            content_start, content_end = base + mark, base + used
                        else:
                            used = mark
                else:
                    ok = False
                continue
            if byte == 123:  # {
                depth += 1
                expect_key = True
                if depth == 3:
                    role = -1
                    content_start = -1
                    content_end = -1
            elif byte == 125:  # }
                if depth == 3:
                    if role < 0 or content_start < 0:
                        ok = False
                    elif count < capacity:
                        if content_escaped and not content_ascii:
                            written[line] = False
                        elif written[line]:
                            if count > first:
                                records[out] = 44  # ,
                                out += 1
                            out = _put(records, out, _MESSAGE_HEAD)
                            out = _put(records, out, names[at[3 + role] : at[4 + role]])
                            out = _put(records, out, _MESSAGE_MIDDLE)
                            if content_start >= base:
                                out = _put_string(
                                    records, out, scratch, content_start - base, content_end - base
                                )
                            else:
                                out = _put(records, out, data[content_start:content_end])
                            out = _put(records, out, _MESSAGE_TAIL)
                        message_line[count] = line
                        message_role[count] = role
                        message_start[count] = content_start
                        message_end[count] = content_end
                        message_ascii[count] = content_ascii
                        count += 1
                    else:
                        ok = False
                depth -= 1
            elif byte == 91:  # [
                depth += 1
            elif byte == 93:  # ]
                depth -= 1
            elif byte == 44:  # ,
                expect_key = depth == 1 or depth == 3
            position += 1
        if seen_messages != 1:
            ok = False
        counts[line] = count - first
        out = _put(records, out, _RECORD_TAIL) if written[line] else line_start
        record_ends[line] = out
    return (
        ok,
        counts,
        message_line[:count].copy(),
        message_role[:count].copy(),
        message_start[:count].copy(),
        message_end[:count].copy(),
        message_ascii[:count].copy(),
        scratch[:used].copy(),
        records[:out].copy(),
        record_ends,
        written,
    )


def scan_block(data: Any, line_starts: Any, line_ends: Any) -> tuple[Any, ...]:
    """(ok, messages per line, then per message: line, role code, content start, content end, ASCII;
    the scratch bytes that follow `data` in the contents' coordinates; the lines as written, where
    each ends, whether it was written). See `_scan_block`."""
    return _scan_block(data, line_starts, line_ends, _NAMES, _NAME_AT, _ESCAPED)  # type: ignore[no-any-return]


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


@_jit
def _slot_of(keys: Any, values: Any, key: Any) -> Any:
    """The slot holding `key`, or the empty slot where it would go."""
    mask = np.uint64(len(keys) - 1)
    slot = np.int64(key & mask)
    while values[slot] != np.uint32(0xFFFFFFFF) and keys[slot] != key:
        slot = np.int64((np.uint64(slot) + np.uint64(1)) & mask)
    return slot


@_jit
def _get(keys: Any, values: Any, key: Any) -> Any:
    value = values[_slot_of(keys, values, key)]
    return np.int64(-1) if value == np.uint32(0xFFFFFFFF) else np.int64(value)


# --- The verdicts of a block, in file order (`DedupIndex.find_exact`, `find_near` and `add`) ------------

KEPT = 0
DUPLICATE = 1
NEAR_DUPLICATE = 2
CONTENT = 3
OVERLAP_EXACT = 4
OVERLAP_NEAR = 5
_MAX_BUCKET = 64
# The counters of an index, in `counts`: exact keys, bucket keys, "more" keys, chain entries, signatures.
_EXACT_COUNT, _BUCKET_COUNT, _MORE_COUNT, _CHAIN_COUNT, _ROWS = 0, 1, 2, 3, 4


@_jit
def _nearest(index: Any, signature: Any, band_keys: Any, band_bits: Any, threshold: float) -> Any:
    """(line, equal values) of the most similar example of `index` at or above the threshold, the
    earliest line among equals; (-1, 0) when none."""
    bucket_keys, bucket_values, more_keys, more_values = index[2], index[3], index[4], index[5]
    chain_rows, chain_next, rows, row_lines = index[6], index[7], index[8], index[9]
    best_line = np.int64(-1)
    best_equal = np.int64(-1)
    for band in range(len(band_keys)):
        key = band_keys[band] | band_bits[band]
        first = _get(bucket_keys, bucket_values, key)
        if first < 0:
            continue
        entry = np.int64(-2)  # the bucket's first member, then its chain
        while True:
            row = first if entry == -2 else np.int64(chain_rows[entry])
            equal = np.int64(0)
            for k in range(signature.shape[0]):
                if rows[row, k] == signature[k]:
                    equal += 1
            line = np.int64(row_lines[row])
            if equal / 64.0 >= threshold and (
                best_line < 0 or equal > best_equal or (equal == best_equal and line < best_line)
            ):
                best_line = line
                best_equal = equal
            entry = _get(more_keys, more_values, key) if entry == -2 else np.int64(chain_next[entry])
            if entry < 0:
                break
    return best_line, best_equal


@_jit
def _insert(
    index: Any, counts: Any, exact: Any, line: Any, signature: Any, band_keys: Any, band_bits: Any, near: bool
) -> None:
    exact_keys, exact_values = index[0], index[1]
    slot = _slot_of(exact_keys, exact_values, exact)
    if exact_values[slot] == np.uint32(0xFFFFFFFF):
        exact_keys[slot] = exact
        exact_values[slot] = np.uint32(line)
        counts[_EXACT_COUNT] += 1
    if not near:
        return
    bucket_keys, bucket_values, more_keys, more_values = index[2], index[3], index[4], index[5]
    chain_rows, chain_next, rows, row_lines = index[6], index[7], index[8], index[9]
    row = counts[_ROWS]
    counts[_ROWS] += 1
    row_lines[row] = np.uint32(line)
    for k in range(signature.shape[0]):
        rows[row, k] = signature[k]
    for band in range(len(band_keys)):
        key = band_keys[band] | band_bits[band]
        slot = _slot_of(bucket_keys, bucket_values, key)
        if bucket_values[slot] == np.uint32(0xFFFFFFFF):
            bucket_keys[slot] = key
            bucket_values[slot] = np.uint32(row)
            counts[_BUCKET_COUNT] += 1
            continue
        # Later members of a bucket: a chain per bucket, at most `_MAX_BUCKET` members in all.
        more = _slot_of(more_keys, more_values, key)
        members = 1
        if more_values[more] != np.uint32(0xFFFFFFFF):
            entry = np.int64(more_values[more])
            while entry >= 0:
                members += 1
                entry = np.int64(chain_next[entry])
        if members >= _MAX_BUCKET:
            continue
        entry = counts[_CHAIN_COUNT]
        counts[_CHAIN_COUNT] += 1
        chain_rows[entry] = np.uint32(row)
        if more_values[more] == np.uint32(0xFFFFFFFF):
            chain_next[entry] = -1
            more_keys[more] = key
            counts[_MORE_COUNT] += 1
        else:
            chain_next[entry] = np.int64(more_values[more])
        more_values[more] = np.uint32(entry)


@_jit
def _block_verdicts(
    exact: Any,
    signatures: Any,
    band_keys: Any,
    content: Any,
    lines: Any,
    own: Any,
    own_counts: Any,
    reference: Any,
    band_bits: Any,
    threshold: float,
    check_exact: bool,
    near: bool,
    has_reference: bool,
    codes: Any,
    matched: Any,
    equal: Any,
) -> None:
    for i in range(len(exact)):
        code = KEPT
        line = np.int64(-1)
        same = np.int64(64)
        if check_exact:
            line = _get(own[0], own[1], exact[i])
            if line >= 0:
                code = DUPLICATE
        if code == KEPT and near:
            line, same = _nearest(own, signatures[i], band_keys[i], band_bits, threshold)
            if line >= 0:
                code = NEAR_DUPLICATE
        if code == KEPT and content[i]:
            code = CONTENT
        if code == KEPT and has_reference:
            line = _get(reference[0], reference[1], exact[i])
            same = np.int64(64)
            if line >= 0:
                code = OVERLAP_EXACT
            elif near:
                line, same = _nearest(reference, signatures[i], band_keys[i], band_bits, threshold)
                if line >= 0:
                    code = OVERLAP_NEAR
        codes[i] = code
        matched[i] = line if code != KEPT and code != CONTENT else -1
        equal[i] = same if code == NEAR_DUPLICATE or code == OVERLAP_NEAR else 64  # noqa: SIM109 - numba
        if code == KEPT:
            _insert(own, own_counts, exact[i], lines[i], signatures[i], band_keys[i], band_bits, near)


def block_verdicts(
    exact: Any,
    signatures: Any,
    band_keys: Any,
    content: Any,
    lines: Any,
    own: tuple[Any, ...],
    own_counts: Any,
    reference: tuple[Any, ...] | None,
    *,
    band_bits: Any,
    threshold: float,
    check_exact: bool,
    near: bool,
) -> tuple[Any, Any, Any]:
    """Per line, in order: its verdict code (`KEPT`, `DUPLICATE`, ...), the line it matched and the
    number of equal signature values (64 for exact matches); kept lines join `own` (the index's arrays,
    with room for all of them) as they are kept. `signatures` and `band_keys` have no columns when
    near-duplicates are not looked for."""
    count = len(exact)
    codes = np.empty(count, dtype=np.int8)
    matched = np.empty(count, dtype=np.int64)
    equal = np.empty(count, dtype=np.int64)
    _block_verdicts(
        exact,
        signatures,
        band_keys,
        content,
        lines,
        own,
        own_counts,
        reference if reference is not None else own,
        band_bits,
        threshold,
        check_exact,
        near,
        reference is not None,
        codes,
        matched,
        equal,
    )
    return codes, matched, equal


@_jit
def _select(draws: Any, state: Any, out: Any) -> None:
    remaining = state[0]
    needed = state[1]
    for index in range(len(draws)):
        chosen = draws[index] * remaining < needed
        out[index] = chosen
        if chosen:
            needed -= 1
        remaining -= 1
    state[0] = remaining
    state[1] = needed


def select(draws: Any, state: Any, out: Any) -> None:
    """Selection sampling (`split.validation_flags`) for the next `len(draws)` examples: `state` holds
    the examples remaining and the number still to pick, and is updated; `out` gets the flags."""
    _select(draws, state, out)


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


ENTRY_POINTS: tuple[str, ...] = (
    "_hash_batch",
    "_scan_block",
    "_block_verdicts",
    "_select",
    "_table_lookup",
    "_table_setdefault",
)
"""The compiled functions called from Python (the others are compiled into them)."""


def warm_up() -> None:
    """Compile (or load) the kernels now, with the argument types the gate gives them: the trainer image
    calls this at build time. Runs the gate itself on a few lines (split, validation file, with and
    without near-duplicates)."""
    import json
    from pathlib import Path

    from ftjob.api.data import CleaningSpec, DataSpec

    from .prepare import DataRejected, prepare_data

    keys, values = np.zeros(4, dtype=np.uint64), np.full(4, TABLE_EMPTY, dtype=np.uint32)
    table_setdefault(keys, values, np.ones(1, dtype=np.uint64), np.zeros(1, dtype=np.uint32))
    table_lookup(keys, values, np.ones(1, dtype=np.uint64))
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "warm-up.jsonl"
        lines = [
            {
                "messages": [
                    {"role": "user", "content": f"question {i}"},
                    {"role": "assistant", "content": f"a {i}"},
                ]
            }
            for i in range(4)
        ]
        path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        for near in (True, False):
            spec = DataSpec(
                train_uri=f"file://{path}", min_examples=1, cleaning=CleaningSpec(drop_near_duplicates=near)
            )
            for validation in (None, path):
                out = Path(scratch) / f"out-{near}-{validation is None}"
                with contextlib.suppress(DataRejected):  # the validation file is all overlap
                    prepare_data(path, validation, spec, seed=0, max_seq_length=16, out_dir=out)
