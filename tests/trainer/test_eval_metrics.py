"""Task metrics, table-driven."""

from __future__ import annotations

import pytest

from ftjob_trainer.evaluation.metrics import exact_match, json_valid, rouge_l, score, token_f1


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
