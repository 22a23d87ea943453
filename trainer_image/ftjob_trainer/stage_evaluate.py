"""Stage 5, evaluating: validation loss and generated answers, tuned against the base model (the same
weights with the adapter switched off), scored and written as the report; then the optional merge."""

from __future__ import annotations

import io
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from .base_model import ResolvedModel
from .data import PreparedData
from .evaluation.generation import Answer, generate_answers, generation_budget
from .evaluation.metrics import mean_scores, score_each
from .evaluation.report import (
    EvalResults,
    GenerationStats,
    loss_history,
    perplexity,
    prediction_rows,
    write_report,
)
from .evaluation.samples import EvalSample, select_samples
from .modeling import load_tuned_model
from .progress import TaskProgress
from .run_context import RunContext
from .stage_train import Trained

log = logging.getLogger("ftjob.trainer")

GENERATION_BATCH_SIZE = 16
"""Answers generated together: on a CPU a bigger batch uses the cores better; on a GPU 16 prompts of
evaluation length are small beside the training batch that already fitted."""


def evaluate(ctx: RunContext, trained: Trained, tokenizer: Any, prepared: PreparedData) -> EvalResults | None:
    """The evaluation; with several processes the losses are computed by all of them (the validation set is
    shared out), the answers and the report by rank 0 alone while the others wait: None on those."""
    trainer, model = trained.trainer, trained.model
    seconds: dict[str, float] = {}

    # Both losses whatever compareWithBase says: the base model's is the reference line of the loss curve.
    losses = TaskProgress(
        "evaluating",
        "validation loss, tuned and base",
        2,
        "models",
        stream=sys.stdout if ctx.dist.is_main else io.StringIO(),
    )
    tuned_loss = trainer.evaluate().get("eval_loss")
    losses.advance()
    with model.disable_adapter():
        base_loss = trainer.evaluate(metric_key_prefix="base").get("base_loss")
    losses.advance()
    seconds["loss"] = round(losses.seconds, 1)
    return ctx.dist.on_main(
        "generating and scoring answers",
        lambda: _answers_and_report(ctx, trained, tokenizer, prepared, (tuned_loss, base_loss), seconds),
    )


def _answers_and_report(
    ctx: RunContext,
    trained: Trained,
    tokenizer: Any,
    prepared: PreparedData,
    loss_pair: tuple[float | None, float | None],
    seconds: dict[str, float],
) -> EvalResults:
    spec = ctx.spec.evaluation
    trainer, model = trained.trainer, trained.model
    tuned_loss, base_loss = loss_pair
    if trained.strategy.sharded:
        model = _whole_tuned_model(ctx, trained)

    samples = select_samples(prepared.validation_path, spec.max_samples, ctx.spec.training.seed)
    references = [s.reference for s in samples]
    reference_tokens = [len(tokenizer(r, add_special_tokens=False).input_ids) for r in references]
    budget = generation_budget(reference_tokens, spec.max_new_tokens)
    log.info(
        "generating %d answers per model, at most %d new tokens each (%s)",
        len(samples),
        budget,
        "spec.evaluation.maxNewTokens"
        if spec.max_new_tokens is not None
        else f"longest reference {max(reference_tokens, default=0)} tokens + margin",
    )
    metric_names = list(spec.metrics)
    tuned_answers = _generate(model, tokenizer, samples, budget, "tuned", seconds)
    base_answers = None
    if spec.compare_with_base:
        with model.disable_adapter():
            base_answers = _generate(model, tokenizer, samples, budget, "base", seconds)
    tuned_each = score_each(metric_names, [a.text for a in tuned_answers], references)
    base_each = (
        None if base_answers is None else score_each(metric_names, [a.text for a in base_answers], references)
    )
    truncated = {"tuned": sum(a.truncated for a in tuned_answers)}
    if base_answers is not None:
        truncated["base"] = sum(a.truncated for a in base_answers)
    results = EvalResults(
        samples=len(samples),
        validation_examples=prepared.validation_examples,
        eval_loss=tuned_loss,
        base_eval_loss=base_loss,
        perplexity=perplexity(tuned_loss),
        base_perplexity=perplexity(base_loss),
        train_loss=trained.train_loss,
        tuned=mean_scores(tuned_each),
        base=mean_scores(base_each or []),
        history=loss_history(trainer.state.log_history),
        generation=GenerationStats(
            max_new_tokens=budget,
            budget="spec" if spec.max_new_tokens is not None else "derived",
            longest_reference_tokens=max(reference_tokens, default=0),
            batch_size=GENERATION_BATCH_SIZE,
            truncated=truncated,
            seconds=seconds,
        ),
    )
    rows = prediction_rows(samples, tuned_answers, base_answers, tuned_each, base_each)
    write_report(
        ctx.outputs.eval_dir, results, rows, job_name=ctx.config.name, base_model=ctx.spec.base_model.uri
    )
    log.info(
        "evaluation: %s",
        {"tuned": results.tuned, "base": results.base, "eval_loss": tuned_loss, "base_eval_loss": base_loss},
    )
    log.info(
        "evaluation took %s; answers cut by the %d-token limit: %s",
        ", ".join(f"{part} {value:.1f} s" for part, value in seconds.items()),
        budget,
        ", ".join(f"{model_name} {count}/{len(samples)}" for model_name, count in truncated.items()),
    )
    return results


def _whole_tuned_model(ctx: RunContext, trained: Trained) -> Any:
    """FSDP left each process only its share of the weights, and generating alone on rank 0 cannot gather
    the others' (they wait at a barrier). Rank 0 loads the base again with the adapter it saved: the very
    files the run publishes."""
    torch.cuda.empty_cache()
    log.info("training sharded the model: loading the base model with the saved adapter to generate answers")
    return load_tuned_model(
        trained.model_dir,
        ctx.outputs.adapter,
        trained.plan,
        ctx.spec.peft,
        trust_remote_code=ctx.spec.base_model.trust_remote_code,
    )


def _generate(
    model: Any, tokenizer: Any, samples: list[EvalSample], budget: int, which: str, seconds: dict[str, float]
) -> list[Answer]:
    task = TaskProgress("evaluating", f"{which} model's answers", len(samples), "answers")
    answers = generate_answers(
        model,
        tokenizer,
        samples,
        max_new_tokens=budget,
        batch_size=GENERATION_BATCH_SIZE,
        on_batch=task.advance,
    )
    seconds[which] = round(task.seconds, 1)
    return answers


def merge_adapter(ctx: RunContext, model_source: ResolvedModel, dtype: str) -> None:
    """Merge into a fresh copy of the base in the training precision (16-bit on GPUs, fp32 on CPUs), never
    into 4-bit weights, which would lose precision."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter_dir: Path = ctx.outputs.adapter
    base = AutoModelForCausalLM.from_pretrained(
        str(model_source.path),
        dtype=getattr(torch, dtype),
        trust_remote_code=ctx.spec.base_model.trust_remote_code,
    )
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(ctx.outputs.merged))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (adapter_dir / name).exists():
            shutil.copy(adapter_dir / name, ctx.outputs.merged / name)
    log.info("merged model written to %s", ctx.outputs.merged)
