"""The GPU part of a run: load the model with adapters, train (resuming when a checkpoint exists),
save the adapter, evaluate against the base model, optionally merge. Imports torch and friends."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sized
from typing import TYPE_CHECKING, Any, cast

import torch

from .base_model import ResolvedModel
from .errors import Interrupted
from .evaluation.generation import generate_answers
from .evaluation.metrics import score
from .evaluation.report import EvalResults, loss_history, perplexity, write_report
from .evaluation.samples import select_samples
from .modeling import Hardware, load_model, plan_training
from .training import build_dataset, sft_config_kwargs, total_steps, warmup_steps

if TYPE_CHECKING:
    from .pipeline import Pipeline, TrainResult

log = logging.getLogger("ftjob.trainer")


def train_and_evaluate(
    run: Pipeline, model_source: ResolvedModel, tokenizer: Any, prepared: Any
) -> TrainResult:
    from transformers import EarlyStoppingCallback, PrinterCallback
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    from .callbacks import CheckpointUploadCallback, ProgressCallback, StopOnSignalCallback
    from .pipeline import TrainResult

    spec, config = run.spec, run.config
    _quiet_libraries()
    hardware = Hardware.detect()
    plan = plan_training(spec.peft, hardware)
    for note in plan.notes:
        log.warning("%s", note)
    if not hardware.cuda:
        # Denormals make CPU steps several times slower once gradients get small.
        torch.set_flush_denormal(True)
    log.info("training %s on %s in %s", plan.method, hardware.device_name, plan.dtype)

    model = load_model(
        model_source.path,
        plan,
        spec.peft,
        trust_remote_code=spec.base_model.trust_remote_code,
        gradient_checkpointing=spec.training.gradient_checkpointing,
    )
    train_ds, eval_ds = (
        build_dataset(
            split,
            tokenizer,
            max_length=spec.training.max_seq_length,
            loss_on=spec.training.loss_on,
            cache_dir=config.path("datasets"),
        )
        for split in (prepared.train_path, prepared.validation_path)
    )

    store = run.checkpoint_store()
    callbacks: list[Any] = [
        ProgressCallback(run.reporter),
        CheckpointUploadCallback(store),
        StopOnSignalCallback(run.stop),
    ]
    if spec.training.early_stopping.enabled:
        stopping = spec.training.early_stopping
        callbacks.append(
            EarlyStoppingCallback(
                early_stopping_patience=stopping.patience, early_stopping_threshold=stopping.threshold
            )
        )
    args = SFTConfig(**sft_config_kwargs(spec, plan, config.path("checkpoints"), use_cpu=not hardware.cuda))
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    # Our progress lines replace the dict that transformers prints on every log step.
    trainer.remove_callback(PrinterCallback)
    steps = total_steps(spec, len(cast(Sized, trainer.train_dataset)))
    trainer.args.warmup_steps = warmup_steps(spec, steps)

    resume_dir = None
    if spec.checkpointing.resume:
        step = store.latest_resumable()
        if step is not None:
            resume_dir = store.download(step, config.path("resume"))
            run.state.resumed_from_step = step
            log.info("resuming from checkpoint at step %d (%s/checkpoint-%d)", step, store.prefix, step)

    run.stage("training")
    train_output = trainer.train(resume_from_checkpoint=str(resume_dir) if resume_dir else None)
    if run.stop.requested:
        raise Interrupted(
            f"stopped by {run.stop.signal_name} at step {trainer.state.global_step}; checkpoint saved"
        )

    adapter_dir = run.outputs.adapter
    trainer.save_model(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    _drop_training_args(adapter_dir)

    run.stage("evaluating")
    results = evaluate(run, trainer, model, tokenizer, prepared, train_loss=train_output.training_loss)
    if spec.output.merge_adapter:
        merge_adapter(run, model_source, adapter_dir, plan.dtype)

    resolved = {
        "method": plan.method,
        "precision": plan.dtype,
        "device": hardware.device_name,
        "notes": list(plan.notes),
        "totalSteps": trainer.state.max_steps,
        "stepsDone": trainer.state.global_step,
        "warmupSteps": trainer.args.warmup_steps,
        "effectiveBatchSize": spec.training.per_device_batch_size * spec.training.gradient_accumulation_steps,
        "trainSequences": len(cast(Sized, trainer.train_dataset)),
        "trainableParameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    if hardware.cuda:
        resolved["peakGpuMemoryGiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    tokens = int(trainer.state.num_input_tokens_seen or 0) or None
    return TrainResult(eval=results, resolved=resolved, tokens_trained=tokens)


def evaluate(
    run: Pipeline, trainer: Any, model: Any, tokenizer: Any, prepared: Any, *, train_loss: float | None
) -> EvalResults:
    spec = run.spec.evaluation
    tuned_loss = trainer.evaluate().get("eval_loss")
    base_loss = None
    with model.disable_adapter():
        base_loss = trainer.evaluate(metric_key_prefix="base").get("base_loss")
    samples = select_samples(prepared.validation_path, spec.max_samples, run.spec.training.seed)
    metric_names = list(spec.metrics)
    tuned_answers = generate_answers(model, tokenizer, samples, max_new_tokens=spec.max_new_tokens)
    references = [s.reference for s in samples]
    base_answers = None
    base_scores: dict[str, float] = {}
    if spec.compare_with_base:
        with model.disable_adapter():
            base_answers = generate_answers(model, tokenizer, samples, max_new_tokens=spec.max_new_tokens)
        base_scores = score(metric_names, base_answers, references)
    results = EvalResults(
        samples=len(samples),
        validation_examples=prepared.validation_examples,
        eval_loss=tuned_loss,
        base_eval_loss=base_loss,
        perplexity=perplexity(tuned_loss),
        base_perplexity=perplexity(base_loss),
        train_loss=train_loss,
        tuned=score(metric_names, tuned_answers, references),
        base=base_scores,
        history=loss_history(trainer.state.log_history),
    )
    write_report(
        run.outputs.eval_dir,
        results,
        samples,
        tuned_answers,
        base_answers,
        job_name=run.config.name,
        base_model=run.spec.base_model.uri,
    )
    log.info(
        "evaluation: %s",
        {"tuned": results.tuned, "base": results.base, "eval_loss": tuned_loss, "base_eval_loss": base_loss},
    )
    return results


def merge_adapter(run: Pipeline, model_source: ResolvedModel, adapter_dir: Any, dtype: str) -> None:
    """Merge into a fresh copy of the base in the training precision (16-bit on GPUs, fp32 on CPUs), never
    into 4-bit weights, which would lose precision."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(
        str(model_source.path),
        dtype=getattr(torch, dtype),
        trust_remote_code=run.spec.base_model.trust_remote_code,
    )
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(run.outputs.merged))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (adapter_dir / name).exists():
            shutil.copy(adapter_dir / name, run.outputs.merged / name)
    log.info("merged model written to %s", run.outputs.merged)


def _quiet_libraries() -> None:
    """Progress bars and deprecation chatter drown the progress lines people and the operator read."""
    import warnings

    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)


def _drop_training_args(adapter_dir: Any) -> None:
    # A pickled TrainingArguments is no use to anyone loading the adapter.
    (adapter_dir / "training_args.bin").unlink(missing_ok=True)
