"""The data report: what was read, kept and dropped (with samples), the split and the token lengths.

It is uploaded next to the adapter whether the data was accepted or not, so a user can fix the file
from the line numbers without rerunning anything.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable
from typing import Final, Literal

from pydantic import Field

from ftjob.api.data import CleaningSpec
from ftjob.api.meta import ApiModel
from ftjob.api.status import DatasetStats

from .checks import Drop, DropReason

EXCERPT_CHARS: Final = 200
SAMPLES_PER_REASON: Final = 3
PERCENTILES: Final = (50, 90, 95, 99)

InputRole = Literal["train", "validation"]


class DropSample(ApiModel):
    """One dropped example, enough to find and fix it."""

    line: int = Field(ge=1)
    """1-based line number in the input file."""
    excerpt: str = Field(max_length=EXCERPT_CHARS)
    """The start of the line as written."""
    detail: str
    """What exactly is wrong."""


class DropSummary(ApiModel):
    count: int = Field(default=0, ge=0)
    samples: list[DropSample] = Field(default_factory=list, max_length=SAMPLES_PER_REASON)
    """The first few examples dropped for this reason."""


class InputReport(ApiModel):
    """One input file."""

    role: InputRole
    name: str
    """Name of the file read, without its directory."""
    sha256: str
    """Digest of the file as read, for provenance."""
    size_bytes: int = Field(ge=0)
    lines: int = Field(ge=0)
    """Non-blank lines read; blank lines are skipped and not counted as dropped."""
    blank_lines: int = Field(ge=0)
    kept: int = Field(ge=0)
    """Lines that passed every check."""
    dropped: dict[DropReason, DropSummary] = Field(default_factory=dict)
    """Dropped lines per reason, in the order the checks run; only reasons that occurred."""

    @property
    def dropped_total(self) -> int:
        return sum(summary.count for summary in self.dropped.values())


class TokenStats(ApiModel):
    """Lengths in tokens of the kept examples, chat template included (nearest-rank percentiles)."""

    count: int = Field(ge=1)
    total: int = Field(ge=0)
    min: int = Field(ge=0)
    p50: int = Field(ge=0)
    p90: int = Field(ge=0)
    p95: int = Field(ge=0)
    p99: int = Field(ge=0)
    max: int = Field(ge=0)
    max_seq_length: int = Field(ge=1)
    over_max_seq_length: int = Field(ge=0)
    """Examples longer than `maxSeqLength`: they are truncated, not dropped."""


class DataReport(ApiModel):
    """Everything the data checks found."""

    inputs: list[InputReport]
    train_examples: int = Field(ge=0)
    validation_examples: int = Field(ge=0)
    validation_source: Literal["file", "split"]
    """`file`: the validation file was used; `split`: held out from the cleaned training data."""
    validation_split: float | None = None
    """The held-out fraction, when split."""
    seed: int
    min_examples: int = Field(ge=1)
    cleaning: CleaningSpec
    """The checks as configured."""
    train_tokens: TokenStats | None = None
    """None when no tokenizer was given or no training example remains."""
    validation_tokens: TokenStats | None = None
    error: str | None = None
    """Why the data was rejected; None when it was accepted."""

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)

    def dropped_by_reason(self) -> dict[DropReason, int]:
        """All inputs together, in check order."""
        totals: Counter[DropReason] = Counter()
        for item in self.inputs:
            totals.update({reason: summary.count for reason, summary in item.dropped.items()})
        return {reason: totals[reason] for reason in DropReason if totals[reason]}

    def top_reasons(self, limit: int = 3) -> str:
        ranked = sorted(self.dropped_by_reason().items(), key=lambda item: -item[1])[:limit]
        return ", ".join(f"{reason} {count}" for reason, count in ranked)

    def to_dataset_stats(self) -> DatasetStats:
        by_reason = self.dropped_by_reason()
        train_lines = sum(item.lines for item in self.inputs if item.role == "train")
        truncated = sum(
            stats.over_max_seq_length for stats in (self.train_tokens, self.validation_tokens) if stats
        )
        return DatasetStats(
            total_lines=train_lines,
            train_examples=self.train_examples,
            validation_examples=self.validation_examples,
            dropped=sum(by_reason.values()),
            dropped_by_reason={str(reason): count for reason, count in by_reason.items()},
            truncated=truncated,
        )

    def to_markdown(self) -> str:
        sections = [_summary(self), _inputs_table(self.inputs), _drops(self.inputs), _tokens_table(self)]
        return "\n\n".join(section for section in sections if section) + "\n"


class DropTally:
    """Counts and samples of one input's dropped lines, filled while streaming."""

    def __init__(self) -> None:
        self._summaries: dict[DropReason, DropSummary] = {}

    def record(self, line: int, text: str, drop: Drop) -> None:
        summary = self._summaries.setdefault(drop.reason, DropSummary())
        summary.count += 1
        if len(summary.samples) < SAMPLES_PER_REASON:
            summary.samples.append(DropSample(line=line, excerpt=excerpt(text), detail=drop.detail))

    def count(self, reason: DropReason) -> None:
        """`record` for a drop that does not become a sample (`wants_sample` said no)."""
        self._summaries.setdefault(reason, DropSummary()).count += 1

    def wants_sample(self, reason: DropReason) -> bool:
        """Whether the next drop for `reason` becomes a sample (and so needs the line's text)."""
        summary = self._summaries.get(reason)
        return summary is None or len(summary.samples) < SAMPLES_PER_REASON

    def summaries(self) -> dict[DropReason, DropSummary]:
        return {reason: self._summaries[reason] for reason in DropReason if reason in self._summaries}


