"""The evaluation's honesty: the generation budget, truncation, every prediction kept, failures shown with
what differs, and the pictures. Pure functions, plus the files `write_report` writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftjob_trainer.evaluation.failures import (
    Prediction,
    describe_difference,
    json_differences,
    select_failures,
    text_difference,
)
from ftjob_trainer.evaluation.generation import (
    Answer,
    generation_budget,
    length_order,
    split_generated,
)
from ftjob_trainer.evaluation.metrics import mean_scores, score, score_each
from ftjob_trainer.evaluation.report import (
    EvalResults,
    GenerationStats,
    LossPoint,
    prediction_rows,
    render_markdown,
    write_report,
)
from ftjob_trainer.evaluation.samples import EvalSample

STOP = [2, 7]


@pytest.mark.parametrize(
    ("references", "configured", "expected"),
    [
        pytest.param([20, 12, 8], None, 41, id="longest-plus-a-quarter-plus-16"),
        pytest.param([1], None, 18, id="short-answers-still-get-room"),
        pytest.param([], None, 16, id="no-references"),
        pytest.param([20], 256, 256, id="the-spec-wins"),
    ],
)
def test_generation_budget(references: list[int], configured: int | None, expected: int) -> None:
    assert generation_budget(references, configured) == expected


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        pytest.param([5, 6, 7, 2, 2], (2, False), id="stopped-by-end-of-turn-then-padded"),
        pytest.param([5, 6, 2], (2, False), id="stopped-by-eos"),
        pytest.param([5, 6, 8, 9], (4, True), id="ran-to-the-limit"),
        pytest.param([7], (0, False), id="empty-answer"),
    ],
)
def test_split_generated_counts_tokens_and_truncation(row: list[int], expected: tuple[int, bool]) -> None:
    assert split_generated(row, STOP, max_new_tokens=4) == expected


def test_length_order_puts_similar_lengths_together_longest_first() -> None:
    assert length_order([5, 40, 5, 12]) == [1, 3, 0, 2]


def test_per_sample_scores_average_to_the_aggregate() -> None:
    predictions, references = ['{"a": 1}', "no"], ['{"a": 1}', '{"a": 2}']
    each = score_each(["exactMatch", "jsonValid"], predictions, references)
    assert each == [{"exactMatch": 1.0, "jsonValid": 1.0}, {"exactMatch": 0.0, "jsonValid": 0.0}]
    assert mean_scores(each) == score(["exactMatch", "jsonValid"], predictions, references)


@pytest.mark.parametrize(
    ("reference", "answer", "truncated", "expected"),
    [
        pytest.param(
            '{"sku": "A-1", "qty": 3, "gift": false}',
            '{"sku": "A-1", "qty": 2, "note": "x"}',
            False,
            ["`qty`: 2, expected 3", "missing `gift`", "extra `note`"],
            id="json-keys-and-values",
        ),
        pytest.param(
            '{"items": [{"sku": "A"}, {"sku": "B"}]}',
            '{"items": [{"sku": "C"}]}',
            False,
            ["`items`: 1 items, expected 2", '`items[0].sku`: "C", expected "A"'],
            id="json-lists-by-path",
        ),
        pytest.param(
            '{"a": 1}',
            "Sure! Here is the order: {",
            True,
            ["cut by the token limit", "not valid JSON"],
            id="cut",
        ),
        pytest.param('{"a": 1}', '{ "a" : 1 }', False, ["same JSON value, different text"], id="spacing"),
        pytest.param("the cat sat", "the dog sat", False, ['from word 2: "dog" instead of "cat"'], id="text"),
    ],
)
def test_describe_difference(reference: str, answer: str, truncated: bool, expected: list[str]) -> None:
    assert describe_difference(reference, answer, truncated) == expected


def test_difference_lists_stay_short_and_texts_say_which_is_longer() -> None:
    many = {f"k{i}": i for i in range(20)}
    assert len(json_differences(many, {})) == 6
    assert text_difference("a b", "a b c d") == "2 words more than the reference"
    assert text_difference("a b c", "") == "empty answer"


def prediction(index: int, tuned_em: float, base_em: float = 0.0) -> Prediction:
    return Prediction(
        index=index,
        prompt=[{"role": "user", "content": f"order {index}"}],
        reference='{"qty": 1}',
        tuned='{"qty": 1}' if tuned_em else '{"qty": 2}',
        tuned_scores={"exactMatch": tuned_em},
        base="Sure, one item." if not base_em else '{"qty": 1}',
        base_scores={"exactMatch": base_em},
    )


def test_failures_are_the_tuned_models_worst_then_the_base_models() -> None:
    rows = [prediction(0, 1.0), prediction(1, 0.0), prediction(2, 1.0), prediction(3, 0.0)]
    failures = select_failures(rows, limit=5)
    assert [(f.prediction.index, f.model) for f in failures] == [(1, "tuned"), (3, "tuned")]
    assert failures[0].differences == ["`qty`: 2, expected 1"]

    perfect = [prediction(0, 1.0), prediction(1, 1.0, base_em=1.0), prediction(2, 1.0)]
    assert [(f.prediction.index, f.model) for f in select_failures(perfect, limit=1)] == [(0, "base")]
    assert select_failures([prediction(0, 1.0, 1.0)]) == []


def results(**overrides: object) -> EvalResults:
    fields: dict[str, object] = {
        "samples": 4,
        "validation_examples": 36,
        "eval_loss": 0.01,
        "base_eval_loss": 0.63,
        "tuned": {"exactMatch": 0.5, "jsonValid": 1.0},
        "base": {"exactMatch": 0.0, "jsonValid": 0.25},
        "history": [LossPoint(step=5, train_loss=1.0), LossPoint(step=10, train_loss=0.2, eval_loss=0.05)],
        "generation": GenerationStats(
            max_new_tokens=41,
            budget="derived",
            longest_reference_tokens=20,
            batch_size=16,
            truncated={"tuned": 0, "base": 3},
            seconds={"loss": 1.5, "tuned": 2.0, "base": 4.0},
        ),
    }
    fields.update(overrides)
    return EvalResults.model_validate(fields)


def test_report_shows_budget_truncation_failures_side_by_side_and_both_pictures(tmp_path: Path) -> None:
    samples = [
        EvalSample(prompt=[{"role": "user", "content": f"order {i} | rush"}], reference='{"qty": 1}')
        for i in range(4)
    ]
    tuned = [Answer('{"qty": 1}', 5, False), Answer('{"qty": 2}', 5, False)] * 2
    base = [Answer("Sure | here is `the` order", 41, True)] * 4
    rows = prediction_rows(
        samples,
        tuned,
        base,
        score_each(["exactMatch"], [a.text for a in tuned], [s.reference for s in samples]),
        score_each(["exactMatch"], [a.text for a in base], [s.reference for s in samples]),
    )
    files = write_report(tmp_path, results(), rows, job_name="demo", base_model="s3://b/m/")

    assert {p.name for p in tmp_path.iterdir()} == {
        "eval.json",
        "report.md",
        "loss_curve.png",
        "metrics.png",
        "predictions.jsonl",
    }
    assert all(files[name].read_bytes()[:4] == b"\x89PNG" for name in ("loss_curve.png", "metrics.png"))
    kept = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(kept) == 4  # every evaluated sample, not a sample of them
    assert kept[1]["tunedScores"] == {"exactMatch": 0.0} and kept[1]["baseTruncated"] is True

    report = (tmp_path / "report.md").read_text()
    assert (
        "Answers were limited to 41 new tokens (derived from the references: the longest is 20 tokens)"
        in report
    )
    assert (
        "Cut by that limit: tuned 0 of 4, base 3 of 4. Time: loss 1.5 s, tuned 2.0 s, base 4.0 s." in report
    )
    assert "![Task metrics, base against tuned](metrics.png)" in report
    assert "## Where the tuned model still fails" in report
    assert "**Sample 1.** Prompt: `order 1 | rush`" in report
    # In a table a bare pipe would split the cell, even inside code.
    cells = '| `{"qty": 1}` | ``Sure \\| here is `the` order`` (cut by the token limit) | `{"qty": 2}` |'
    assert cells in report
    assert "What differs (tuned against the reference): `qty`: 2, expected 1." in report
    assert "<" not in report  # no HTML: it renders the same on GitHub and in a terminal

    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["generation"]["truncated"] == {"tuned": 0, "base": 3}
    assert saved["delta"]["exactMatch"] == 0.5


def test_report_without_failures_or_generation_stats_says_so() -> None:
    text = render_markdown(results(generation=None), "demo", "m", failures=[])
    assert "answered all 4 samples right" in text and "Answers were limited" not in text
