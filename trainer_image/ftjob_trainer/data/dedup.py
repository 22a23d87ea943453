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
  from one hash per shingle, which keeps pure Python fast enough for hundreds of thousands of lines.
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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, TypeAlias

from .checks import Conversation

SHINGLE_WORDS: Final = 3
NUM_HASHES: Final = 64
MAX_BANDS: Final = 16
MAX_BUCKET: Final = 64
"""Examples remembered per LSH bucket. Pairs found through a bucket are still verified, so a huge
bucket (many examples sharing a whole band yet pairwise dissimilar) would only cost quadratic time."""

Signature: TypeAlias = "array[int]"
"""array("I") of NUM_HASHES values."""

_BIN_BITS: Final = 6  # log2(NUM_HASHES)
_VALUE_MASK: Final = 0xFFFFFFFF
_EMPTY: Final = 1 << 32
_MASK64: Final = (1 << 64) - 1
_PROBES_PER_BIN: Final = 1024
_WORD = re.compile(r"\w+")


class Fingerprint:
    """What the index compares. The signature is computed on first use: most exact duplicates never
    need one, and it is the costly part."""

    def __init__(self, conversation: Conversation, *, near: bool) -> None:
        self.exact = exact_key(conversation)
        self._conversation = conversation
        self._near = near

    @functools.cached_property
    def signature(self) -> Signature | None:
        """None when near-duplicate detection is off."""
        return minhash(self._conversation) if self._near else None


@dataclass(frozen=True, slots=True)
class Match:
    line: int
    """Line of the earlier example this one matches."""
    similarity: float
    """Estimated Jaccard similarity (1.0 for an exact duplicate)."""


def normalise(text: str) -> str:
    return " ".join(text.casefold().split())


def exact_key(conversation: Conversation) -> int:
    canonical = "\x1e".join(f"{message.role}\x1f{normalise(message.content)}" for message in conversation)
    return int.from_bytes(hashlib.blake2b(canonical.encode(), digest_size=8).digest(), "little")


def shingle_hashes(conversation: Conversation) -> set[int]:
    tokens: list[str] = []
    for message in conversation:
        if message.role != "system":
            # The role marker keeps "question ends / answer starts" part of the shingles.
            tokens.append(f"\x00{message.role}")
            tokens.extend(_WORD.findall(message.content.casefold()))
    width = min(SHINGLE_WORDS, len(tokens))
    return {_hash64("\x1f".join(tokens[i : i + width])) for i in range(len(tokens) - width + 1)}


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


def similarity(a: Signature, b: Signature) -> float:
    return sum(1 for x, y in zip(a, b, strict=True) if x == y) / NUM_HASHES


@functools.cache
def lsh_bands(threshold: float) -> tuple[int, int]:
    """(bands, rows): one more band than the mismatches a pair at the threshold may have."""
    mismatches = math.floor((1.0 - threshold) * NUM_HASHES + 1e-9)
    bands = min(mismatches + 1, MAX_BANDS)
    return bands, NUM_HASHES // bands


class DedupIndex:
    """The examples kept so far: exact keys and, when near-duplicates are looked for, signatures.

    Memory per example: about 100 bytes for the exact key, 256 for the signature and 80 per band."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.bands, self.rows = lsh_bands(threshold)
        self._exact: dict[int, int] = {}
        self._signatures = array("I")
        self._lines = array("I")
        self._buckets: list[dict[int, int | list[int]]] = [{} for _ in range(self.bands)]

    def find_exact(self, print_: Fingerprint) -> Match | None:
        line = self._exact.get(print_.exact)
        return None if line is None else Match(line, 1.0)

    def find_near(self, print_: Fingerprint) -> Match | None:
        """The most similar earlier example at or above the threshold (the earliest among equals)."""
        if print_.signature is None:
            return None
        best: Match | None = None
        for ordinal in sorted(self._candidates(print_.signature)):
            score = similarity(print_.signature, self._signature(ordinal))
            if score >= self.threshold and (best is None or score > best.similarity):
                best = Match(self._lines[ordinal], score)
        return best

    def add(self, print_: Fingerprint, line: int) -> None:
        self._exact.setdefault(print_.exact, line)
        if print_.signature is None:
            return
        ordinal = len(self._lines)
        self._lines.append(line)
        self._signatures.extend(print_.signature)
        for buckets, key in zip(self._buckets, self._band_keys(print_.signature), strict=True):
            members = buckets.get(key)
            if members is None:
                buckets[key] = ordinal
            elif isinstance(members, int):
                buckets[key] = [members, ordinal]
            elif len(members) < MAX_BUCKET:
                members.append(ordinal)

    def _candidates(self, sig: Signature) -> set[int]:
        found: set[int] = set()
        for buckets, key in zip(self._buckets, self._band_keys(sig), strict=True):
            members = buckets.get(key)
            if isinstance(members, int):
                found.add(members)
            elif members is not None:
                found.update(members)
        return found

    def _band_keys(self, sig: Signature) -> list[int]:
        # hash() of a tuple of ints does not depend on PYTHONHASHSEED, and a collision only adds a
        # candidate that verification rejects.
        return [hash(tuple(sig[band * self.rows : (band + 1) * self.rows])) for band in range(self.bands)]

    def _signature(self, ordinal: int) -> Signature:
        return self._signatures[ordinal * NUM_HASHES : (ordinal + 1) * NUM_HASHES]


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
    """Per bin, a fixed pseudo-random sequence of bins to borrow from (bytes: 64 KiB in all)."""
    return tuple(
        bytes(_mix64((slot << 32) | attempt) >> (64 - _BIN_BITS) for attempt in range(_PROBES_PER_BIN))
        for slot in range(NUM_HASHES)
    )


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _mix64(value: int) -> int:
    """splitmix64's finaliser: a cheap, well-spread, fixed mapping of 64-bit integers."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)