def excerpt(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


def token_stats(lengths: array[int], max_seq_length: int) -> TokenStats | None:
    if not lengths:
        return None
    ordered = sorted(lengths)
    # Integer arithmetic: 0.9 * 10 style products may land just above a whole number and shift a rank.
    at = {p: ordered[(p * len(ordered) + 99) // 100 - 1] for p in PERCENTILES}
    return TokenStats(
        count=len(ordered),
        total=sum(ordered),
        min=ordered[0],
        p50=at[50],
        p90=at[90],
        p95=at[95],
        p99=at[99],
        max=ordered[-1],
        max_seq_length=max_seq_length,
        over_max_seq_length=sum(1 for length in ordered if length > max_seq_length),
    )


# --- Markdown ----------------------------------------------------------------------------------------


def _summary(report: DataReport) -> str:
    if report.validation_source == "split":
        held_out = (
            f"held out from the cleaned training data ({report.validation_split:.0%}, seed {report.seed})"
        )
    else:
        held_out = "from the validation file"
    lines = [
        "# Data report",
        "",
        f"**{report.train_examples}** training examples, **{report.validation_examples}** validation "
        f"examples {held_out}; minExamples is {report.min_examples}.",
    ]
    if report.error:
        lines += ["", f"**Rejected:** {report.error}"]
    return "\n".join(lines)


def _inputs_table(inputs: Iterable[InputReport]) -> str:
    rows = [
        "## Inputs",
        "",
        "| Role | File | Lines | Kept | Dropped | sha256 |",
        "|---|---|---:|---:|---:|---|",
    ]
    rows += [
        f"| {item.role} | {_cell(item.name)} | {item.lines} | {item.kept} | {item.dropped_total} | "
        f"`{item.sha256}` |"
        for item in inputs
    ]
    return "\n".join(rows)


def _drops(inputs: Iterable[InputReport]) -> str:
    groups: list[str] = []
    for item in inputs:
        for reason, summary in item.dropped.items():
            samples = [
                f"- line {sample.line}: {_cell(sample.detail)}<br>{_code(sample.excerpt)}"
                for sample in summary.samples
            ]
            groups.append("\n".join([f"### {item.role}: `{reason}` ({summary.count})", "", *samples]))
    return "\n\n".join(["## Dropped", *(groups or ["Nothing was dropped."])])


def _tokens_table(report: DataReport) -> str:
    stats = [
        (name, s)
        for name, s in (("train", report.train_tokens), ("validation", report.validation_tokens))
        if s
    ]
    if not stats:
        return ""
    limit = stats[0][1].max_seq_length
    rows = [
        "## Tokens",
        "",
        f"| Split | Examples | Min | p50 | p90 | p95 | p99 | Max | Over maxSeqLength ({limit}) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows += [
        f"| {name} | {s.count} | {s.min} | {s.p50} | {s.p90} | {s.p95} | {s.p99} | {s.max} | {s.over_max_seq_length} |"
        for name, s in stats
    ]
    return "\n".join(rows)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table row or list item."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")


def _code(text: str) -> str:
    """An inline code span that survives backticks inside the excerpt."""
    fence = "`" * (_longest_backtick_run(text) + 1)
    padded = f" {text} " if text.startswith("`") or text.endswith("`") else text
    return f"{fence}{padded}{fence}"


def _longest_backtick_run(text: str) -> int:
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return longest
