"""How trl 1.16's SFTTrainer consumes a dataset pre-tokenized by chat_masks.

What trl does with `input_ids` + `assistant_masks` columns (trl/trainer/sft_trainer.py, `_prepare_dataset`):
the dataset counts as processed because it has `input_ids`, so nothing is re-tokenized; `assistant_masks`
is folded into a `labels` column (-100 where the mask is 0) and dropped, whatever `assistant_only_loss`
says; sequences are cut to `max_length` (keep_start) or, with `packing=True`, packed best-fit-decreasing
into rows of `max_length` in padding-free batches. The collator then only pads (or concatenates) `labels`.

These tests train the tiny model for two LoRA steps and check, with a forward pre-hook on the model,
that the labels it receives are -100 exactly outside the assistant masks.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from ftjob_trainer.chat_masks import TokenizedChat, tokenize_chat

transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")
peft = pytest.importorskip("peft")
trl = pytest.importorskip("trl")
torch = pytest.importorskip("torch")

MAX_LENGTH = 96
IGNORE = -100


def conversations() -> list[list[dict[str, str]]]:
    """Distinct conversations (the batch check finds each one by its ids) of varied lengths and turns."""
    convs: list[list[dict[str, str]]] = []
    for i in range(6):
        conv = [
            {"role": "user", "content": f"What is {i} plus {i + 1}?"},
            {"role": "assistant", "content": f"{i} plus {i + 1} is {2 * i + 1}."},
        ]
        if i % 2:
            conv += [
                {"role": "user", "content": "Are you sure?"},
                {"role": "assistant", "content": f"Yes, {2 * i + 1}."},
            ]
        convs.append(conv)
    # Longer than MAX_LENGTH, with its first reply inside the limit: exercises truncation.
    convs.append(
        [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
            {
                "role": "user",
                "content": "Now list every colour of the rainbow, one per line, with a comment. " * 3,
            },
            {"role": "assistant", "content": "Red\nOrange\nYellow\nGreen\nBlue\nIndigo\nViolet"},
        ]
    )
    return convs


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path: Path) -> Any:
    return transformers.AutoTokenizer.from_pretrained(tiny_model_path)


@pytest.fixture(scope="module")
def chats(tokenizer: Any) -> list[TokenizedChat]:
    # Left untruncated on purpose: truncation to MAX_LENGTH is trl's job in these tests.
    result = [tokenize_chat(tokenizer, conv) for conv in conversations()]
    assert any(len(chat.input_ids) > MAX_LENGTH for chat in result)
    return result


def sft_config(output_dir: Path, *, packing: bool, **overrides: Any) -> Any:
    return trl.SFTConfig(
        output_dir=str(output_dir),
        max_steps=2,
        # Two steps of four cover the seven conversations (six rows once packed) exactly once.
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        learning_rate=1e-3,
        max_length=MAX_LENGTH,
        packing=packing,
        # The defaults would be bf16=True (crawls on CPUs without native bf16); say fp32 explicitly.
        bf16=False,
        fp16=False,
        use_cpu=True,
        activation_checkpointing=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        seed=0,
        **overrides,
    )


def lora_config() -> Any:
    return peft.LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
    )


class LabelRecorder:
    """Forward pre-hook keeping what the model is called with during training."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if module.training:
            self.calls.append(
                {key: value.detach().clone() for key, value in kwargs.items() if torch.is_tensor(value)}
            )


def expected_labels(chat: TokenizedChat) -> list[int]:
    ids, mask = chat.input_ids[:MAX_LENGTH], chat.assistant_masks[:MAX_LENGTH]
    return [token if bit else IGNORE for token, bit in zip(ids, mask, strict=True)]


def train_and_record(
    tiny_model_path: Path, chats: list[TokenizedChat], config: Any
) -> tuple[list[dict[str, Any]], int]:
    """Train two steps; return the tensors of each training forward and the prepared dataset's row count."""
    dataset = datasets.Dataset.from_list([chat.as_features() for chat in chats])
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_path)
    trainer = trl.SFTTrainer(
        model=str(tiny_model_path),
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(),
    )
    recorder = LabelRecorder()
    handle = trainer.model.register_forward_pre_hook(recorder, with_kwargs=True)
    try:
        trainer.train()
    finally:
        handle.remove()
    assert trainer.state.global_step == 2
    assert all(
        torch.isfinite(torch.tensor(log["loss"])) for log in trainer.state.log_history if "loss" in log
    )
    return recorder.calls, len(trainer.train_dataset)


def test_labels_are_masked_outside_assistant_turns_without_packing(
    tiny_model_path: Path, chats: list[TokenizedChat], tmp_path: Path
) -> None:
    by_ids = {tuple(chat.input_ids[:MAX_LENGTH]): chat for chat in chats}
    calls, rows = train_and_record(tiny_model_path, chats, sft_config(tmp_path, packing=False))

    assert rows == len(chats)
    assert len(calls) == 2
    seen = 0
    for call in calls:
        assert "position_ids" not in call
        for ids, attention, labels in zip(
            call["input_ids"], call["attention_mask"], call["labels"], strict=True
        ):
            length = int(attention.sum())
            chat = by_ids[tuple(ids[:length].tolist())]  # a KeyError means trl changed the ids
            assert labels[:length].tolist() == expected_labels(chat)
            assert (labels[length:] == IGNORE).all()
            assert (attention[length:] == 0).all()
            seen += 1
    assert seen == len(chats)


def test_labels_are_masked_outside_assistant_turns_with_packing(
    tiny_model_path: Path, chats: list[TokenizedChat], tmp_path: Path
) -> None:
    by_ids = {tuple(chat.input_ids[:MAX_LENGTH]): chat for chat in chats}
    calls, rows = train_and_record(tiny_model_path, chats, sft_config(tmp_path, packing=True))

    # Best-fit decreasing into rows of 96 tokens: two 48-token conversations share a row.
    assert rows == len(chats) - 1
    assert len(calls) == 2
    seen = 0
    for call in calls:
        # Padding-free: one row of concatenated sequences, no attention mask, positions restarting at 0.
        assert "attention_mask" not in call
        (ids,), (labels,), (positions,) = call["input_ids"], call["labels"], call["position_ids"]
        starts = [*(positions == 0).nonzero().flatten().tolist(), len(ids)]
        assert len(starts) > 2, "expected several sequences packed into one row"
        for start, end in itertools.pairwise(starts):
            chat = by_ids[tuple(ids[start:end].tolist())]
            assert labels[start:end].tolist() == expected_labels(chat)
            seen += 1
    assert seen == len(chats)


def test_assistant_only_loss_flag_refuses_a_pretokenized_dataset(
    tiny_model_path: Path, chats: list[TokenizedChat], tmp_path: Path
) -> None:
    # The flag asks trl to build masks from `{% generation %}` markers, which needs a `messages` column:
    # for pre-tokenized data it must stay False, and the masks apply anyway.
    dataset = datasets.Dataset.from_list([chat.as_features() for chat in chats])
    with pytest.raises(ValueError, match="dataset is not conversational"):
        trl.SFTTrainer(
            model=str(tiny_model_path),
            args=sft_config(tmp_path, packing=False, assistant_only_loss=True),
            train_dataset=dataset,
            processing_class=transformers.AutoTokenizer.from_pretrained(tiny_model_path),
            peft_config=lora_config(),
        )
