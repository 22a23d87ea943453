"""Hold out a validation set from the cleaned training data: exact size, seeded, streamed."""

from __future__ import annotations

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
) -> SplitResult:
    """Route each line of `source` (and its token length, when lengths were counted) to one side."""
    sides: tuple[array[int], array[int]] = (array("I"), array("I"))
    counts = [0, 0]
    flags = validation_flags(usable, fraction, seed)
    with (
        source.open(encoding="utf-8") as lines,
        train_path.open("w", encoding="utf-8") as train,
        validation_path.open("w", encoding="utf-8") as validation,
    ):
        for index, (line, to_validation) in enumerate(zip(lines, flags, strict=True)):
            (validation if to_validation else train).write(line)
            counts[to_validation] += 1
            if lengths:
                sides[to_validation].append(lengths[index])
    return SplitResult(counts[0], counts[1], sides[0], sides[1])
