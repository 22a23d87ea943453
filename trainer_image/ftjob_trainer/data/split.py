"""Hold out a validation set from the cleaned training data: exact size, seeded, streamed."""

from __future__ import annotations

import itertools
import math
import random
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


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


def split_file(
    source: Path,
    *,
    train_path: Path,
    validation_path: Path,
    usable: int,
    fraction: float,
    seed: int,
    lengths: array[int],
    block_bytes: int = 1024 * 1024,
) -> SplitResult:
    """Route each line of `source` (and its token length, when lengths were counted) to one side, a block
    of lines at a time."""
    sides: tuple[array[int], array[int]] = (array("I"), array("I"))
    counts = [0, 0]
    flags = validation_flags(usable, fraction, seed)
    index = 0
    with (
        source.open("rb") as stream,
        train_path.open("wb") as train,
        validation_path.open("wb") as validation,
    ):
        outputs = (train, validation)
        carry = b""
        while True:
            chunk = stream.read(block_bytes)
            buffer = carry + chunk
            cut = buffer.rfind(b"\n") + 1 if chunk else len(buffer)
            lines, carry = buffer[:cut].splitlines(keepends=True), buffer[cut:]
            chosen = list(itertools.islice(flags, len(lines)))
            if len(chosen) != len(lines):
                raise ValueError(f"{source}: more lines than the {usable} expected")
            for side in (0, 1):
                picked = [line for line, flag in zip(lines, chosen, strict=True) if flag == side]
                outputs[side].write(b"".join(picked))
                counts[side] += len(picked)
                if lengths:
                    sides[side].extend(
                        lengths[index + offset] for offset, flag in enumerate(chosen) if flag == side
                    )
            index += len(lines)
            if not chunk:
                break
    if index != usable:
        raise ValueError(f"{source}: {index} lines, {usable} expected")
    return SplitResult(counts[0], counts[1], sides[0], sides[1])
