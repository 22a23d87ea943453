"""Exact and near-duplicate detection in bounded memory per example, deterministic across processes.

Exact duplicates: an 8-byte hash of the conversation after case-folding and collapsing whitespace
(`exact_key`: the UTF-8 bytes eight at a time through splitmix64's finaliser, then the length).

Near duplicates: MinHash over word 3-shingles of the user and assistant turns, estimated Jaccard
similarity, and LSH banding to find candidates without comparing every pair.

- Three-word shingles: a one-word edit in a 60-word example still scores about 0.9, while two short
  questions differing in their only informative word ("capital of France" / "of Spain") score far
  below it, as they should. With 64 values the estimate is within about 0.04 (one standard
  deviation) of the true similarity near 0.9, so pairs right at the threshold may go either way.
- The system message is left out of the near-duplicate signature: datasets usually share one long
  system prompt, which would make every pair of examples look alike.
- One-permutation hashing with optimal densification (Shrivastava, ICML 2017) gives 64 MinHash values
  from one hash per shingle.
- Hashes are arithmetic on 64-bit words (each word's UTF-8 bytes eight at a time, then a polynomial of
  three word hashes per shingle, splitmix64's finaliser after each step), so that a compiled kernel
  (`kernels`, numba) computes exact keys, signatures and band keys for a whole batch of examples in one
  call (`Signer.hash_batch`); `exact_key`, `shingle_hashes` and `minhash` are the same definitions in
  plain Python, one example at a time, and the tests hold the two equal.
- The index keeps its keys in open-addressing tables of two numpy arrays (`KeyTable`), not in dicts
  of Python ints: a third of the memory, and a block's lookups and inserts in one call.
- Bands are chosen so that any two signatures whose estimated similarity reaches the threshold share
  at least one whole band (pigeonhole), so the index misses no pair the threshold asks for (down to
  a threshold of about 0.77, below which the number of bands is capped to bound memory).
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt

from . import kernels
from .checks import Conversation

SHINGLE_WORDS: Final = 3
NUM_HASHES: Final = 64
MAX_BANDS: Final = 16
MAX_BUCKET: Final = 64
"""Examples remembered per LSH bucket. Pairs found through a bucket are still verified, so a huge
bucket (many examples sharing a whole band yet pairwise dissimilar) would only cost quadratic time."""

Signature: TypeAlias = "array[int]"
"""array("I") of NUM_HASHES values."""
Signatures: TypeAlias = "npt.NDArray[np.uint32]"
"""(examples, NUM_HASHES) uint32: one signature per row."""
_U64: TypeAlias = "npt.NDArray[np.uint64]"

_BIN_BITS: Final = 6  # log2(NUM_HASHES)
_VALUE_MASK: Final = 0xFFFFFFFF
_EMPTY: Final = 1 << 32
_MASK64: Final = (1 << 64) - 1
_PROBES_PER_BIN: Final = 1024
_PROBE_STEP: Final = 8
_WORD = re.compile(r"\w+")

# The hash's constants: odd, so that multiplying by them is a bijection on 64-bit words.
_LONG_WORD: Final = 64
_LENGTH_FACTOR: Final = 0xD6E8FEB86659FD93
_WORD_BASE: Final = 0x9E3779B97F4A7C15
_BAND_BASE: Final = 0xC2B2AE3D27D4EB4F
_EXACT_SEED: Final = 0x243F6A8885A308D3
_BAND_KEY_SHIFT: Final = 4
"""Band keys keep 60 bits: Python holds such an int in 32 bytes, a full 64-bit one in 36."""


class Fingerprint:
    """What the index compares. The signature is computed on first use: most exact duplicates never
    need one, and it is the costly part. `Signer.fingerprints` computes a batch's at once instead."""

    __slots__ = ("_conversation", "_near", "_signature", "bands", "exact")

    def __init__(
        self,
        conversation: Conversation | None,
        *,
        near: bool,
        exact: int | None = None,
        signature: npt.NDArray[np.uint32] | None = None,
        bands: list[int] | None = None,
    ) -> None:
        if exact is None:
            if conversation is None:
                raise ValueError("a fingerprint needs the conversation or its exact key")
            exact = exact_key(conversation)
        self.exact = exact
        self._conversation = conversation
        self._near = near
        self._signature = signature
        self.bands = bands
        """The signature's LSH band keys, when computed for a batch (for the index's threshold)."""

    @property
    def signature(self) -> npt.NDArray[np.uint32] | None:
        """None when near-duplicate detection is off."""
        if not self._near:
            return None
        if self._signature is None:
            if self._conversation is None:
                raise ValueError("a fingerprint without its conversation needs its signature given")
            self._signature = np.asarray(minhash(self._conversation), dtype=np.uint32)
        return self._signature


