"""Padding-free batches: sequences laid end to end in one row never attend to each other, so the logits
and the loss equal those of the same sequences run one by one, or padded (the recipe's batches).

Runs the CPU attention implementations (SDPA and eager); FlexAttention, which the trainer uses on GPUs,
builds its mask from the same `position_ids` through the same transformers masking code."""

from __future__ import annotations

import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

LENGTHS = (7, 12, 5)


def tiny_model(attention: str) -> MistralForCausalLM:
    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=None,
        # As in training (modeling.load_model): with a cache, transformers ignores packed position ids.
        use_cache=False,
    )
    config._attn_implementation = attention
    model: MistralForCausalLM = MistralForCausalLM(config).eval()
    return model


def examples() -> list[dict[str, list[int]]]:
    generator = torch.Generator().manual_seed(1)
    out = []
    for length in LENGTHS:
        ids = torch.randint(3, 97, (length,), generator=generator).tolist()
        labels = [-100] * (length // 2) + ids[
            length // 2 :
        ]  # loss on the second half, like an assistant turn
        out.append({"input_ids": ids, "labels": labels})
    return out


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_sequences_do_not_attend_to_each_other(attention: str) -> None:
    model = tiny_model(attention)
    rows = examples()
    flat = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    assert flat["input_ids"].shape == (1, sum(LENGTHS)) and "attention_mask" not in flat
    with torch.no_grad():
        packed = model(input_ids=flat["input_ids"], position_ids=flat["position_ids"]).logits[0]
        alone = torch.cat([model(input_ids=torch.tensor([r["input_ids"]])).logits[0] for r in rows])
        # Control: the same row read as one long sequence mixes the examples (the test can fail).
        mixed = model(input_ids=flat["input_ids"]).logits[0]
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(mixed[LENGTHS[0] :], alone[LENGTHS[0] :], atol=1e-3)


def test_padding_free_loss_equals_the_padded_batch_loss() -> None:
    model = tiny_model("sdpa")
    rows = examples()
    flat = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    padded = DataCollatorForLanguageModeling(pad_token_id=0)(rows)
    with torch.no_grad():
        loss_flat = model(
            input_ids=flat["input_ids"], position_ids=flat["position_ids"], labels=flat["labels"]
        ).loss
        loss_padded = model(
            input_ids=padded["input_ids"], attention_mask=padded["attention_mask"], labels=padded["labels"]
        ).loss
    # Same tokens in the loss: the flattened row masks each example's first label, which a padded row never
    # predicts anyway (labels are shifted by one).
    assert int((flat["labels"] != -100).sum()) - len(LENGTHS) <= int((padded["labels"] != -100).sum())
    torch.testing.assert_close(loss_flat, loss_padded, rtol=1e-5, atol=1e-5)
