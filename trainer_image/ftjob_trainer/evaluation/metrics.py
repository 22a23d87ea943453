"""Task metrics on generated answers. Pure functions of strings; each returns a score in [0, 1]."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def normalise(text: str) -> str:
    return " ".join(text.strip().split())


def parse_json(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return False, None


def exact_match(prediction: str, reference: str) -> float:
    """Equal after whitespace normalisation; two JSON documents are equal when they parse to equal values
    (key order and spacing do not matter, types do)."""
    ok_pred, pred_value = parse_json(prediction)
    ok_ref, ref_value = parse_json(reference)
    if ok_pred and ok_ref:
        return float(pred_value == ref_value)
    return float(normalise(prediction) == normalise(reference))


def tokens(text: str) -> list[str]:
    """Lower-cased words and punctuation marks: JSON keys, values and braces each count."""
    return _WORD.findall(text.lower())


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
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


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


def score(names: Sequence[str], predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean of each named metric over the pairs."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        return {}
    return {
        name: sum(METRICS[name](p, r) for p, r in zip(predictions, references, strict=True))
        / len(predictions)
        for name in names
    }
