"""`prepare_data` end to end on small files: each drop reason counted with its line, the seeded split,
train/validation overlap, rejection with the report attached, token statistics and the report itself."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ftjob.api.data import DataSpec
from ftjob.contract import ExitCode
from ftjob_trainer.data import DataRejected, DataReport, DropReason, PreparedData, prepare_data
from ftjob_trainer.errors import DataInvalid

Row = dict[str, Any] | str
"""A JSON object to write as a line, or a raw line."""

VOCABULARY = [
    f"{a}{b}"
    for a in ("ka", "lo", "mi", "nu", "pe", "ra", "si", "tu")
    for b in ("bo", "da", "fe", "gi", "ho")
]
SYSTEM = "You are a concise assistant."


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choices(VOCABULARY, k=count))


def chat(user: str, assistant: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": user},
            {"role": "assistant", "content": assistant},
        ]
    }


def good_rows(
    count: int, *, seed: int = 0, answer_words: int = 100, json_answers: bool = False
) -> list[dict[str, Any]]:
    """Distinct examples, pairwise far below any near-duplicate threshold, long enough that one changed
    word leaves a copy clearly above 0.9 (about 0.95 true Jaccard)."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for _ in range(count):
        answer = words(rng, answer_words)
        rows.append(chat(words(rng, 8), json.dumps({"answer": answer}) if json_answers else answer))
    return rows


def write_jsonl(path: Path, rows: Iterable[Row]) -> Path:
    with path.open("w", encoding="utf-8") as sink:
        for row in rows:
            sink.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def whitespace_tokens(messages: list[dict[str, str]]) -> int:
    return sum(len(message["content"].split()) for message in messages)


def spec(**fields: Any) -> DataSpec:
    return DataSpec.model_validate({"trainUri": "file:///data/train.jsonl", "minExamples": 1, **fields})