@dataclass(frozen=True, slots=True)
class Match:
    line: int
    """Line of the earlier example this one matches."""
    similarity: float
    """Estimated Jaccard similarity (1.0 for an exact duplicate)."""


def normalise(text: str) -> str:
    return " ".join(text.casefold().split())


def exact_key(conversation: Conversation) -> int:
    """A 64-bit hash of the conversation's roles and normalised contents: their UTF-8 bytes, eight at a
    time (little-endian, the last chunk zero-padded), each chunk mixed into the state, then the length."""
    canonical = "\x1e".join([message.role + "\x1f" + normalise(message.content) for message in conversation])
    data = canonical.encode()
    value = _EXACT_SEED
    for start in range(0, len(data), 8):
        value = _mix64(value ^ int.from_bytes(data[start : start + 8], "little"))
    return _mix64(value ^ ((len(data) * _LENGTH_FACTOR) & _MASK64))


# --- The definition, one example at a time ------------------------------------------------------------


def shingle_tokens(conversation: Conversation) -> list[str]:
    """The words the shingles are made of: a role marker, then the case-folded words of each user and
    assistant turn."""
    tokens: list[str] = []
    for message in conversation:
        if message.role != "system":
            # The role marker keeps "question ends / answer starts" part of the shingles.
            tokens.append(f"\x00{message.role}")
            tokens.extend(_WORD.findall(message.content.casefold()))
    return tokens


def shingle_hashes(conversation: Conversation) -> set[int]:
    words = [word_hash(token) for token in shingle_tokens(conversation)]
    width = min(SHINGLE_WORDS, len(words))
    return {shingle_hash(words[i : i + width]) for i in range(len(words) - width + 1)}


def word_hash(token: str) -> int:
    """A word's UTF-8 bytes, eight at a time (little-endian, the last chunk zero-padded), each chunk
    mixed into a state that starts from the length; words longer than `_LONG_WORD` bytes, which only
    hostile text has, are hashed whole with blake2b."""
    data = token.encode()
    if len(data) > _LONG_WORD:
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
    value = (len(data) * _LENGTH_FACTOR) & _MASK64
    for start in range(0, len(data), 8):
        value = _mix64(value ^ int.from_bytes(data[start : start + 8], "little"))
    return value


def shingle_hash(words: Sequence[int]) -> int:
    value = 0
    for word in words:
        value = (value * _WORD_BASE + word) & _MASK64
    return _mix64((value + len(words)) & _MASK64)


def minhash(conversation: Conversation) -> Signature:
    return minhash_of(shingle_hashes(conversation))


def minhash_of(hashes: Iterable[int]) -> Signature:
    """One-permutation MinHash: the top bits of a shingle's hash pick a bin, the low bits are its value
    in that bin; each bin keeps its minimum. Empty bins borrow from a bin chosen by a probe sequence
    that depends only on the bin, which keeps P(equal value) equal to the Jaccard similarity."""
    mins = [_EMPTY] * NUM_HASHES
    for value in hashes:
        slot = value >> (64 - _BIN_BITS)
        low = value & _VALUE_MASK
        if low < mins[slot]:
            mins[slot] = low
    if _EMPTY in mins:
        _densify(mins)
    return array("I", mins)


def similarity(a: Sequence[int] | npt.NDArray[np.uint32], b: Sequence[int] | npt.NDArray[np.uint32]) -> float:
    return sum(1 for x, y in zip(a, b, strict=True) if x == y) / NUM_HASHES


@functools.cache
def lsh_bands(threshold: float) -> tuple[int, int]:
    """(bands, rows): one more band than the mismatches a pair at the threshold may have."""
    mismatches = math.floor((1.0 - threshold) * NUM_HASHES + 1e-9)
    bands = min(mismatches + 1, MAX_BANDS)
    return bands, NUM_HASHES // bands


