"""Greedy generation for a batch of chat prompts, with the tuned model or the base model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .samples import EvalSample


def _stop_token_ids(tokenizer: Any) -> list[int]:
    """EOS plus the chat template's end-of-turn token when it has a distinct one (e.g. `<|im_end|>`)."""
    ids = {tokenizer.eos_token_id}
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return sorted(i for i in ids if i is not None)


def generate_answers(
    model: Any, tokenizer: Any, samples: Sequence[EvalSample], *, max_new_tokens: int, batch_size: int = 8
) -> list[str]:
    """One greedy answer per sample, decoded without special tokens."""
    import torch

    stop_ids = _stop_token_ids(tokenizer)
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
    answers: list[str] = []
    try:
        model.eval()
        for start in range(0, len(samples), batch_size):
            batch = samples[start : start + batch_size]
            texts = [
                tokenizer.apply_chat_template(s.prompt, tokenize=False, add_generation_prompt=True)
                for s in batch
            ]
            inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
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
            new_tokens = output[:, inputs["input_ids"].shape[1] :]
            answers += [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = previous_side
    return answers
