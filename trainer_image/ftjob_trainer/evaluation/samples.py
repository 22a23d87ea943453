"""Which validation examples the generation metrics use, and what the model is asked."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EvalSample:
    prompt: list[dict[str, str]]
    """The conversation up to (not including) the last assistant turn."""
    reference: str
    """The last assistant turn: what a perfect model answers."""


def to_sample(messages: list[dict[str, str]]) -> EvalSample:
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return EvalSample(prompt=messages[:last], reference=messages[last]["content"])


def select_samples(validation_jsonl: Path, max_samples: int, seed: int) -> list[EvalSample]:
    """A seeded sample of the cleaned validation file (already checked: every line has an assistant turn)."""
    with validation_jsonl.open() as handle:
        conversations = [json.loads(line)["messages"] for line in handle if line.strip()]
    random.Random(seed).shuffle(conversations)
    return [to_sample(messages) for messages in conversations[:max_samples]]
