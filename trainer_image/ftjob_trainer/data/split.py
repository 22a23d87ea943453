"""Hold out a validation set from the cleaned training data: exact size, seeded, streamed."""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from . import kernels

_DRAWS_PER_CALL: Final = 1 << 16
"""Random numbers drawn at once by `validation_mask` (its memory, 8 bytes each, stays this small)."""


@dataclass(frozen=True, slots=True)
class SplitResult:
    train: int
    validation: int
    train_lengths: array[int]
    validation_lengths: array[int]


def validation_size(usable: int, fraction: float) -> int:
    """Rounded up, as `datasets.train_test_split` does; at least one example on each side when there
    are two or more."""
    if usable < 2:
        return 0
    # The epsilon keeps products such as 0.1 * 30 = 3.0000000000000004 from rounding up to 4.
    wanted = math.ceil(usable * fraction - 1e-9)
    return min(max(wanted, 1), usable - 1)


def validation_flags(usable: int, fraction: float, seed: int) -> Iterator[bool]:
    """For each example in file order, whether it goes to validation.

    Selection sampling (Knuth's Algorithm S) picks exactly `validation_size` examples, uniformly, with
    one random number per example and no list of indices, so the split streams like the rest."""
    rng = random.Random(seed)
    needed = validation_size(usable, fraction)
    for remaining in range(usable, 0, -1):
        chosen = rng.random() * remaining < needed
        needed -= chosen
        yield chosen


class Selection:
    """`validation_flags`, many at a time: the same random numbers (`random.Random.random` is two 32-bit
    Mersenne Twister outputs, which `getrandbits` hands out in the same order, many at once) and the
    same selection, in the compiled `kernels.select`."""

    def __init__(self, usable: int, fraction: float, seed: int) -> None:
        self._rng = random.Random(seed)
        self._state = np.array([usable, validation_size(usable, fraction)], dtype=np.int64)

    def next(self, count: int) -> npt.NDArray[np.bool_]:
        """The flags of the next `count` examples."""
        flags = np.empty(count, dtype=np.bool_)
        done = 0
        while done < count:
            take = min(count - done, _DRAWS_PER_CALL)
            words = np.frombuffer(self._rng.getrandbits(64 * take).to_bytes(8 * take, "little"), dtype="<u4")
            # random.random(): (a >> 5) * 2**26 + (b >> 6), over 2**53, from two consecutive outputs.
            draws = ((words[0::2] >> 5).astype(np.float64) * 67108864.0 + (words[1::2] >> 6)) * (
                1.0 / 9007199254740992.0
            )
            kernels.select(draws, self._state, flags[done : done + take])
            done += take
        return flags


def runs(data: bytes, chosen: npt.NDArray[np.bool_], ends: npt.NDArray[np.int64]) -> list[memoryview]:
    """The chosen lines of `data` (line i ends at `ends[i]`), as slices of consecutive chosen lines."""
    edges = np.diff(chosen.astype(np.int8), prepend=0, append=0)
    bounds = np.concatenate(([0], ends))
    view = memoryview(data)
    first, stop = bounds[np.flatnonzero(edges == 1)].tolist(), bounds[np.flatnonzero(edges == -1)].tolist()
    return [view[a:b] for a, b in zip(first, stop, strict=True)]


def split_file(
    source: Path,
    *,
    train_path: Path,
    validation_path: Path,
    usable: int,
    fraction: float,
    seed: int,
    lengths: array[int],
    record_lengths: npt.NDArray[np.uint32],
    block_bytes: int = 1024 * 1024,
) -> SplitResult:
    """Route each line of `source` (and its token length, when lengths were counted) to one side, a block
    of lines at a time. `record_lengths`: the bytes of each line, newline included."""
    if len(record_lengths) != usable:
        raise ValueError(f"{source}: {len(record_lengths)} line lengths, {usable} lines expected")
    sides: tuple[array[int], array[int]] = (array("I"), array("I"))
    counts = [0, 0]
    selection = Selection(usable, fraction, seed)
    ends = np.cumsum(record_lengths, dtype=np.int64)
    done = 0
    with (
        source.open("rb") as stream,
        train_path.open("wb") as train,
        validation_path.open("wb") as validation,
    ):
        while done < usable:
            offset = int(ends[done - 1]) if done else 0
            # At least one line, and as many more as fit in the block.
            upto = max(int(np.searchsorted(ends, offset + block_bytes, side="right")), done + 1)
            chunk = stream.read(int(ends[upto - 1]) - offset)
            sizes = record_lengths[done:upto]
            if len(chunk) != int(sizes.sum(dtype=np.int64)):
                raise ValueError(f"{source}: shorter than the {usable} lines expected")
            flags = selection.next(upto - done)
            chunk_ends = ends[done:upto] - offset
            train.writelines(runs(chunk, ~flags, chunk_ends))
            validation.writelines(runs(chunk, flags, chunk_ends))
            picked = int(np.count_nonzero(flags))
            counts[0] += len(flags) - picked
            counts[1] += picked
            if lengths:
                block = np.asarray(lengths[done:upto], dtype=np.uint32)
                sides[0].extend(block[~flags].tolist())
                sides[1].extend(block[flags].tolist())
            done = upto
        if stream.read(1):
            raise ValueError(f"{source}: longer than the {usable} lines expected")
    return SplitResult(counts[0], counts[1], sides[0], sides[1])