# --- The same, a batch at a time ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchHashes:
    """What `Signer.hash_batch` computes for a batch of conversations."""

    exact: _U64
    """One exact key per conversation."""
    signatures: Signatures | None
    """(conversations, NUM_HASHES); None when near-duplicates are not looked for."""
    bands: _U64 | None
    """(conversations, bands) band keys; None with the signatures."""
    segments: _Segments
    seg_words: npt.NDArray[np.int64]
    """Per segment: its words as `str.split` counts them (meaningful for raw segments)."""
    seg_stripped: npt.NDArray[np.int64]
    """Per segment: the length of its content without surrounding whitespace (raw segments)."""


@dataclass(frozen=True, slots=True)
class _Segments:
    buffer: bytes
    start: npt.NDArray[np.int64]
    end: npt.NDArray[np.int64]
    line: npt.NDArray[np.int64]
    flags: npt.NDArray[np.uint8]
    role: npt.NDArray[np.uint8]
    ascii: list[bool]
    """Per conversation: every message is ASCII (so the raw segments cover every message)."""


class Signer:
    """Exact keys, MinHash signatures and band keys of many examples at once (compiled, `kernels`),
    equal to `exact_key` and `minhash` one at a time."""

    def __init__(self, threshold: float) -> None:
        self.bands, self.rows = lsh_bands(threshold)

    def fingerprints(self, conversations: Sequence[Conversation], exact: Sequence[int]) -> list[Fingerprint]:
        hashed = self.hash_batch(conversations, near=True)
        assert hashed.signatures is not None and hashed.bands is not None
        return [
            Fingerprint(conversation, near=True, exact=key, signature=signature, bands=bands)
            for conversation, key, signature, bands in zip(
                conversations, exact, hashed.signatures, hashed.bands.tolist(), strict=True
            )
        ]

    def signatures(self, conversations: Sequence[Conversation]) -> Signatures:
        signatures = self.hash_batch(conversations, near=True).signatures
        assert signatures is not None
        return signatures

    def hash_batch(
        self,
        conversations: Sequence[Conversation],
        *,
        near: bool,
        roles: npt.NDArray[np.uint8] | None = None,
        scanned: Scanned | None = None,
    ) -> BatchHashes:
        """`roles`: the role codes of all messages, in order, when the caller has them already;
        `scanned`: where the messages are in the raw lines, when the caller found them (then only the
        non-ASCII contents are prepared in Python)."""
        segments = (
            _scanned_segments(conversations, scanned, near=near)
            if scanned is not None
            else _segments(conversations, near=near, roles=roles)
        )
        exact, mins, bands, redo, words, stripped = kernels.hash_batch(
            segments.buffer,
            (segments.start, segments.end, segments.line, segments.flags, segments.role),
            len(conversations),
            role_markers=_role_markers(),
            probes=_probe_table(),
            bands=self.bands,
            rows=self.rows,
            near=near,
        )
        signatures = None
        if near:
            # Words longer than `_LONG_WORD` bytes (hashed with blake2b), or no word at all: by the definition.
            for index in np.flatnonzero(redo).tolist():
                mins[index] = minhash(conversations[index])
                bands[index] = self.band_keys(mins[index : index + 1].astype(np.uint32))[0]
            signatures = mins.astype(np.uint32)
        return BatchHashes(exact, signatures, bands if near else None, segments, words, stripped)

    def band_keys(self, signatures: Signatures) -> _U64:
        """(examples, bands): each band's rows folded into one 60-bit key."""
        count = signatures.shape[0]
        cells = (
            signatures[:, : self.bands * self.rows].reshape(count, self.bands, self.rows).astype(np.uint64)
        )
        value = np.zeros((count, self.bands), dtype=np.uint64)
        for row in range(self.rows):
            value = value * np.uint64(_BAND_BASE) + cells[:, :, row]
        return _mix64_array(value) >> np.uint64(_BAND_KEY_SHIFT)