def run(
    tmp_path: Path,
    train: Iterable[Row],
    validation: Iterable[Row] | None = None,
    *,
    seed: int = 42,
    max_seq_length: int = 1024,
    out: str = "out",
    **fields: Any,
) -> PreparedData:
    train_path = write_jsonl(tmp_path / "train.jsonl", train)
    validation_path = None if validation is None else write_jsonl(tmp_path / "validation.jsonl", validation)
    return prepare_data(
        train_path,
        validation_path,
        spec(**fields),
        seed=seed,
        max_seq_length=max_seq_length,
        out_dir=tmp_path / out,
        count_tokens=whitespace_tokens,
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def drops(report: DataReport, role: str = "train") -> dict[str, tuple[int, list[int]]]:
    (item,) = [item for item in report.inputs if item.role == role]
    return {
        str(reason): (s.count, [sample.line for sample in s.samples]) for reason, s in item.dropped.items()
    }


# --- one case per drop reason ------------------------------------------------------------------------


def one_word_changed(row: Row) -> Row:
    example: dict[str, Any] = json.loads(json.dumps(row))
    answer = example["messages"][2]["content"].split()
    answer[50] = "changed"
    example["messages"][2]["content"] = " ".join(answer)
    return example


def shouted(row: Row) -> Row:
    example: dict[str, Any] = json.loads(json.dumps(row))
    for message in example["messages"]:
        message["content"] = "  " + message["content"].upper().replace(" ", "\t ")
    return example


@dataclass(frozen=True)
class ReasonCase:
    bad_line: Callable[[list[Row]], Row]
    """Builds the offending line from the good rows around it (line 2 is the one copied)."""
    detail: str
    """A fragment of the sample's detail."""
    cleaning: dict[str, Any] = field(default_factory=dict)


REASONS = {
    DropReason.LINE_TOO_LONG: ReasonCase(
        lambda rows: chat("Say it at length.", "word " * 300),
        "longer than maxLineBytes 1024",
        {"maxLineBytes": 1024},
    ),
    DropReason.INVALID_JSON: ReasonCase(lambda rows: '{"messages": [{"role": "user"', "Expecting"),
    DropReason.WRONG_SCHEMA: ReasonCase(lambda rows: {"messages": {"user": "hi"}}, '"messages" is an object'),
    DropReason.TOO_MANY_MESSAGES: ReasonCase(
        lambda rows: {"messages": chat("One?", "Two.")["messages"] + chat("Three?", "Four.")["messages"][1:]},
        "5 messages, more than maxMessages 4",
        {"maxMessages": 4},
    ),
    DropReason.MISSING_TURN: ReasonCase(
        lambda rows: {"messages": [{"role": "user", "content": "Anyone there?"}]}, "no assistant turn"
    ),
    DropReason.BAD_ROLE_ORDER: ReasonCase(
        lambda rows: {
            "messages": [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Yo"}]
        },
        "messages[0] is assistant where user was expected",
    ),
    DropReason.DUPLICATE: ReasonCase(lambda rows: shouted(rows[1]), "same as line 2"),
    DropReason.NEAR_DUPLICATE: ReasonCase(lambda rows: one_word_changed(rows[1]), "with line 2"),
    DropReason.SHORT_ANSWER: ReasonCase(
        lambda rows: chat("Thanks a lot", "OK then"), "has 2 words", {"minAssistantWords": 3}
    ),
    DropReason.SHORT_USER_MESSAGE: ReasonCase(
        lambda rows: chat("?", "Could you say more?"), "has 1 characters", {"minUserChars": 2}
    ),
    DropReason.INVALID_JSON_ANSWER: ReasonCase(
        lambda rows: chat("Give me the total.", "The total is 42."), "is not JSON", {"outputFormat": "json"}
    ),
}


@pytest.mark.parametrize("reason", list(REASONS), ids=str)
def test_each_reason_is_counted_once_with_its_line(tmp_path: Path, reason: DropReason) -> None:
    case = REASONS[reason]
    rows: list[Row] = [*good_rows(12, json_answers=case.cleaning.get("outputFormat") == "json")]
    bad = case.bad_line(rows)
    rows.insert(4, bad)

    prepared = run(tmp_path, rows, cleaning=case.cleaning)

    assert drops(prepared.report) == {reason.value: (1, [5])}
    assert prepared.train_examples + prepared.validation_examples == 12
    (sample,) = prepared.report.inputs[0].dropped[reason].samples
    assert case.detail in sample.detail
    written = bad if isinstance(bad, str) else json.dumps(bad)
    assert len(sample.excerpt) <= 200
    assert written.startswith(sample.excerpt.removesuffix("…"))


def test_overlap_with_train_is_dropped_from_validation(tmp_path: Path) -> None:
    train = good_rows(12)
    validation = [*good_rows(3, seed=1), shouted(train[1]), one_word_changed(train[7])]

    prepared = run(tmp_path, train, validation)

    assert drops(prepared.report, "validation") == {"overlapWithTrain": (2, [4, 5])}
    details = [s.detail for s in prepared.report.inputs[1].dropped[DropReason.OVERLAP_WITH_TRAIN].samples]
    assert details[0].startswith("same as training line 2")
    assert details[1].startswith("estimated Jaccard similarity")
    assert details[1].endswith("training line 8")
    assert (prepared.train_examples, prepared.validation_examples) == (12, 3)
    assert read_jsonl(prepared.validation_path) == good_rows(3, seed=1)


def test_every_copy_of_a_training_example_counts_as_overlap(tmp_path: Path) -> None:
    # Duplicates are looked up among kept examples only, so a second copy is not hidden as a
    # "duplicate" of a line that was itself dropped: the count says how much leaked from training.
    train = good_rows(5)
    validation = [*good_rows(2, seed=1), train[0], train[0]]

    prepared = run(tmp_path, train, validation)

    assert drops(prepared.report, "validation") == {"overlapWithTrain": (2, [3, 4])}


def test_first_failing_reason_wins_and_blank_lines_are_not_drops(tmp_path: Path) -> None:
    good = good_rows(6, json_answers=True)
    near_copy_with_broken_json = json.loads(json.dumps(good[0]))
    near_copy_with_broken_json["messages"][2]["content"] = good[0]["messages"][2]["content"][:-1]
    rows: list[Row] = [
        *good,
        "",
        "   ",
        near_copy_with_broken_json,  # nearDuplicate and invalidJsonAnswer: counted once, as the former
        {"messages": [{"role": "user", "content": ""}]},  # missingTurn and shortUserMessage
    ]

    prepared = run(tmp_path, rows, cleaning={"outputFormat": "json", "minUserChars": 5})

    train = prepared.report.inputs[0]
    assert (train.lines, train.blank_lines, train.kept) == (8, 2, 6)
    assert drops(prepared.report) == {"missingTurn": (1, [10]), "nearDuplicate": (1, [9])}
    assert list(train.dropped) == [DropReason.MISSING_TURN, DropReason.NEAR_DUPLICATE]


def test_disabled_checks_keep_duplicates(tmp_path: Path) -> None:
    good = good_rows(4)
    rows = [*good, good[0], one_word_changed(good[1])]

    prepared = run(tmp_path, rows, cleaning={"dropDuplicates": False, "dropNearDuplicates": False})

    assert drops(prepared.report) == {}
    assert prepared.train_examples + prepared.validation_examples == 6


def test_samples_are_capped_at_three_per_reason_with_short_excerpts(tmp_path: Path) -> None:
    long_invalid = '{"messages": "' + "x" * 500
    rows: list[Row] = [*good_rows(3), *([long_invalid] * 5)]

    prepared = run(tmp_path, rows)

    summary = prepared.report.inputs[0].dropped[DropReason.INVALID_JSON]
    assert summary.count == 5
    assert [sample.line for sample in summary.samples] == [4, 5, 6]
    assert all(len(sample.excerpt) == 200 and sample.excerpt.endswith("…") for sample in summary.samples)


def test_cleaned_files_hold_only_role_and_content(tmp_path: Path) -> None:
    row = {
        "id": 1,
        "messages": [
            {"role": "user", "content": "Hi there", "name": "a"},
            {"role": "assistant", "content": "Hello"},
        ],
    }

    prepared = run(tmp_path, [row, *good_rows(3)], validation=good_rows(1, seed=9))

    assert read_jsonl(prepared.train_path)[0] == {
        "messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello"}]
    }


