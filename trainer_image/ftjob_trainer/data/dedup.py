"""Exact and near-duplicate detection in bounded memory per example, deterministic across processes.

Exact duplicates: an 8-byte hash of the conversation after case-folding and collapsing whitespace.

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
  three word hashes per shingle, splitmix64's finaliser after each step), so that numpy computes them
  for a whole batch of examples at once (`Signer`); `shingle_hashes` is the same definition in plain
  Python, one example at a time, and the tests hold the two equal.
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
from typing import Final, TypeAlias

import numpy as np
import numpy.typing as npt

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
_BAND_KEY_SHIFT: Final = 4
"""Band keys keep 60 bits: Python holds such an int in 32 bytes, a full 64-bit one in 36."""
_ROW_BLOCK: Final = 256
"""Signatures kept per numpy block in the index (blocks never move, so adding one copies nothing)."""


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
    canonical = "\x1e".join([message.role + "\x1f" + normalise(message.content) for message in conversation])
    return int.from_bytes(hashlib.blake2b(canonical.encode(), digest_size=8).digest(), "little")


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

# Bytes that `\w+` keeps in a case-folded word, as UTF-8: ASCII letters, digits and "_", and every byte of
# a non-ASCII character (those words come from the regex itself, joined by spaces); NUL starts a role marker.
_WORD_BYTE: Final = np.zeros(256, dtype=np.bool_)
for _byte in b"0123456789abcdefghijklmnopqrstuvwxyz_\x00":
    _WORD_BYTE[_byte] = True
_WORD_BYTE[0x80:] = True
_CHUNK_MASKS: Final = np.array([(1 << (8 * size)) - 1 for size in range(9)], dtype=np.uint64)


class Signer:
    """MinHash signatures and band keys of many examples at once, equal to `minhash` one at a time."""

    def __init__(self, threshold: float) -> None:
        self.bands, self.rows = lsh_bands(threshold)

    def fingerprints(self, conversations: Sequence[Conversation], exact: Sequence[int]) -> list[Fingerprint]:
        signatures = self.signatures(conversations)
        keys = self.band_keys(signatures).tolist()
        return [
            Fingerprint(conversation, near=True, exact=key, signature=signature, bands=bands)
            for conversation, key, signature, bands in zip(
                conversations, exact, signatures, keys, strict=True
            )
        ]

    def signatures(self, conversations: Sequence[Conversation]) -> Signatures:
        count = len(conversations)
        texts = [_shingle_text(conversation) for conversation in conversations]
        encoded = [text.encode() for text in texts]
        buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        starts = np.zeros(count + 1, dtype=np.int64)
        np.cumsum([len(item) for item in encoded], out=starts[1:])
        # Words: runs of word bytes.
        edges = np.diff(_WORD_BYTE[buffer].view(np.int8), prepend=np.int8(0), append=np.int8(0))
        first = np.flatnonzero(edges == 1)
        end = np.flatnonzero(edges == -1)
        words = self._word_hashes(buffer, first, end)
        owner = np.searchsorted(starts, first, side="right") - 1
        per_example = np.bincount(owner, minlength=count)
        # Shingles of three words that lie within one example.
        if len(words) >= SHINGLE_WORDS:
            whole = np.flatnonzero(owner[:-2] == owner[2:])
            value = words[whole] * np.uint64(_WORD_BASE) + words[whole + 1]
            value = value * np.uint64(_WORD_BASE) + words[whole + 2] + np.uint64(SHINGLE_WORDS)
            shingles = _mix64_array(value)
            shingle_owner = owner[whole]
        else:
            shingles = np.zeros(0, dtype=np.uint64)
            shingle_owner = np.zeros(0, dtype=np.int64)
        mins = np.full(count * NUM_HASHES, _EMPTY, dtype=np.uint64)
        slots = shingle_owner * NUM_HASHES + (shingles >> np.uint64(64 - _BIN_BITS)).astype(np.int64)
        np.minimum.at(mins, slots, shingles & np.uint64(_VALUE_MASK))
        table = mins.reshape(count, NUM_HASHES)
        # Examples of fewer than three words (two role markers and nothing else, say): one at a time.
        for index in np.flatnonzero(per_example < SHINGLE_WORDS).tolist():
            table[index] = minhash(conversations[index])
        return _densify_rows(table)

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

    def _word_hashes(
        self, buffer: npt.NDArray[np.uint8], first: npt.NDArray[np.intp], end: npt.NDArray[np.intp]
    ) -> _U64:
        """`word_hash` of every word, eight bytes at a time for all words still that long."""
        padded = np.zeros(len(buffer) + 8, dtype=np.uint8)
        padded[: len(buffer)] = buffer
        # The eight bytes starting at every position, as one little-endian word (a view: no copy).
        chunks = np.lib.stride_tricks.as_strided(
            padded[: len(buffer) + 8].view(np.uint8), shape=(len(buffer) + 1, 8), strides=(1, 1)
        )
        lengths = end - first
        value = lengths.astype(np.uint64) * np.uint64(_LENGTH_FACTOR)
        active = np.flatnonzero(lengths <= _LONG_WORD)
        offset = 0
        while len(active):
            left = lengths[active] - offset
            words = np.ascontiguousarray(chunks[first[active] + offset]).view("<u8").ravel()
            value[active] = _mix64_array(value[active] ^ (words & _CHUNK_MASKS[np.minimum(left, 8)]))
            offset += 8
            active = active[left > 8]
        for index in np.flatnonzero(lengths > _LONG_WORD).tolist():
            data = buffer[first[index] : end[index]].tobytes()
            value[index] = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
        return value


def _shingle_text(conversation: Conversation) -> str:
    """The words of `shingle_tokens`, separated by spaces: ASCII text is only lower-cased (numpy then
    finds its words); other text goes through the regex."""
    parts: list[str] = []
    for message in conversation:
        if message.role == "system":
            continue
        content = message.content
        if content.isascii() and "\x00" not in content:
            parts.append(f"\x00{message.role} {content.lower()} ")
        else:
            parts.append(f"\x00{message.role} {' '.join(_WORD.findall(content.casefold()))} ")
    return "".join(parts)


def _mix64_array(value: _U64) -> _U64:
    value = value + np.uint64(0x9E3779B97F4A7C15)
    value = (value ^ (value >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    value = (value ^ (value >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return value ^ (value >> np.uint64(31))


def _densify_rows(table: _U64) -> Signatures:
    """`_densify` for every row at once: each empty bin takes the value of the first filled bin among
    its first `_PROBE_STEP` probes; the rare bin whose probes all missed is done one at a time."""
    empty = table == _EMPTY
    if empty.any():
        if empty.all(axis=1).any():
            raise ValueError("the MinHash of an empty set is undefined")
        donors = _probe_table()[:, :_PROBE_STEP]  # (bins, probes)
        filled = ~empty[:, donors]  # (rows, bins, probes)
        first = filled.argmax(axis=2)  # the first filled probe of each bin (0 when none is)
        chosen = donors[np.arange(NUM_HASHES)[None, :], first].astype(np.intp)  # (rows, bins)
        result = np.where(empty, np.take_along_axis(table, chosen, axis=1), table)
        missed = np.argwhere(empty & ~filled.any(axis=2))
        for row, slot in missed.tolist():
            values = table[row].tolist()
            result[row, slot] = values[_donor(slot, values)]
        table = result
    return table.astype(np.uint32)


@functools.cache
def _probe_table() -> npt.NDArray[np.uint8]:
    return np.frombuffer(b"".join(_probes()), dtype=np.uint8).reshape(NUM_HASHES, _PROBES_PER_BIN)


# --- The index ----------------------------------------------------------------------------------------


class DedupIndex:
    """The examples kept so far: exact keys and, when near-duplicates are looked for, signatures.

    Memory per kept example: the exact key's dict entry, 256 bytes of signature (in blocks of
    `_ROW_BLOCK` rows) and one bucket entry per band (7 at the default threshold): 570 to 760 bytes
    in all (dicts are between fill levels), as `bench/data_gate.py` measures it."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.signer = Signer(threshold)
        self.bands, self.rows = self.signer.bands, self.signer.rows
        self._exact: dict[int, int] = {}
        self._blocks: list[Signatures] = []
        self._lines = array("I")
        self._buckets: list[dict[int, int | list[int]]] = [{} for _ in range(self.bands)]

    def __len__(self) -> int:
        return len(self._lines)

    def find_exact(self, print_: Fingerprint) -> Match | None:
        line = self._exact.get(print_.exact)
        return None if line is None else Match(line, 1.0)

    def find_near(self, print_: Fingerprint) -> Match | None:
        """The most similar earlier example at or above the threshold (the earliest among equals)."""
        signature = print_.signature
        if signature is None:
            return None
        candidates = self._candidates(self._bands_of(print_))
        if not candidates:
            return None
        best: Match | None = None
        for ordinal in sorted(candidates):
            block = self._blocks[ordinal // _ROW_BLOCK]
            score = int(np.count_nonzero(block[ordinal % _ROW_BLOCK] == signature)) / NUM_HASHES
            if score >= self.threshold and (best is None or score > best.similarity):
                best = Match(self._lines[ordinal], score)
        return best

    def add(self, print_: Fingerprint, line: int) -> None:
        self._exact.setdefault(print_.exact, line)
        signature = print_.signature
        if signature is None:
            return
        ordinal = len(self._lines)
        self._lines.append(line)
        if ordinal % _ROW_BLOCK == 0:
            self._blocks.append(np.empty((_ROW_BLOCK, NUM_HASHES), dtype=np.uint32))
        self._blocks[-1][ordinal % _ROW_BLOCK] = signature
        for buckets, key in zip(self._buckets, self._bands_of(print_), strict=True):
            members = buckets.get(key)
            if members is None:
                buckets[key] = ordinal
            elif isinstance(members, int):
                buckets[key] = [members, ordinal]
            elif len(members) < MAX_BUCKET:
                members.append(ordinal)

    def _bands_of(self, print_: Fingerprint) -> list[int]:
        if print_.bands is None:
            signature = print_.signature
            assert signature is not None
            print_.bands = self.signer.band_keys(signature.reshape(1, NUM_HASHES)).tolist()[0]
        return print_.bands

    def _candidates(self, keys: list[int]) -> set[int]:
        found: set[int] = set()
        for buckets, key in zip(self._buckets, keys, strict=True):
            members = buckets.get(key)
            if members is None:
                continue
            if isinstance(members, int):
                found.add(members)
            else:
                found.update(members)
        return found


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
