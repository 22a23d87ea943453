"""Tokenize a conversation with its chat template and mark the tokens the loss is computed on.

transformers can return an assistant mask itself (`return_assistant_tokens_mask=True`), but only for
templates that wrap assistant turns in `{% generation %}` markers, and most shipped templates (SmolLM2's
ChatML among them) have none. This module derives the mask from the template's own output instead:

- render the conversation once;
- for each assistant turn, render the conversation up to it with `add_generation_prompt=True` (where the
  turn starts) and up to and including it (where it ends): the characters in between are the turn;
- tokenize the full text once with offsets and mark the tokens that overlap a turn.

That costs one rendering per turn, each as long as the conversation so far: time quadratic in the number
of turns. The data checks drop examples with more than `cleaning.maxMessages` messages, and this module
refuses more than `MAX_MESSAGES`, so one example costs at most about a second.

That relies on the template being prefix-consistent: each of those partial renderings must be a prefix of
the next. ChatML, Llama 3, Gemma, Phi and Mistral templates are. Templates that render earlier turns
differently once the conversation goes on (Qwen3 drops earlier reasoning) are not; they raise
`ChatTemplateUnsupported` rather than produce a silently wrong mask.

What an assistant turn's span covers: the reply and the template's end-of-turn marker (`<|im_end|>`), not
the whitespace that the template prints after the marker. The model must learn to emit the marker, since
generation stops there; the newline after it is never generated, it is the separator before the next turn.
(trl's own training templates put that newline inside `{% generation %}`; either choice trains stopping.)

The output feeds trl's `SFTTrainer` as a pre-tokenized dataset: columns `input_ids` and `assistant_masks`,
which it folds into `labels` (-100 outside the mask). See tests/trainer/test_sft_masks.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ftjob.api.data import MAX_MESSAGES_CEILING
from ftjob_trainer.errors import ConfigInvalid

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

LossOn = Literal["assistant", "all"]
Message = Mapping[str, Any]

MAX_MESSAGES = MAX_MESSAGES_CEILING
"""The most messages `assistant_spans` accepts (see the module docstring)."""


class ChatTemplateUnsupported(ConfigInvalid):
    """The chat template cannot be split into turns (see the module docstring)."""


@dataclass(frozen=True)
class TokenizedChat:
    """One conversation as token ids, with the loss mask."""

    input_ids: list[int]
    attention_mask: list[int]
    assistant_masks: list[int]
    """1 on tokens the loss is computed on (assistant turns, or every token with `loss_on="all"`)."""
    num_tokens_before_truncation: int

    @property
    def truncated(self) -> bool:
        return self.num_tokens_before_truncation > len(self.input_ids)

    def as_features(self) -> dict[str, list[int]]:
        """The columns of a pre-tokenized dataset, named as trl's SFTTrainer expects them."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "assistant_masks": self.assistant_masks,
        }


def _render(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    *,
    add_generation_prompt: bool,
    chat_template: str | None,
) -> str:
    text = tokenizer.apply_chat_template(
        [dict(message) for message in messages],
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
        chat_template=chat_template,
    )
    if not isinstance(text, str):
        raise ChatTemplateUnsupported(f"the chat template rendered a {type(text).__name__}, not a string")
    return text


def _require_prefix(prefix: str, text: str, what: str, index: int) -> None:
    if not text.startswith(prefix):
        at = next((i for i, (a, b) in enumerate(zip(prefix, text, strict=False)) if a != b), len(text))
        raise ChatTemplateUnsupported(
            f"the chat template is not prefix-consistent at message {index}: {what} is not a prefix of the "
            f"conversation rendered further (they differ at character {at}: {prefix[at : at + 40]!r} vs "
            f"{text[at : at + 40]!r}), so assistant turns cannot be located; use a template that renders "
            "earlier turns identically whatever follows, or set loss_on to 'all'"
        )