@dataclass(frozen=True, slots=True)
class Scanned:
    """Where a batch's messages are in its raw JSON lines (`kernels.scan_block`): per message, its
    line, role code, and content's place in `buffer` (the block, then the text of escaped contents),
    and whether the content is ASCII (else its place is not given)."""

    buffer: bytes
    counts: npt.NDArray[np.int64]
    """Messages per line."""
    line: npt.NDArray[np.int64]
    role: npt.NDArray[np.uint8]
    start: npt.NDArray[np.int64]
    end: npt.NDArray[np.int64]
    ascii: npt.NDArray[np.bool_]
    written: Any = None
    """The block's lines as they will be written (`batch.Written`), for all its lines."""

    def subset(self, keep: npt.NDArray[np.bool_]) -> Scanned:
        """The messages of the lines kept (`keep`, per line), their lines numbered anew."""
        chosen = keep[self.line]
        renumbered = np.cumsum(keep) - 1
        return Scanned(
            buffer=self.buffer,
            counts=self.counts[keep],
            line=renumbered[self.line[chosen]],
            role=self.role[chosen],
            start=self.start[chosen],
            end=self.end[chosen],
            ascii=self.ascii[chosen],
            written=self.written,
        )


def _scanned_segments(conversations: Sequence[Conversation], scanned: Scanned, *, near: bool) -> _Segments:
    """`_segments`, with the ASCII contents where they already are (the raw lines, or the text of
    their escapes): only the others are prepared here, as `_segments` prepares them."""
    line, role = scanned.line, scanned.role
    raw_exact = kernels.RAW | kernels.EXACT
    flags = np.where(role > 0, raw_exact | (kernels.SHINGLE if near else 0), raw_exact).astype(np.uint8)
    others = np.flatnonzero(~scanned.ascii)
    clean = np.bincount(line[others], minlength=len(conversations)) == 0
    if not len(others):
        return _Segments(scanned.buffer, scanned.start, scanned.end, line, flags, role, clean.tolist())
    start, end = scanned.start.copy(), scanned.end.copy()
    first = (np.cumsum(scanned.counts) - scanned.counts).tolist()
    pieces: list[bytes] = []
    offset = len(scanned.buffer)
    extra: list[tuple[int, int, int]] = []
    for index in others.tolist():
        number = int(line[index])
        folded = conversations[number][index - first[number]].content.casefold()
        text = " ".join(folded.split()).encode()
        start[index], end[index] = offset, offset + len(text)
        offset += len(text)
        pieces.append(text)
        flags[index] = kernels.EXACT
        if near and role[index]:
            words = " ".join(_WORD.findall(folded)).encode()
            extra.append((index + 1, offset, offset + len(words)))
            offset += len(words)
            pieces.append(words)
    if extra:
        # A second segment right after the message's first: the shingles' words.
        at = np.array([item[0] for item in extra], dtype=np.int64)
        start = np.insert(start, at, [item[1] for item in extra])
        end = np.insert(end, at, [item[2] for item in extra])
        line = np.insert(line, at, line[at - 1])
        role = np.insert(role, at, role[at - 1])
        flags = np.insert(flags, at, kernels.SHINGLE)
    return _Segments(scanned.buffer + b"".join(pieces), start, end, line, flags, role, clean.tolist())


