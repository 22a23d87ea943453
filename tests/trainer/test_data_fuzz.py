"""Hostile training data: no line can crash the data checks or make them slow; each is dropped with a
reason and its line number. Hypothesis drives the checks with arbitrary text and JSON shapes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftjob.api.data import CleaningSpec, DataSpec
from ftjob_trainer.data import DataRejected, DropReason, prepare_data
from ftjob_trainer.data.checks import Drop, check_content, parse_conversation

FUZZ = settings(max_examples=300, deadline=None, database=None)

# Text that includes what breaks naive code: lone surrogates (legal as JSON escapes), brackets, quotes.
TEXT = st.text(
    st.characters(categories=["Cs"]) | st.sampled_from('[]{}"\\:, \n') | st.characters(), max_size=40
)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=20,
)
ROLES = st.sampled_from(["system", "user", "assistant"]) | JSON_VALUES
MESSAGES = st.lists(
    st.fixed_dictionaries({"role": ROLES, "content": TEXT | JSON_VALUES}) | JSON_VALUES, max_size=8
)
CLEANINGS = [
    CleaningSpec(),
    CleaningSpec(output_format="json", min_assistant_words=0, min_user_chars=0, max_messages=4),
]


def deeply_nested(depth: int) -> str:
    return '{"messages": ' + "[" * depth + "]" * depth + "}"


def check_line(text: str) -> None:
    """What the cleaner does with one line: both stages return a verdict and never raise."""
    for cleaning in CLEANINGS:
        conversation = parse_conversation(text, max_messages=cleaning.max_messages)
        if not isinstance(conversation, Drop):
            check_content(conversation, cleaning)


@FUZZ
@given(st.text())
def test_any_text_gets_a_verdict(text: str) -> None:
    check_line(text)


@FUZZ
@given(JSON_VALUES | st.fixed_dictionaries({"messages": MESSAGES | JSON_VALUES}))
def test_any_json_document_gets_a_verdict(document: Any) -> None:
    check_line(json.dumps(document))


@FUZZ
@given(st.integers(min_value=1, max_value=20_000), st.sampled_from(["[", '{"a":', '[{"role":']))
def test_any_nesting_depth_gets_a_verdict(depth: int, opener: str) -> None:
    closer = {"[": "]", '{"a":': "}", '[{"role":': "}]"}[opener]
    check_line('{"messages": ' + opener * depth + "1" + closer * depth + "}")


def chat(user: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


GOOD = [
    chat(f"What is item {i} made of?", json.dumps({"item": i, "material": f"m{i * 37 % 101}"}))
    for i in range(12)
]
HOSTILE = {
    # line number in the file: (the line, the reason it must be dropped under, a fragment of the detail)
    13: (deeply_nested(100_000), DropReason.INVALID_JSON, "nested more than 64 levels deep"),
    14: ('{"messages": ' + "9" * 5000 + "}", DropReason.INVALID_JSON, "a number is too long to read"),
    15: (
        json.dumps(chat("Hi there", "\ud800 broken")),
        DropReason.INVALID_JSON,
        "messages[1].content has an unpaired surrogate escape (\\ud800 at character 1)",
    ),
    16: (
        json.dumps(chat("Give me the nested thing", "[" * 5000 + "]" * 5000)),
        DropReason.INVALID_JSON_ANSWER,
        "nested more than 64 levels deep",
    ),
    17: (
        json.dumps({"messages": [chat(f"q{i}", f"a{i}")["messages"][i % 2] for i in range(1600)]}),
        DropReason.TOO_MANY_MESSAGES,
        "1600 messages, more than maxMessages 128",
    ),
    18: (json.dumps(chat("Long?", "x" * 2_000_000)), DropReason.LINE_TOO_LONG, "longer than maxLineBytes"),
}


def test_hostile_lines_are_dropped_with_reason_and_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(
        "".join(json.dumps(row) + "\n" for row in GOOD)
        + "".join(text + "\n" for text, _, _ in HOSTILE.values())
    )
    spec = DataSpec.model_validate(
        {"trainUri": "file:///train.jsonl", "minExamples": 1, "cleaning": {"outputFormat": "json"}}
    )

    prepared = prepare_data(path, None, spec, seed=1, max_seq_length=64, out_dir=tmp_path / "out")

    (report,) = prepared.report.inputs
    assert report.kept == len(GOOD)
    for number, (_, reason, detail) in HOSTILE.items():
        (sample,) = [s for s in report.dropped[reason].samples if s.line == number]
        assert detail in sample.detail, sample.detail
        assert len(sample.excerpt) <= 200
    # The report can always be written out (nothing unencodable was quoted).
    prepared.report.to_json().encode("utf-8")


def test_a_1600_message_line_costs_milliseconds_not_seconds(
    tmp_path: Path, smollm2_tokenizer_path: Path
) -> None:
    # Locating assistant turns is quadratic in the turns: this line alone took 4-19 s to count tokens for.
    transformers = pytest.importorskip("transformers")
    from ftjob_trainer.chat_masks import tokenize_chat

    tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2_tokenizer_path)
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in GOOD) + HOSTILE[17][0] + "\n")
    spec = DataSpec.model_validate({"trainUri": "file:///train.jsonl", "minExamples": 1})

    started = time.perf_counter()
    prepared = prepare_data(
        path,
        None,
        spec,
        seed=1,
        max_seq_length=256,
        out_dir=tmp_path / "out",
        count_tokens=lambda messages: len(tokenize_chat(tokenizer, messages).input_ids),
    )

    assert time.perf_counter() - started < 2.0
    assert prepared.report.inputs[0].dropped[DropReason.TOO_MANY_MESSAGES].count == 1


@settings(
    max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.text() | JSON_VALUES.map(json.dumps) | MESSAGES.map(lambda m: json.dumps({"messages": m})),
        max_size=12,
    )
)
def test_prepare_data_accepts_or_rejects_any_file(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(
        "\n".join(lines + [json.dumps(row) for row in GOOD[:2]]) + "\n",
        encoding="utf-8",
        errors="surrogatepass",
    )
    spec = DataSpec.model_validate({"trainUri": "file:///train.jsonl", "minExamples": 1})
    try:
        prepare_data(path, None, spec, seed=1, max_seq_length=64, out_dir=tmp_path / "out", count_tokens=len)
    except DataRejected as err:
        err.report.to_json().encode("utf-8")