def assistant_spans(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], *, chat_template: str | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """Render `messages` and return the text and the `[start, end)` character span of each assistant turn.

    Raises `ChatTemplateUnsupported` when the template is not prefix-consistent or does not render an
    assistant reply verbatim, and `ValueError` for more than `MAX_MESSAGES` messages.
    """
    if len(messages) > MAX_MESSAGES:
        raise ValueError(
            f"{len(messages)} messages, more than {MAX_MESSAGES}: locating assistant turns takes time "
            "quadratic in the number of turns (the data checks drop such examples first)"
        )
    full = _render(tokenizer, messages, add_generation_prompt=False, chat_template=chat_template)
    spans: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = _render(tokenizer, messages[:index], add_generation_prompt=True, chat_template=chat_template)
        through = _render(
            tokenizer, messages[: index + 1], add_generation_prompt=False, chat_template=chat_template
        )
        _require_prefix(before, through, "the prompt before this assistant turn", index)
        _require_prefix(through, full, "the conversation through this assistant turn", index)
        start = len(before)
        end = start + len(through[start:].rstrip())
        content = message.get("content")
        # A template that drops or rewrites the reply would otherwise yield a plausible-looking mask over
        # whatever it printed instead.
        if isinstance(content, str) and content.strip() not in full[start:end]:
            raise ChatTemplateUnsupported(
                f"the chat template does not render the reply of message {index} verbatim "
                f"(expected {content.strip()[:40]!r} in {full[start:end][:80]!r})"
            )
        if end > start:
            spans.append((start, end))
    return full, spans


def tokenize_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    *,
    loss_on: LossOn = "assistant",
    max_length: int | None = None,
    chat_template: str | None = None,
) -> TokenizedChat:
    """Tokenize a conversation (a list of `{"role", "content"}`) with the tokenizer's chat template.

    `tokenizer` is a fast Hugging Face tokenizer (offsets are needed). The ids equal those of
    `tokenizer.apply_chat_template(messages, tokenize=True)`: no special tokens are added beyond what the
    template prints. Sequences longer than `max_length` keep their first `max_length` tokens (as trl does);
    a conversation whose assistant turns all fall beyond it ends up with an all-zero mask, which the
    caller should count and drop.
    """
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be >= 1 (got {max_length})")
    if not getattr(tokenizer, "is_fast", False):
        raise ChatTemplateUnsupported(
            f"{type(tokenizer).__name__} is not a fast tokenizer; assistant masks need token offsets"
        )
    if loss_on == "all":
        text = _render(tokenizer, messages, add_generation_prompt=False, chat_template=chat_template)
        spans: list[tuple[int, int]] = []
    else:
        text, spans = assistant_spans(tokenizer, messages, chat_template=chat_template)

    # The template already printed every special token it wants (BOS included); adding them again would
    # double them for tokenizers that prepend a BOS.
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids: list[int] = list(encoding["input_ids"])
    offsets: list[tuple[int, int]] = [(int(s), int(e)) for s, e in encoding["offset_mapping"]]

    if loss_on == "all":
        mask = [1] * len(input_ids)
    else:
        # Tokens whose characters overlap a turn. A token straddling a turn's edge counts as inside: the
        # model has to emit it to produce the turn's text.
        mask = [0] * len(input_ids)
        span_index = 0
        for token_index, (tok_start, tok_end) in enumerate(offsets):
            while span_index < len(spans) and spans[span_index][1] <= tok_start:
                span_index += 1
            if span_index == len(spans):
                break
            span_start, span_end = spans[span_index]
            if tok_start < span_end and span_start < tok_end:
                mask[token_index] = 1

    total = len(input_ids)
    if max_length is not None and total > max_length:
        input_ids, mask = input_ids[:max_length], mask[:max_length]
    return TokenizedChat(
        input_ids=input_ids,
        attention_mask=[1] * len(input_ids),
        assistant_masks=mask,
        num_tokens_before_truncation=total,
    )
