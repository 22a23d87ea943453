"""Model fixtures (the builders live in ftjob_cli.demo.models, shared with the README's demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ftjob_cli.demo.models import smollm2_dir, smollm2_tokenizer_dir, tiny_model_dir


@pytest.fixture(scope="session")
def smollm2_tokenizer_path() -> Path:
    """Folder with SmolLM2's tokenizer and chat template only (fast)."""
    return smollm2_tokenizer_dir()


@pytest.fixture(scope="session")
def smollm2_model_path() -> Path:
    """Folder with SmolLM2-135M-Instruct (float32); the first build takes about half a minute."""
    return smollm2_dir()


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a random two-layer Llama that uses SmolLM2's tokenizer (seed 0)."""
    return tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))


def tiny_llama_config(*, layers: int = 2, hidden: int = 64, vocab: int = 256) -> Any:
    """A Llama shape small enough to build in milliseconds (random weights; heads of 16 units)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 3 // 2,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 16,
        num_key_value_heads=hidden // 32,
    )
