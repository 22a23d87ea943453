"""Assistant masks derived from chat templates, checked on SmolLM2's tokenizer (no model needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ftjob.contract import ExitCode
from ftjob_trainer.chat_masks import MAX_MESSAGES, ChatTemplateUnsupported, assistant_spans, tokenize_chat

transformers = pytest.importorskip("transformers")

IM_END = "<|im_end|>"

CONVERSATION: list[dict[str, str]] = [
    {"role": "system", "content": "You answer in one sentence."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome."},
]

# SmolLM2's template with `{% generation %}` markers around what chat_masks treats as the turn (reply and
# <|im_end|>, not the newline after it). It renders the same text, so transformers' own assistant mask
# must equal ours.
SMOLLM2_WITH_GENERATION_MARKERS = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Other template shapes with no generation markers: a Llama 3 layout (tested with its markers added to the
# tokenizer as special tokens, as they are in Llama 3's own) and a Mistral layout whose assistant turns
# start with no header at all and end with the tokenizer's eos token.
LLAMA3_MARKERS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
LLAMA3_STYLE = (
    "{{ '<|begin_of_text|>' }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
MISTRAL_STYLE = (
    "{{ '<s>' }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)

# Earlier assistant turns render differently from the last one (as Qwen3's reasoning templates do).
NOT_PREFIX_CONSISTENT = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' and not loop.last %}(earlier reply){% else %}{{ message['content'] }}"
    "{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
REWRITES_REPLIES = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] | upper }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer_path: Path) -> Any:
    return transformers.AutoTokenizer.from_pretrained(smollm2_tokenizer_path)


def masked_runs(tokenizer: Any, input_ids: Sequence[int], mask: Sequence[int]) -> list[str]:
    """Decode each maximal run of masked tokens."""
    runs: list[list[int]] = []
    previous = 0
    for token_id, bit in zip(input_ids, mask, strict=True):
        if bit and not previous:
            runs.append([])
        if bit:
            runs[-1].append(token_id)
        previous = bit
    return [tokenizer.decode(run) for run in runs]


def test_mask_covers_each_reply_and_its_end_of_turn_token(tokenizer: Any) -> None:
    chat = tokenize_chat(tokenizer, CONVERSATION)

    assert masked_runs(tokenizer, chat.input_ids, chat.assistant_masks) == [
        f"The capital of France is Paris.{IM_END}",
        f"Rome.{IM_END}",
    ]
    assert chat.attention_mask == [1] * len(chat.input_ids)
    assert not chat.truncated


def test_prompt_tokens_stay_outside_the_mask(tokenizer: Any) -> None:
    chat = tokenize_chat(tokenizer, CONVERSATION)
    unmasked = tokenizer.decode(
        [t for t, bit in zip(chat.input_ids, chat.assistant_masks, strict=True) if not bit]
    )

    # Everything but the two turns: system and user turns, every assistant header (the generation prompt)
    # and the newline the template prints after each <|im_end|>.
    assert unmasked == (
        "<|im_start|>system\nYou answer in one sentence.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n\n"
        "<|im_start|>user\nAnd of Italy?<|im_end|>\n"
        "<|im_start|>assistant\n\n"
    )


def test_ids_equal_the_templates_own_tokenization(tokenizer: Any) -> None:
    chat = tokenize_chat(tokenizer, CONVERSATION)
    expected = tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True)["input_ids"]

    assert chat.input_ids == list(expected)


def test_smollm2_template_has_no_generation_markers_yet_masks_match_transformers(tokenizer: Any) -> None:
    assert "{% generation %}" not in tokenizer.chat_template
    conversation = CONVERSATION[1:]  # no system message: the template injects its default one
    ours = tokenize_chat(tokenizer, conversation)
    native = tokenizer.apply_chat_template(
        conversation,
        chat_template=SMOLLM2_WITH_GENERATION_MARKERS,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )

    assert list(native["input_ids"]) == ours.input_ids
    assert list(native["assistant_masks"]) == ours.assistant_masks
    assert "SmolLM" in tokenizer.decode(ours.input_ids)


def test_llama3_layout_without_generation_markers(smollm2_tokenizer_path: Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2_tokenizer_path)
    tokenizer.add_special_tokens({"additional_special_tokens": LLAMA3_MARKERS})
    chat = tokenize_chat(tokenizer, CONVERSATION, chat_template=LLAMA3_STYLE)

    assert masked_runs(tokenizer, chat.input_ids, chat.assistant_masks) == [
        "The capital of France is Paris.<|eot_id|>",
        "Rome.<|eot_id|>",
    ]


def test_mistral_layout_without_an_assistant_header(tokenizer: Any) -> None:
    chat = tokenize_chat(tokenizer, CONVERSATION, chat_template=MISTRAL_STYLE)

    assert masked_runs(tokenizer, chat.input_ids, chat.assistant_masks) == [
        f"The capital of France is Paris.{IM_END}",
        f"Rome.{IM_END}",
    ]


def test_token_straddling_the_end_of_a_turn_counts_as_inside(tokenizer: Any) -> None:
    # Without the Llama 3 markers as special tokens, the ">" that ends "<|eot_id|>" and the "<" that starts
    # the next "<|start_header_id|>" form one token.
    chat = tokenize_chat(tokenizer, CONVERSATION, chat_template=LLAMA3_STYLE)

    assert masked_runs(tokenizer, chat.input_ids, chat.assistant_masks) == [
        "The capital of France is Paris.<|eot_id|><",
        "Rome.<|eot_id|>",
    ]


@pytest.mark.parametrize(
    ("reply", "run"),
    [
        pytest.param("Ça va très bien 👍 – merci !", f"Ça va très bien 👍 – merci !{IM_END}", id="multibyte"),
        pytest.param("```python\nprint('hi')\n```", f"```python\nprint('hi')\n```{IM_END}", id="code"),
        # The header's newline and the reply's first space form one token, which straddles the turn's start.
        pytest.param("  two leading spaces\n", f"\n  two leading spaces\n{IM_END}", id="whitespace"),
    ],
)
def test_replies_decode_exactly(tokenizer: Any, reply: str, run: str) -> None:
    conversation = [{"role": "user", "content": "Say something."}, {"role": "assistant", "content": reply}]
    chat = tokenize_chat(tokenizer, conversation)

    assert masked_runs(tokenizer, chat.input_ids, chat.assistant_masks) == [run]


def test_spans_are_character_ranges_of_the_rendered_text(tokenizer: Any) -> None:
    text, spans = assistant_spans(tokenizer, CONVERSATION)

    assert text == tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert [text[start:end] for start, end in spans] == [
        f"The capital of France is Paris.{IM_END}",
        f"Rome.{IM_END}",
    ]


def test_truncation_keeps_the_start_and_cuts_the_mask_alike(tokenizer: Any) -> None:
    full = tokenize_chat(tokenizer, CONVERSATION)
    # Cut inside the first reply: two of its tokens survive.
    first_masked = full.assistant_masks.index(1)
    cut = first_masked + 2
    chat = tokenize_chat(tokenizer, CONVERSATION, max_length=cut)

    assert chat.input_ids == full.input_ids[:cut]
    assert chat.assistant_masks == full.assistant_masks[:cut]
    assert sum(chat.assistant_masks) == 2
    assert chat.attention_mask == [1] * cut
    assert chat.truncated
    assert chat.num_tokens_before_truncation == len(full.input_ids)


def test_truncation_before_any_reply_leaves_an_empty_mask(tokenizer: Any) -> None:
    full = tokenize_chat(tokenizer, CONVERSATION)
    chat = tokenize_chat(tokenizer, CONVERSATION, max_length=full.assistant_masks.index(1))

    assert chat.truncated
    assert not any(chat.assistant_masks)


def test_max_length_at_or_above_the_length_changes_nothing(tokenizer: Any) -> None:
    full = tokenize_chat(tokenizer, CONVERSATION)
    chat = tokenize_chat(tokenizer, CONVERSATION, max_length=len(full.input_ids))

    assert chat == full
    assert not chat.truncated


def test_max_length_must_be_positive(tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="max_length must be >= 1"):
        tokenize_chat(tokenizer, CONVERSATION, max_length=0)


def test_more_turns_than_the_cap_are_refused_before_any_rendering(tokenizer: Any) -> None:
    # Locating turns is quadratic in their number (1,600 messages took 4-19 s); the data checks drop such
    # examples, and this is the backstop.
    turns = [CONVERSATION[1], CONVERSATION[2]] * (MAX_MESSAGES // 2 + 1)
    with pytest.raises(ValueError, match=f"{len(turns)} messages, more than {MAX_MESSAGES}"):
        tokenize_chat(tokenizer, turns)
    tokenize_chat(tokenizer, turns, loss_on="all")  # one rendering: linear, so not capped


def test_loss_on_all_masks_every_token(tokenizer: Any) -> None:
    assistant_only = tokenize_chat(tokenizer, CONVERSATION)
    chat = tokenize_chat(tokenizer, CONVERSATION, loss_on="all", max_length=20)

    assert chat.input_ids == assistant_only.input_ids[:20]
    assert chat.assistant_masks == [1] * 20
    assert chat.truncated


def test_features_are_the_columns_sft_trainer_reads(tokenizer: Any) -> None:
    chat = tokenize_chat(tokenizer, CONVERSATION)

    assert chat.as_features() == {
        "input_ids": chat.input_ids,
        "attention_mask": chat.attention_mask,
        "assistant_masks": chat.assistant_masks,
    }


def test_template_that_rewrites_earlier_turns_is_refused(tokenizer: Any) -> None:
    with pytest.raises(ChatTemplateUnsupported, match="not prefix-consistent at message 2") as caught:
        tokenize_chat(tokenizer, CONVERSATION, chat_template=NOT_PREFIX_CONSISTENT)

    assert caught.value.exit_code == ExitCode.CONFIG_INVALID
    assert caught.value.reason == "ConfigInvalid"


def test_template_that_does_not_render_replies_verbatim_is_refused(tokenizer: Any) -> None:
    with pytest.raises(ChatTemplateUnsupported, match="does not render the reply of message 2 verbatim"):
        tokenize_chat(tokenizer, CONVERSATION, chat_template=REWRITES_REPLIES)


def test_loss_on_all_accepts_any_template(tokenizer: Any) -> None:
    chat = tokenize_chat(tokenizer, CONVERSATION, chat_template=NOT_PREFIX_CONSISTENT, loss_on="all")

    assert all(chat.assistant_masks)
    assert "(earlier reply)" in tokenizer.decode(chat.input_ids)