def _segments(
    conversations: Sequence[Conversation], *, near: bool, roles: npt.NDArray[np.uint8] | None = None
) -> _Segments:
    """The batch's text for the kernel: ASCII content as written (one raw segment per message), other
    content prepared here (`normalise` for the exact key, the `\\w+` words for the shingles)."""
    contents = [message.content for conversation in conversations for message in conversation]
    total = len(contents)
    counts = np.fromiter(map(len, conversations), dtype=np.int64, count=len(conversations))
    line = np.repeat(np.arange(len(conversations), dtype=np.int64), counts)
    role = (
        roles
        if roles is not None
        else np.fromiter(
            map(kernels.ROLE_CODES.__getitem__, [m.role for c in conversations for m in c]),
            dtype=np.uint8,
            count=total,
        )
    )
    is_ascii = np.fromiter(map(str.isascii, contents), dtype=np.bool_, count=total)
    sizes = np.fromiter(map(len, contents), dtype=np.int64, count=total)
    raw_exact = kernels.RAW | kernels.EXACT
    flags = np.where(role > 0, raw_exact | (kernels.SHINGLE if near else 0), raw_exact).astype(np.uint8)
    others = np.flatnonzero(~is_ascii)
    clean = np.bincount(line[others], minlength=len(conversations)) == 0
    extra: list[tuple[int, str, int]] = []
    for index in others.tolist():
        folded = contents[index].casefold()
        contents[index] = " ".join(folded.split())
        sizes[index] = len(contents[index].encode())
        flags[index] = kernels.EXACT
        if near and role[index]:
            words = " ".join(_WORD.findall(folded))
            extra.append((index + 1, words, len(words.encode())))
    if extra:
        # A second segment right after the message's first: the shingles' words.
        at = np.array([item[0] for item in extra], dtype=np.int64)
        for index, words, _size in reversed(extra):
            contents.insert(index, words)
        sizes = np.insert(sizes, at, [item[2] for item in extra])
        line = np.insert(line, at, line[at - 1])
        role = np.insert(role, at, role[at - 1])
        flags = np.insert(flags, at, kernels.SHINGLE)
    ends = np.cumsum(sizes)
    return _Segments(
        buffer="".join(contents).encode(),
        start=ends - sizes,
        end=ends,
        line=line,
        flags=flags,
        role=role,
        ascii=clean.tolist(),
    )


@functools.cache
def _role_markers() -> _U64:
    return np.array([word_hash(f"\x00{role}") for role in kernels.ROLE_CODES], dtype=np.uint64)


