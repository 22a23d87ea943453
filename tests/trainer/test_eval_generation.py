"""Batched generation on a real (tiny, random) model: answers in the samples' order, the budget respected and
truncation counted, progress reported per batch as `FTJOB_TASK` lines."""

from __future__ import annotations

import io
from pathlib import Path

from ftjob.task_progress import parse_task_line
from ftjob_trainer.evaluation.generation import generate_answers
from ftjob_trainer.evaluation.samples import EvalSample
from ftjob_trainer.progress import TaskProgress


def test_batched_answers_keep_order_respect_the_budget_and_report_progress(tiny_model_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_path))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_path))
    # Prompts of different lengths, so the length ordering and the left padding both matter.
    samples = [
        EvalSample(prompt=[{"role": "user", "content": "hi " * n}], reference="{}") for n in (1, 30, 5, 12, 2)
    ]
    stream = io.StringIO()
    task = TaskProgress("evaluating", "tuned model's answers", len(samples), "answers", stream=stream)
    tokenizer.padding_side = "right"

    answers = generate_answers(
        model, tokenizer, samples, max_new_tokens=6, batch_size=2, on_batch=task.advance
    )

    assert tokenizer.padding_side == "right"  # put back for whoever uses the tokenizer next
    assert len(answers) == 5
    # A random model never says end-of-turn: every answer runs to the limit, and says so.
    assert all(a.truncated and a.new_tokens == 6 for a in answers)
    alone = generate_answers(model, tokenizer, samples[1:2], max_new_tokens=6)
    assert alone[0].text == answers[1].text  # the second sample's answer is in the second place
    records = [parse_task_line(line) for line in stream.getvalue().splitlines()]
    counts = [(r.done, r.total) for r in records if r is not None]
    assert counts[0] == (0, 5) and counts[-1] == (5, 5)


def test_library_noise_is_dropped_from_the_trainer_log_and_nothing_else() -> None:
    import logging

    from ftjob_trainer.progress import DropLibraryNoise

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("transformers.x", logging.WARNING, __file__, 1, message, None, None)

    noise = (
        "`varlen` is falling back to its reference PyTorch implementation because `kernels` is not installed."
    )
    assert not DropLibraryNoise().filter(record(noise))
    assert DropLibraryNoise().filter(record("CUDA out of memory"))
