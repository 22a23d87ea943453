"""Greedy generation for a batch of chat prompts, with the tuned model or the base model.

The budget of new tokens is what makes evaluation fast or slow: a base model that has not learnt the
task rarely stops on its own, so every one of its answers runs to the limit. The default limit therefore
follows the references (`generation_budget`), and answers the limit cut are counted (`Answer.truncated`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .samples import EvalSample

BUDGET_MARGIN_FRACTION: Final = 0.25
BUDGET_MARGIN_TOKENS: Final = 16
"""A right answer may be worded a little longer than the reference (another number format, a space);
a quarter plus 16 tokens leaves room for that, and the end-of-turn token, without letting a rambling
model run on."""


@dataclass(frozen=True)
class Answer:
    text: str
    new_tokens: int
    """Tokens generated before the end-of-turn token (or before the limit)."""
    truncated: bool
    """Stopped by the token limit rather than by the model: the answer may be cut short."""


def generation_budget(reference_tokens: Sequence[int], configured: int | None) -> int:
    """New tokens per answer: `configured` when the spec sets it, else the longest reference plus a margin."""
    if configured is not None:
        return configured
    longest = max(reference_tokens, default=0)
    return math.ceil(longest * (1 + BUDGET_MARGIN_FRACTION)) + BUDGET_MARGIN_TOKENS


def stop_token_ids(tokenizer: Any) -> list[int]:
    """EOS plus the chat template's end-of-turn token when it has a distinct one (e.g. `<|im_end|>`)."""
    ids = {tokenizer.eos_token_id}
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return sorted(i for i in ids if i is not None)


def split_generated(row: Sequence[int], stop_ids: Sequence[int], max_new_tokens: int) -> tuple[int, bool]:
    """(tokens before the first stop token, truncated) for one row of generated ids (pure).

    Rows of a batch that finished early are padded after their stop token, so only the first stop token
    counts; a row with none ran to the limit."""
    stops = set(stop_ids)
    for position, token in enumerate(row):
        if token in stops:
            return position, False
    return len(row), len(row) >= max_new_tokens


def length_order(lengths: Sequence[int]) -> list[int]:
    """Indices, longest prompt first: a batch of similar lengths wastes little on padding, and the
    longest batch first means a memory problem shows at once (pure)."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


def generate_answers(
    model: Any,
    tokenizer: Any,
    samples: Sequence[EvalSample],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> list[Answer]:
    """One greedy answer per sample (in the samples' order), decoded without special tokens.

    `on_batch(n)` is called after each batch with the number of answers it produced."""
    import torch

    stop_ids = stop_token_ids(tokenizer)
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
    texts = [
        tokenizer.apply_chat_template(s.prompt, tokenize=False, add_generation_prompt=True) for s in samples
    ]
    lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    answers: dict[int, Answer] = {}
    try:
        model.eval()
        order = length_order(lengths)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            inputs = tokenizer(
                [texts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False
            )
            inputs = {k: v.to(model.device) for k, v in inputs.items()}
            with torch.inference_mode():
                output = model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=stop_ids,
                    pad_token_id=tokenizer.pad_token_id,
                    use_cache=True,
                )
            new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
            for index, row in zip(batch, new_tokens, strict=True):
                count, truncated = split_generated(row, stop_ids, max_new_tokens)
                text = tokenizer.decode(row[:count], skip_special_tokens=True).strip()
                answers[index] = Answer(text=text, new_tokens=count, truncated=truncated)
            if on_batch is not None:
                on_batch(len(batch))
    finally:
        tokenizer.padding_side = previous_side
    return [answers[i] for i in range(len(samples))]