def _mix64_array(value: _U64) -> _U64:
    value = value + np.uint64(0x9E3779B97F4A7C15)
    value = (value ^ (value >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    value = (value ^ (value >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return value ^ (value >> np.uint64(31))


@functools.cache
def _probe_table() -> npt.NDArray[np.uint8]:
    return np.frombuffer(b"".join(_probes()), dtype=np.uint8).reshape(NUM_HASHES, _PROBES_PER_BIN)


# --- The index ----------------------------------------------------------------------------------------


class KeyTable:
    """64-bit keys to 32-bit values (line numbers, ordinals), in two numpy arrays (`kernels`): 12 bytes
    a slot, at most 70% of the slots filled. A Python dict of ints takes about 100 bytes an entry."""

    __slots__ = ("count", "keys", "values")

    def __init__(self, capacity: int = 1024) -> None:
        self.keys = np.zeros(capacity, dtype=np.uint64)
        self.values = np.full(capacity, kernels.TABLE_EMPTY, dtype=np.uint32)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes

    def get(self, key: int) -> int | None:
        value = int(self.lookup(np.array([key], dtype=np.uint64))[0])
        return None if value < 0 else value

    def lookup(self, keys: _U64) -> npt.NDArray[np.int64]:
        """Per key: its value, or -1."""
        if not self.count:
            return np.full(len(keys), -1, dtype=np.int64)
        return kernels.table_lookup(self.keys, self.values, keys)  # type: ignore[no-any-return]

    def setdefault(self, keys: _U64, values: npt.NDArray[np.uint32]) -> npt.NDArray[np.int64]:
        """`dict.setdefault` for each key in order: the value it had, or -1 where it was inserted."""
        self.reserve(len(keys))
        previous, inserted = kernels.table_setdefault(self.keys, self.values, keys, values)
        self.count += inserted
        return previous  # type: ignore[no-any-return]

    def slot(self, key: int) -> int:
        """The slot that holds `key` (linear probing, as the kernels do), or the empty one it would take."""
        mask = len(self.keys) - 1
        slot = key & mask
        while self.values[slot] != kernels.TABLE_EMPTY and int(self.keys[slot]) != key:
            slot = (slot + 1) & mask
        return slot

    def reserve(self, extra: int) -> None:
        """Room for `extra` more keys (at most 70% of the slots filled)."""
        capacity = len(self.keys)
        while (self.count + extra) * 10 > capacity * 7:
            capacity *= 2
        if capacity == len(self.keys):
            return
        filled = self.values != kernels.TABLE_EMPTY
        keys, values = self.keys[filled], self.values[filled]
        self.keys = np.zeros(capacity, dtype=np.uint64)
        self.values = np.full(capacity, kernels.TABLE_EMPTY, dtype=np.uint32)
        kernels.table_setdefault(self.keys, self.values, keys, values)


class DedupIndex:
    """The examples kept so far: exact keys and, when near-duplicates are looked for, signatures.

    Memory per kept example: the exact key's slot and one bucket slot per band (7 at the default
    threshold) in two `KeyTable`s (12 bytes a slot, 1.4 to 2.9 slots per key), 256 bytes of signature
    and its line number (in arrays grown by an eighth at a time, in place where the allocator can):
    about 400 to 560 bytes in all, as `bench/data_gate.py` measures it. A bucket's first member is in
    one table; the others (rare) are chained from a second one, up to `MAX_BUCKET` members.

    `find_exact`, `find_near` and `add` are the definitions, one example at a time, in Python;
    `kernels.block_verdicts` takes a whole block's verdicts on the same arrays (`arrays`), and the tests
    hold the two equal."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.signer = Signer(threshold)
        self.bands, self.rows = self.signer.bands, self.signer.rows
        self._exact = KeyTable()
        self._buckets = KeyTable()
        """Every band's buckets: a band key (60 bits) with the band's number in its top 4 bits, and the
        row of the bucket's first member."""
        self._more = KeyTable()
        """Per bucket with more than one member: the last entry of its chain."""
        self._chain_rows = np.zeros(0, dtype=np.uint32)
        self._chain_next = np.zeros(0, dtype=np.int64)
        self._chained = 0
        self._signatures = np.zeros((0, NUM_HASHES), dtype=np.uint32)
        self._lines = np.zeros(0, dtype=np.uint32)
        self._count = 0
        """Signatures (rows) held."""
        self.band_bits = np.arange(self.bands, dtype=np.uint64) << np.uint64(60)

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        tables = self._exact.nbytes + self._buckets.nbytes + self._more.nbytes
        chains = self._chain_rows.nbytes + self._chain_next.nbytes
        return tables + chains + self._signatures.nbytes + self._lines.nbytes

    # --- One example at a time (the definitions) --------------------------------------------------------

    def find_exact(self, print_: Fingerprint) -> Match | None:
        line = self._exact.get(print_.exact)
        return None if line is None else Match(line, 1.0)

    def find_near(self, print_: Fingerprint) -> Match | None:
        """The most similar earlier example at or above the threshold (the earliest among equals)."""
        signature = print_.signature
        if signature is None:
            return None
        best: Match | None = None
        for row in self._candidates(self._bands_of(print_)):
            score = int(np.count_nonzero(self._signatures[row] == signature)) / NUM_HASHES
            line = int(self._lines[row])
            if score >= self.threshold and (
                best is None or score > best.similarity or (score == best.similarity and line < best.line)
            ):
                best = Match(line, score)
        return best

    def add(self, print_: Fingerprint, line: int) -> None:
        self._exact.setdefault(np.array([print_.exact], dtype=np.uint64), np.array([line], dtype=np.uint32))
        signature = print_.signature
        if signature is None:
            return
        self.reserve(1)
        row = self._count
        self._lines[row] = line
        self._signatures[row] = signature
        self._count += 1
        keys = self._tagged(np.array(self._bands_of(print_), dtype=np.uint64))
        members = np.full(len(keys), row, dtype=np.uint32)
        for key, first in zip(keys.tolist(), self._buckets.setdefault(keys, members).tolist(), strict=True):
            if first >= 0:
                self._chain(key, row)

    def _chain(self, key: int, row: int) -> None:
        last = self._more.get(key)
        members = 1 + len(self._chain_of(last))
        if members >= MAX_BUCKET:
            return
        entry = self._chained
        self._chained += 1
        self._chain_rows[entry] = row
        self._chain_next[entry] = -1 if last is None else last
        if last is None:
            self._more.setdefault(np.array([key], dtype=np.uint64), np.array([entry], dtype=np.uint32))
        else:
            self._more.values[self._more.slot(key)] = entry

    def _chain_of(self, entry: int | None) -> list[int]:
        """The rows of a chain, from its last entry."""
        rows: list[int] = []
        while entry is not None and entry >= 0:
            rows.append(int(self._chain_rows[entry]))
            entry = int(self._chain_next[entry])
        return rows

    def _candidates(self, keys: list[int]) -> list[int]:
        found: list[int] = []
        tagged = self._tagged(np.array(keys, dtype=np.uint64))
        for key, first in zip(tagged.tolist(), self._buckets.lookup(tagged).tolist(), strict=True):
            if first >= 0:
                found.append(first)
                found.extend(self._chain_of(self._more.get(key)))
        return found

    def _tagged(self, bands: _U64) -> _U64:
        """Band keys (the last axis: bands) with each band's number in the top bits."""
        return bands | self.band_bits

    def _bands_of(self, print_: Fingerprint) -> list[int]:
        if print_.bands is None:
            signature = print_.signature
            assert signature is not None
            print_.bands = self.signer.band_keys(signature.reshape(1, NUM_HASHES)).tolist()[0]
        return print_.bands

    # --- A block at a time (`kernels.block_verdicts`) ---------------------------------------------------

    def reserve(self, examples: int) -> None:
        """Room for `examples` more kept examples in every array, so that the kernel never runs out."""
        self._exact.reserve(examples)
        self._buckets.reserve(examples * self.bands)
        self._more.reserve(examples * self.bands)
        self._chain_rows = _grown(self._chain_rows, self._chained + examples * self.bands)
        self._chain_next = _grown(self._chain_next, self._chained + examples * self.bands)
        self._signatures = _grown(self._signatures, self._count + examples)
        self._lines = _grown(self._lines, self._count + examples)

    def arrays(self) -> tuple[npt.NDArray[Any], ...]:
        """The index's arrays, as the kernel takes them (after `reserve`)."""
        return (
            self._exact.keys,
            self._exact.values,
            self._buckets.keys,
            self._buckets.values,
            self._more.keys,
            self._more.values,
            self._chain_rows,
            self._chain_next,
            self._signatures,
            self._lines,
        )

    def counts(self) -> npt.NDArray[np.int64]:
        """The counters the kernel updates, in its order (`set_counts` takes them back)."""
        return np.array(
            [self._exact.count, self._buckets.count, self._more.count, self._chained, self._count],
            dtype=np.int64,
        )

    def set_counts(self, counts: npt.NDArray[np.int64]) -> None:
        exact, buckets, more, chained, rows = counts.tolist()
        self._exact.count, self._buckets.count, self._more.count = exact, buckets, more
        self._chained, self._count = chained, rows


def _grown(array_: npt.NDArray[Any], needed: int) -> npt.NDArray[Any]:
    """`array_` with room for `needed` rows: grown by at least an eighth, in place when the allocator
    can (`ndarray.resize`: a large block is remapped, not copied, and nothing else refers to it)."""
    if len(array_) >= needed:
        return array_
    capacity = max(needed, len(array_) + len(array_) // 8, 256)
    array_.resize((capacity, *array_.shape[1:]), refcheck=False)
    return array_


def _densify(mins: list[int]) -> None:
    if all(value == _EMPTY for value in mins):
        raise ValueError("the MinHash of an empty set is undefined")
    filled = list(mins)
    for slot, value in enumerate(filled):
        if value == _EMPTY:
            mins[slot] = filled[_donor(slot, filled)]


def _donor(slot: int, filled: list[int]) -> int:
    for probe in _probes()[slot]:
        if filled[probe] != _EMPTY:
            return probe
    # Reached only when nearly every bin is empty and 1024 probes all missed; any fixed order keeps
    # the result deterministic.
    return next(probe for probe in range(NUM_HASHES) if filled[probe] != _EMPTY)


@functools.cache
def _probes() -> tuple[bytes, ...]:
    """Per bin, a fixed pseudo-random sequence of bins to borrow from (bytes: 64 KiB in all): the top
    bits of `_mix64((bin << 32) | attempt)`."""
    slots = np.arange(NUM_HASHES, dtype=np.uint64)[:, None] << np.uint64(32)
    attempts = np.arange(_PROBES_PER_BIN, dtype=np.uint64)[None, :]
    table = (_mix64_array(slots | attempts) >> np.uint64(64 - _BIN_BITS)).astype(np.uint8)
    return tuple(row.tobytes() for row in table)


def _mix64(value: int) -> int:
    """splitmix64's finaliser: a cheap, well-spread, fixed mapping of 64-bit integers."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)