# --- split -------------------------------------------------------------------------------------------


def split_of(tmp_path: Path, seed: int, out: str) -> tuple[list[Any], list[Any]]:
    prepared = run(tmp_path, good_rows(50), seed=seed, out=out, validationSplit=0.2)
    return read_jsonl(prepared.train_path), read_jsonl(prepared.validation_path)


def test_split_is_deterministic_for_a_seed_and_changes_with_it(tmp_path: Path) -> None:
    train, validation = split_of(tmp_path, 1, "a")
    again = split_of(tmp_path, 1, "b")
    other = split_of(tmp_path, 2, "c")

    assert (len(train), len(validation)) == (40, 10)
    assert again == (train, validation)
    assert other[1] != validation
    assert sorted(map(json.dumps, train + validation)) == sorted(map(json.dumps, good_rows(50)))
    # Training keeps the file's order; the trainer shuffles.
    order = [json.dumps(row) for row in good_rows(50)]
    positions = [order.index(json.dumps(row)) for row in train]
    assert positions == sorted(positions)


@pytest.mark.parametrize(("usable", "expected"), [(2, (1, 1)), (3, (2, 1)), (11, (9, 2)), (30, (27, 3))])
def test_split_sizes(tmp_path: Path, usable: int, expected: tuple[int, int]) -> None:
    prepared = run(tmp_path, good_rows(usable))

    assert (prepared.train_examples, prepared.validation_examples) == expected
    assert prepared.report.validation_source == "split"
    assert prepared.report.validation_split == 0.1


# --- rejection ---------------------------------------------------------------------------------------


def test_too_few_training_examples_raises_with_the_report(tmp_path: Path) -> None:
    rows: list[Row] = [*good_rows(5), *(["not json"] * 4), *([{"messages": []}] * 2), good_rows(5)[0]]

    with pytest.raises(DataRejected) as caught:
        run(tmp_path, rows, minExamples=10)

    error = caught.value
    assert isinstance(error, DataInvalid)
    assert error.exit_code is ExitCode.DATA_INVALID
    message = str(error)
    assert "only 4 usable training examples remain, fewer than minExamples 10" in message
    assert "5 of 12 lines passed the checks, 1 held out for validation" in message
    assert "top drop reasons: invalidJson 4, missingTurn 2, duplicate 1" in message
    assert error.report.error == message
    assert drops(error.report) == {
        "invalidJson": (4, [6, 7, 8]),
        "missingTurn": (2, [10, 11]),
        "duplicate": (1, [12]),
    }


