"""Task metrics on generated answers. Pure functions of strings; each returns a score in [0, 1].

They run on whatever a model generated, degenerate output included (runaway brackets, one character
repeated thousands of times), so no string may raise or take more than linear-ish time: JSON goes
through `bounded_json`, token lists are capped at `MAX_TOKENS`, and ROUGE-L's longest common
subsequence is computed bit-parallel instead of with an O(n*m) table.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final

from .. import bounded_json

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)

MAX_TOKENS: Final = 20_000
"""Token F1 and ROUGE-L score the first this many tokens of each side (far beyond any useful answer)."""


def normalise(text: str) -> str:
    return " ".join(text.strip().split())


def parse_json(text: str) -> tuple[bool, Any]:
    try:
        return True, bounded_json.loads(text)
    except bounded_json.JsonRefused:
        return False, None


def exact_match(prediction: str, reference: str) -> float:
    """Equal after whitespace normalisation; two JSON documents are equal when they parse to equal values
    (key order and spacing do not matter, types do)."""
    ok_pred, pred_value = parse_json(prediction)
    ok_ref, ref_value = parse_json(reference)
    if ok_pred and ok_ref:
        # Identical text counts even when the values compare unequal (NaN is not equal to itself).
        return float(pred_value == ref_value or normalise(prediction) == normalise(reference))
    return float(normalise(prediction) == normalise(reference))


def tokens(text: str) -> list[str]:
    """Lower-cased words and punctuation marks (JSON keys, values and braces each count), at most
    `MAX_TOKENS` of them."""
    found: list[str] = []
    for match in _WORD.finditer(text.lower()):
        if len(found) == MAX_TOKENS:
            break
        found.append(match.group())
    return found


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style F1 over the token multisets."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred and not ref:
        return 1.0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Allison and Dix 1986; Hyyrö 2004).

    Bit j of `row` is 0 where the LCS length increases at b[j] in the current DP row; each element of
    `a` updates the whole row in a few big-integer operations, so the cost is len(a) * len(b) / 64
    machine words rather than len(a) * len(b) Python steps."""
    if not a or not b:
        return 0
    matches: dict[str, int] = {}
    for j, y in enumerate(b):
        matches[y] = matches.get(y, 0) | (1 << j)
    full = (1 << len(b)) - 1
    row = full
    for x in a:
        hits = row & matches.get(x, 0)
        row = ((row + hits) | (row - hits)) & full
    return len(b) - row.bit_count()


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (beta = 1) over tokens."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred and not ref:
        return 1.0
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def json_valid(prediction: str, reference: str) -> float:
    del reference  # validity depends on the prediction alone
    return float(parse_json(prediction)[0])


METRICS: dict[str, Callable[[str, str], float]] = {
    "exactMatch": exact_match,
    "tokenF1": token_f1,
    "rougeL": rouge_l,
    "jsonValid": json_valid,
}


def score_each(
    names: Sequence[str], predictions: Sequence[str], references: Sequence[str]
) -> list[dict[str, float]]:
    """Each named metric for each pair: what `predictions.jsonl` keeps and the failures are picked by."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    return [
        {name: METRICS[name](p, r) for name in names} for p, r in zip(predictions, references, strict=True)
    ]


def mean_scores(per_sample: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the samples ({} for none)."""
    if not per_sample:
        return {}
    return {name: sum(row[name] for row in per_sample) / len(per_sample) for name in per_sample[0]}


def score(names: Sequence[str], predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean of each named metric over the pairs."""
    return mean_scores(score_each(names, predictions, references))
