"""Task metrics, table-driven."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftjob_trainer.evaluation.metrics import (
    METRICS,
    _lcs_length,
    exact_match,
    json_valid,
    rouge_l,
    score,
    token_f1,
)

FUZZ = settings(max_examples=300, deadline=None, database=None)


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        pytest.param("Paris", "Paris", 1.0, id="identical"),
        pytest.param("  Paris \n", "Paris", 1.0, id="whitespace-ignored"),
        pytest.param("paris", "Paris", 0.0, id="case-matters"),
        pytest.param('{"a": 1, "b": 2}', '{"b":2,"a":1}', 1.0, id="json-key-order-ignored"),
        pytest.param('{"a": "1"}', '{"a": 1}', 0.0, id="json-types-matter"),
        pytest.param('{"a": 1', '{"a": 1}', 0.0, id="broken-json"),
    ],
)
def test_exact_match(prediction: str, reference: str, expected: float) -> None:
    assert exact_match(prediction, reference) == expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        pytest.param("the cat sat", "the cat sat", 1.0, id="identical"),
        pytest.param("", "", 1.0, id="both-empty"),
        pytest.param("dog", "the cat", 0.0, id="disjoint"),
        # 2 common of 3 predicted and 4 reference tokens: P=2/3, R=1/2, F1=4/7
        pytest.param("the cat ran", "the cat sat down", 4 / 7, id="partial"),
    ],
)
def test_token_f1(prediction: str, reference: str, expected: float) -> None:
    assert token_f1(prediction, reference) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        pytest.param("a b c d", "a b c d", 1.0, id="identical"),
        pytest.param("x y", "a b", 0.0, id="disjoint"),
        # LCS(a c d, a b c d) = 3: P=1, R=3/4, F=6/7
        pytest.param("a c d", "a b c d", 6 / 7, id="subsequence"),
        # order matters for ROUGE-L but not for token F1
        pytest.param("d c b a", "a b c d", 0.25, id="reversed"),
    ],
)
def test_rouge_l(prediction: str, reference: str, expected: float) -> None:
    assert rouge_l(prediction, reference) == pytest.approx(expected)


def test_json_valid_ignores_the_reference() -> None:
    assert json_valid('{"x": [1, 2]}', "anything") == 1.0
    assert json_valid("Sure! Here is the JSON: {}", "{}") == 0.0


def test_score_averages_each_metric() -> None:
    result = score(["exactMatch", "jsonValid"], ['{"a": 1}', "no"], ['{"a": 1}', '{"a": 2}'])
    assert result == {"exactMatch": 0.5, "jsonValid": 0.5}


def test_score_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        score(["exactMatch"], ["a", "b"], ["a"])


# --- degenerate answers: metrics run on whatever a model generated --------------------------------------

DEGENERATE = [
    pytest.param("[" * 100_000 + "]" * 100_000, id="deeply-nested-json"),
    pytest.param('{"a":' * 5000 + "1" + "}" * 5000, id="deeply-nested-objects"),
    pytest.param("[" * 100_000, id="runaway-brackets"),
    pytest.param("9" * 5000, id="5000-digit-number"),
    pytest.param('{"n": ' + "9" * 5000 + "}", id="huge-number-in-object"),
    pytest.param("\ud800 lone surrogate", id="lone-surrogate"),
    pytest.param("NaN", id="json-nan"),
    pytest.param("the " * 200_000, id="one-word-repeated"),
]


@pytest.mark.parametrize("answer", DEGENERATE)
def test_degenerate_answers_score_quickly_without_raising(answer: str) -> None:
    started = time.perf_counter()
    for reference in (answer, '{"a": 1}', "the cat"):
        for name, metric in METRICS.items():
            value = metric(answer, reference)
            assert 0.0 <= value <= 1.0, (name, value)
    assert time.perf_counter() - started < 5.0


def test_rouge_l_on_long_answers_is_fast() -> None:
    # The O(n*m) table took 64 s on 20,000 tokens each; the bit-parallel LCS takes a fraction of a second.
    answer = " ".join(str(i % 977) for i in range(20_000))
    started = time.perf_counter()
    assert rouge_l(answer, answer) == 1.0
    assert time.perf_counter() - started < 2.0


def _lcs_table(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


WORDS = st.lists(st.sampled_from("abcde"), max_size=40)


@FUZZ
@given(WORDS, WORDS)
def test_bit_parallel_lcs_equals_the_table(a: list[str], b: list[str]) -> None:
    assert _lcs_length(a, b) == _lcs_table(a, b)


HOSTILE_TEXT = st.text(
    st.characters(categories=["Cs"]) | st.sampled_from('[]{}"\\:,0123456789 ') | st.characters()
)


@FUZZ
@given(HOSTILE_TEXT, HOSTILE_TEXT)
def test_metrics_never_raise_and_stay_in_range(prediction: str, reference: str) -> None:
    for name, metric in METRICS.items():
        value = metric(prediction, reference)
        assert 0.0 <= value <= 1.0, (name, value)
    for name in ("exactMatch", "tokenF1", "rougeL"):
        assert METRICS[name](reference, reference) == 1.0, name