def test_no_validation_example_left_raises(tmp_path: Path) -> None:
    train = good_rows(6)

    with pytest.raises(DataRejected) as caught:
        run(tmp_path, train, validation=train[:2])

    assert "no validation example remains: 0 of 2 lines of validation.jsonl passed" in str(caught.value)
    assert "overlapWithTrain 2" in str(caught.value)
    assert caught.value.report.train_examples == 6


def test_a_single_usable_example_cannot_be_split(tmp_path: Path) -> None:
    with pytest.raises(DataRejected, match="too few to hold any out"):
        run(tmp_path, good_rows(1))


def test_chat_template_failure_is_reported_with_its_line(tmp_path: Path) -> None:
    def no_system_role(messages: list[dict[str, str]]) -> int:
        if messages[0]["role"] == "system":
            raise ValueError("System role not supported")
        return 1

    rows = [{"messages": good_rows(1)[0]["messages"][1:]}, *good_rows(5, seed=1)]
    path = write_jsonl(tmp_path / "train.jsonl", rows)

    with pytest.raises(DataRejected) as caught:
        prepare_data(
            path,
            None,
            spec(),
            seed=1,
            max_seq_length=8,
            out_dir=tmp_path / "out",
            count_tokens=no_system_role,
        )

    assert str(caught.value) == (
        "train line 2: the base model's chat template cannot render this example "
        "(ValueError: System role not supported)"
    )
    partial = caught.value.report.inputs[0]
    assert (partial.lines, partial.kept, partial.sha256) == (2, 1, "(not read to the end)")


# --- tokens and report -------------------------------------------------------------------------------


def test_token_statistics_and_truncation(tmp_path: Path) -> None:
    # System (5 words) + user (8) + assistant (n): lengths 14..113 for n = 1..100.
    rng = random.Random(3)
    rows: list[Row] = [chat(words(rng, 8), words(rng, n)) for n in range(1, 101)]

    prepared = run(tmp_path, rows, validation=good_rows(2, seed=8, answer_words=20), max_seq_length=100)

    stats = prepared.report.train_tokens
    assert stats is not None
    assert (stats.count, stats.min, stats.p50, stats.p90, stats.p95, stats.p99, stats.max) == (
        100,
        14,
        63,
        103,
        108,
        112,
        113,
    )
    assert stats.total == sum(range(14, 114))
    assert stats.over_max_seq_length == 13
    assert prepared.report.validation_tokens is not None
    assert prepared.report.validation_tokens.max == 33
    assert prepared.report.to_dataset_stats().truncated == 13


def test_report_json_markdown_and_dataset_stats(tmp_path: Path) -> None:
    rows: list[Row] = [
        *good_rows(20),
        "",
        "oops",
        {"messages": [{"role": "user", "content": "Hi | `there`"}]},
    ]

    report = run(tmp_path, rows, seed=7).report

    document = json.loads(report.to_json())
    assert document["trainExamples"] == 18
    assert document["validationSource"] == "split"
    assert (
        document["inputs"][0]["sha256"] == hashlib.sha256((tmp_path / "train.jsonl").read_bytes()).hexdigest()
    )
    assert document["inputs"][0]["dropped"]["invalidJson"]["samples"][0]["line"] == 22
    assert document["cleaning"]["nearDuplicateThreshold"] == 0.9
    assert DataReport.model_validate_json(report.to_json()) == report

    markdown = report.to_markdown()
    assert "### train: `missingTurn` (1)" in markdown
    assert "- line 23: no assistant turn" in markdown
    assert "| train | train.jsonl | 22 | 20 | 2 |" in markdown

    stats = report.to_dataset_stats()
    assert stats.model_dump(by_alias=True) == {
        "totalLines": 22,
        "trainExamples": 18,
        "validationExamples": 2,
        "dropped": 2,
        "droppedByReason": {"invalidJson": 1, "missingTurn": 1},
        "truncated": 0,
    }


def test_output_may_not_overwrite_an_input(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.clean.jsonl", good_rows(3))

    with pytest.raises(ValueError, match="would be overwritten"):
        prepare_data(path, None, spec(), seed=1, max_seq_length=8, out_dir=tmp_path)
