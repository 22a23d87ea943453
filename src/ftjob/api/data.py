"""Training data: where it is and how it is cleaned before any GPU time is spent."""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from .meta import ApiModel
from .uris import DataUri

MAX_LINE_BYTES_CEILING: Final = 16 * 1024 * 1024
"""The trainer never holds a longer line in memory, whatever `maxLineBytes` says."""
MAX_MESSAGES_CEILING: Final = 512
"""The most messages per example `maxMessages` may allow: locating assistant turns renders the chat
template once per turn (time quadratic in turns: about 1.5 s for 512 messages on one CPU core)."""


class CleaningSpec(ApiModel):
    """The data checklist, applied to every line before training. Every dropped example is counted by
    reason in the data report."""

    drop_duplicates: bool = True
    """Drop examples whose conversation is identical to an earlier one after normalising case and
    whitespace."""
    drop_near_duplicates: bool = True
    """Drop examples whose conversation is nearly identical to an earlier one (word-shingle MinHash)."""
    near_duplicate_threshold: float = Field(default=0.9, ge=0.5, le=1.0)
    """Estimated Jaccard similarity at or above which two examples count as near-duplicates."""
    min_assistant_words: int = Field(default=1, ge=0, le=10000)
    """Drop examples whose assistant answer has fewer words than this."""
    min_user_chars: int = Field(default=1, ge=0, le=100000)
    """Drop examples whose user message is shorter than this many characters."""
    output_format: Literal["text", "json"] = "text"
    """`json`: every assistant answer must parse as JSON, and evaluation reports JSON validity."""
    max_messages: int = Field(default=128, ge=2, le=MAX_MESSAGES_CEILING)
    """Drop examples with more messages than this (`tooManyMessages`): finding the assistant turns takes time
    quadratic in the number of messages (about 1.5 s for 512 on one CPU core)."""
    max_line_bytes: int = Field(default=1024 * 1024, ge=1024, le=MAX_LINE_BYTES_CEILING)
    """Drop lines longer than this many bytes (`lineTooLong`) without reading them whole."""


class DataSpec(ApiModel):
    """Chat JSONL: one `{"messages": [{"role": ..., "content": ...}, ...]}` object per line."""

    train_uri: DataUri
    """Training data, `s3://bucket/key.jsonl` or `file:///path.jsonl`."""
    validation_uri: DataUri | None = None
    """Validation data. Exclusive with `validationSplit`; when both are absent, 10% of the training data
    is held out."""
    validation_split: float | None = Field(default=None, gt=0.0, le=0.5)
    """Fraction of the cleaned training data held out for validation, split with the training seed."""
    min_examples: int = Field(default=10, ge=1, le=10_000_000)
    """Fail with `DataInvalid` when fewer usable training examples than this remain after cleaning."""
    cleaning: CleaningSpec = Field(default_factory=CleaningSpec)
    """Checks that drop unusable examples."""

    @property
    def effective_validation_split(self) -> float:
        """The held-out fraction actually used when no validation file is given."""
        return 0.1 if self.validation_split is None else self.validation_split
