"""Which evaluated answers the report shows, and what differs from the reference. Pure functions.

A score says how often the tuned model is wrong; a few wrong answers next to the reference say how. The
report shows the tuned model's worst answers; when it has none, the base model's (what tuning fixed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from .metrics import normalise, parse_json

MAX_DIFFERENCES: Final = 6
"""Differences listed per answer; past a handful, the answer is simply a different one."""


@dataclass(frozen=True)
class Prediction:
    """One evaluated sample: what was asked, the reference, both answers and their scores."""

    index: int
    prompt: list[dict[str, str]]
    reference: str
    tuned: str
    tuned_scores: dict[str, float]
    tuned_truncated: bool = False
    base: str | None = None
    base_scores: dict[str, float] | None = None
    base_truncated: bool = False


@dataclass(frozen=True)
class Failure:
    prediction: Prediction
    model: Literal["tuned", "base"]
    """Whose failure it is: the tuned model's, or (when it failed nowhere) the base model's."""
    differences: list[str]


def headline_metric(names: Sequence[str]) -> str | None:
    """The metric that decides "failed": exact match when computed, else the first one."""
    if not names:
        return None
    return "exactMatch" if "exactMatch" in names else names[0]


def select_failures(predictions: Sequence[Prediction], limit: int = 5) -> list[Failure]:
    """Up to `limit` answers below a perfect headline score, worst first (ties: sample order)."""
    if not predictions:
        return []
    metric = headline_metric(list(predictions[0].tuned_scores))
    if metric is None:
        return []

    def failed(scores: dict[str, float] | None) -> bool:
        return scores is not None and scores.get(metric, 1.0) < 1.0

    tuned = [p for p in predictions if failed(p.tuned_scores)]
    if tuned:
        tuned.sort(key=lambda p: (p.tuned_scores[metric], p.index))
        return [
            Failure(p, "tuned", describe_difference(p.reference, p.tuned, p.tuned_truncated))
            for p in tuned[:limit]
        ]
    base = [p for p in predictions if failed(p.base_scores) and p.base is not None]
    base.sort(key=lambda p: ((p.base_scores or {}).get(metric, 1.0), p.index))
    return [
        Failure(p, "base", describe_difference(p.reference, p.base or "", p.base_truncated))
        for p in base[:limit]
    ]


def describe_difference(reference: str, answer: str, truncated: bool = False) -> list[str]:
    """What differs between an answer and its reference, in a few short phrases."""
    notes = ["cut by the token limit"] if truncated else []
    ok_ref, ref_value = parse_json(reference)
    ok_ans, ans_value = parse_json(answer)
    if ok_ref and not ok_ans:
        return [*notes, "not valid JSON" + ("" if answer.strip() else " (empty answer)")]
    if ok_ref and ok_ans:
        found = json_differences(ref_value, ans_value)
        return [*notes, *(found or ["same JSON value, different text"])][:MAX_DIFFERENCES]
    return [*notes, text_difference(reference, answer)]


def json_differences(expected: Any, got: Any, path: str = "") -> list[str]:
    """Missing, extra and changed keys and items, by path (`items[0].sku`), at most MAX_DIFFERENCES."""
    out: list[str] = []
    _walk(expected, got, path, out)
    return out[:MAX_DIFFERENCES]


def _walk(expected: Any, got: Any, path: str, out: list[str]) -> None:
    if len(out) >= MAX_DIFFERENCES:
        return
    where = path or "the answer"
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in expected:
            child = f"{path}.{key}" if path else str(key)
            if key not in got:
                out.append(f"missing `{child}`")
            else:
                _walk(expected[key], got[key], child, out)
        out.extend(f"extra `{f'{path}.{key}' if path else key}`" for key in got if key not in expected)
        return
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            out.append(f"`{where}`: {len(got)} items, expected {len(expected)}")
        for i, (e, g) in enumerate(zip(expected, got, strict=False)):
            _walk(e, g, f"{path}[{i}]", out)
        return
    if expected != got:  # as exact match compares: 3 and 3.0 are equal
        out.append(f"`{where}`: {_short(got)}, expected {_short(expected)}")


def _short(value: Any, limit: int = 40) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def text_difference(reference: str, answer: str) -> str:
    """Where two texts part, by word: `from word 4: "blue" instead of "red"`."""
    ref, ans = normalise(reference).split(), normalise(answer).split()
    if ref == ans:
        return "same words, different spacing"
    for i, (r, a) in enumerate(zip(ref, ans, strict=False)):
        if r != a:
            return f"from word {i + 1}: {_quote(a)} instead of {_quote(r)}"
    if len(ans) > len(ref):
        return f"{len(ans) - len(ref)} words more than the reference"
    return f"{len(ref) - len(ans)} words fewer than the reference" if ans else "empty answer"


def _quote(word: str, limit: int = 30) -> str:
    return '"' + (word if len(word) <= limit else word[: limit - 1] + "…") + '"'
