"""The termination message fits the kubelet's 4 KiB by construction, and the operator reads it back.

A longer message is cut by the kubelet, the cut JSON does not parse, and the job showed Succeeded with no
results (a 712-character output prefix with a merged model made 4,658 bytes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftjob.api.status import Artifacts, DatasetStats, Metrics
from ftjob.api.uris import MAX_URI_LENGTH
from ftjob.contract import TERMINATION_MESSAGE_LIMIT, TerminationSummary
from ftjob_operator.observe import summary_of
from ftjob_trainer.run_context import Outputs

FUZZ = settings(max_examples=200, deadline=None, database=None)


def output_uri(length: int, char: str = "p") -> str:
    """An s3:// output prefix of exactly `length` characters."""
    head = "s3://bucket/"
    return head + char * (length - len(head))


def artifacts(uri: str) -> Artifacts:
    return Outputs(Path("/unused")).artifacts(uri, merged=True)


METRICS = Metrics(
    train_loss=0.056,
    eval_loss=0.0018,
    perplexity=1.0018,
    base_eval_loss=0.6342,
    tuned={"exactMatch": 1.0, "tokenF1": 1.0, "rougeL": 1.0, "jsonValid": 1.0},
    base={"exactMatch": 0.0, "tokenF1": 0.414, "rougeL": 0.397, "jsonValid": 0.042},
)
DATASET = DatasetStats(
    total_lines=367,
    train_examples=324,
    validation_examples=36,
    dropped=7,
    dropped_by_reason={"invalidJson": 1, "duplicate": 2, "missingTurn": 4},
)
LONGEST_METRICS = Metrics(
    train_loss=1e-300,
    tuned={f"{i:02d}" + "m" * 62: 1e-300 for i in range(32)},
    base={f"{i:02d}" + "m" * 62: 1e-300 for i in range(32)},
)


def succeeded(uri: str, message: str = "trained and evaluated", **fields: Any) -> TerminationSummary:
    return TerminationSummary(
        outcome="Succeeded",
        reason="TrainingSucceeded",
        message=message,
        metrics=fields.pop("metrics", METRICS),
        dataset=fields.pop("dataset", DATASET),
        artifacts=artifacts(uri),
        **fields,
    )


def read_back(summary: TerminationSummary) -> TerminationSummary:
    """Through the operator's own parser, as the kubelet hands the message over (cut at the limit)."""
    text = summary.to_message()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    kubelet_cut = text.encode()[:TERMINATION_MESSAGE_LIMIT].decode()
    terminated = {"exitCode": 0, "message": kubelet_cut}
    pod = {"status": {"containerStatuses": [{"name": "trainer", "state": {"terminated": terminated}}]}}
    parsed = summary_of(pod)
    assert parsed is not None, text[:200]
    assert (parsed.outcome, parsed.reason) == (summary.outcome, summary.reason)
    return parsed


def test_a_summary_that_fits_is_written_whole() -> None:
    summary = succeeded("s3://results/run/")
    assert read_back(summary) == summary


def test_the_issue_case_712_character_prefix_keeps_every_artifact() -> None:
    summary = succeeded(output_uri(712))
    summary.artifacts = Outputs(Path("/unused")).artifacts(output_uri(712), merged=False)
    assert len(summary.model_dump_json(by_alias=True, exclude_none=True)) > TERMINATION_MESSAGE_LIMIT
    parsed = read_back(summary)
    assert parsed.artifacts == summary.artifacts
    assert parsed.metrics is not None and parsed.metrics.tuned == METRICS.tuned


def test_with_a_merged_model_too_that_artifact_goes_first() -> None:
    summary = succeeded(output_uri(712))
    parsed = read_back(summary)
    assert parsed.artifacts is not None and summary.artifacts is not None
    assert parsed.artifacts.merged_model is None
    assert parsed.artifacts == summary.artifacts.model_copy(update={"merged_model": None})


def test_longest_output_uri_keeps_the_adapter_and_manifest() -> None:
    summary = succeeded(output_uri(MAX_URI_LENGTH), message="x" * 30_000, metrics=LONGEST_METRICS)
    parsed = read_back(summary)
    assert parsed.artifacts is not None and summary.artifacts is not None
    assert parsed.artifacts.adapter == summary.artifacts.adapter
    assert parsed.artifacts.manifest == summary.artifacts.manifest
    assert parsed.message.startswith("x" * 200) and parsed.message.endswith("…")


@pytest.mark.parametrize("char", ["é", "€", "😀"], ids=["2-byte", "3-byte", "4-byte"])
def test_multi_byte_characters_count_as_bytes(char: str) -> None:
    summary = succeeded(output_uri(MAX_URI_LENGTH, char), message=char * 10_000, metrics=LONGEST_METRICS)
    parsed = read_back(summary)
    assert parsed.message.startswith(char)


def test_a_long_failure_message_is_cut_not_lost() -> None:
    summary = TerminationSummary(
        outcome="Failed",
        reason="DataInvalid",
        message="only 3 usable training examples remain; " + "problem; " * 2000,
        dataset=DatasetStats(dropped_by_reason={f"reason{i}": i for i in range(32)}),
        resumed_from_step=12,
    )
    parsed = read_back(summary)
    assert parsed.message.startswith("only 3 usable training examples remain; problem;")
    assert parsed.dataset is not None and parsed.resumed_from_step == 12


def test_detail_goes_first_in_the_documented_order() -> None:
    # Just too long with the per-reason counts, short enough without them: only they go.
    base = succeeded("s3://results/run/", message="")
    without_counts = base.model_copy(deep=True)
    assert without_counts.dataset is not None
    without_counts.dataset.dropped_by_reason = {}
    room = TERMINATION_MESSAGE_LIMIT - len(without_counts.to_message().encode())
    summary = succeeded("s3://results/run/", message="m" * room)
    assert len(summary.model_dump_json(by_alias=True, exclude_none=True)) > TERMINATION_MESSAGE_LIMIT
    parsed = read_back(summary)
    assert parsed.dataset is not None and parsed.dataset.dropped_by_reason == {}
    assert parsed.message == summary.message and parsed.metrics == summary.metrics


def test_a_log_tail_instead_of_a_summary_parses_as_none() -> None:
    # terminationMessagePolicy FallbackToLogsOnError: the message may be any text, even deep JSON.
    for text in ["[" * 4096, '{"outcome": "Failed"', "Traceback (most recent call last):", "[1, 2]", "null"]:
        assert TerminationSummary.parse(text) is None


TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=3000)


@FUZZ
@given(
    st.integers(20, MAX_URI_LENGTH),
    st.sampled_from(["p", "é", "😀", "\x01", '"']),
    TEXT,
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=64),
    st.booleans(),
    st.integers(0, 2**63 - 1) | st.none(),
)
def test_any_summary_fits_and_reads_back(
    uri_length: int, char: str, message: str, reason: str, long_metrics: bool, step: int | None
) -> None:
    summary = TerminationSummary(
        outcome="Failed",
        reason=reason,
        message=message * 10,
        metrics=LONGEST_METRICS if long_metrics else METRICS,
        dataset=DATASET,
        artifacts=artifacts(output_uri(uri_length, char)),
        resumed_from_step=step,
    )
    parsed = read_back(summary)
    # Whatever was kept is kept exactly, except a message cut short (marked with an ellipsis).
    kept = json.loads(summary.to_message())
    assert parsed.model_dump(by_alias=True, exclude_none=True, mode="json") == kept
    assert summary.message.startswith(parsed.message.removesuffix("…"))
