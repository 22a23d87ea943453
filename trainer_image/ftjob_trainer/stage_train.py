"""Stage 4, training: load the model with adapters, train (resuming when this run has a checkpoint), and
save the adapter. Imports torch and friends."""

from __future__ import annotations

import logging
from collections.abc import Sized
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch

from ftjob.api.peft import ALL_LINEAR

from . import fused_lora
from .base_model import ResolvedModel
from .data import PreparedData
from .distributed import mark_agreed
from .errors import Interrupted
from .memory import (
    FUSED_LAYERS,
    GIB,
    HOST_SHARE,
    PEFT_LAYERS,
    MemoryPlan,
    ModelShape,
    estimate_peak,
    host_memory_available,
    memory_budget,
    plan_memory,
)
from .modeling import (
    Hardware,
    SpeedPlan,
    TrainingPlan,
    add_adapters,
    flex_attention_importable,
    liger_importable,
    load_base_model,
    plan_speed,
    plan_training,
    set_attention,
)
from .parallelism import (
    Strategy,
    choose_strategy,
    decoder_layer_classes,
    fsdp_config,
    lora_parameter_count,
    weight_bytes,
)
from .run_context import RunContext
from .sharded_adapter import expected_adapter_keys, verify_adapter
from .training import (
    build_dataset,
    counting_trainer_class,
    sequence_lengths,
    sft_config_kwargs,
    total_steps,
    warmup_steps,
)

log = logging.getLogger("ftjob.trainer")


@dataclass
class Trained:
    """The trained model and the trainer holding it (evaluation reuses both), with what ran."""

    trainer: Any
    model: Any
    plan: TrainingPlan
    strategy: Strategy
    model_dir: Path
    """The base model's folder (evaluation reloads it when training sharded the model)."""
    train_loss: float | None
    resolved: dict[str, Any]
    tokens_trained: int | None


def train(ctx: RunContext, model_source: ResolvedModel, tokenizer: Any, prepared: PreparedData) -> Trained:
    from transformers import EarlyStoppingCallback, PrinterCallback
    from trl.trainer.sft_config import SFTConfig

    from .callbacks import (
        CheckpointUploadCallback,
        ProgressCallback,
        SelectiveRecomputeCallback,
        StopOnSignalCallback,
    )

    spec, config = ctx.spec, ctx.config
    quiet_libraries()
    hardware = Hardware.detect()
    plan = plan_training(spec.peft, hardware)
    for note in plan.notes:
        log.warning("%s", note)
    if not hardware.cuda:
        # Denormals make CPU steps several times slower once gradients get small.
        torch.set_flush_denormal(True)
    log.info("training %s on %s in %s", plan.method, hardware.device_name, plan.dtype)
    speed = plan_speed(
        hardware,
        trust_remote_code=spec.base_model.trust_remote_code,
        liger_available=liger_importable(),
        flex_available=flex_attention_importable(),
    )
    for note in speed.notes:
        log.info("%s", note)

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
    lengths = sequence_lengths(train_ds)
    base = load_base_model(
        model_source.path,
        plan,
        spec.peft,
        trust_remote_code=spec.base_model.trust_remote_code,
        attention=speed.attention,
    )
    # Rank 0's choices for every rank: the processes must shard alike, and DDP needs the same micro-batches
    # and accumulation everywhere.
    strategy = ctx.dist.broadcast(choose_parallelism(ctx, base, lengths, hardware))
    model = add_adapters(
        base,
        spec.peft,
        gradient_checkpointing=spec.training.gradient_checkpointing,
    )
    if not strategy.sharded:
        # FSDP gathers each LoRA layer's weights in that layer's forward hook, which the fused path skips.
        fused = fused_lora.install(model)
        speed = replace(speed, fused_lora=fused > 0)
        log.info("LoRA layers fused into one autograd node each: %d", fused)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    adapter_keys = expected_adapter_keys(model.named_parameters())
    memory = ctx.dist.broadcast(choose_memory_plan(ctx, model, lengths, speed, hardware, strategy))
    distributed = describe_distributed(ctx, plan.method, strategy)
    log.info(
        "speed: %s attention, %s, %s; micro-batch %d x %d accumulation, %s (%s)",
        speed.attention,
        "padding-free batches" if speed.padding_free else "padded batches",
        "Liger kernels" if speed.liger else "no Liger kernels",
        memory.micro_batch,
        memory.accumulation,
        f"recomputing {memory.recomputed_layers} of {memory.layers} layers",
        memory.reason,
    )

    store = ctx.checkpoint_store()
    progress = ProgressCallback(ctx.reporter)
    callbacks: list[Any] = [
        progress,
        SelectiveRecomputeCallback(memory.recomputed_layers, inputs_on_host=memory.inputs_on_host),
        CheckpointUploadCallback(store, barrier=ctx.dist.barrier if ctx.dist.enabled else None),
        StopOnSignalCallback(ctx.stop, agree=ctx.dist.any),
    ]
    if spec.training.early_stopping.enabled:
        stopping = spec.training.early_stopping
        callbacks.append(
            EarlyStoppingCallback(
                early_stopping_patience=stopping.patience, early_stopping_threshold=stopping.threshold
            )
        )
    args = SFTConfig(
        **sft_config_kwargs(
            spec,
            plan,
            config.path("checkpoints"),
            use_cpu=not hardware.cuda,
            speed=speed,
            memory=memory,
            ddp_timeout=ctx.dist.timeout_seconds if ctx.dist.enabled else None,
            fsdp=fsdp_config(decoder_layer_classes(model)) if strategy.sharded else None,
        )
    )
    trainer = counting_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    # Our progress lines replace the dict that transformers prints on every log step.
    trainer.remove_callback(PrinterCallback)
    steps = total_steps(spec, len(cast(Sized, trainer.train_dataset)), world_size=ctx.dist.world_size)

    resume_dir = None
    if spec.checkpointing.resume:
        # Rank 0 picks the checkpoint; each node's local rank 0 downloads it; every rank resumes from it.
        step = ctx.dist.on_main("finding a checkpoint", store.latest_resumable)
        if step is not None:
            resume_dir = ctx.dist.on_each_node(
                "downloading the checkpoint", lambda: store.download(step, config.path("resume"))
            )
            ctx.state.resumed_from_step = step
            log.info("resuming from checkpoint at step %d (%s/checkpoint-%d)", step, store.prefix, step)

    if resume_dir is not None and (ctx.state.resumed_from_step or 0) >= steps:
        train_loss = restore_finished(trainer, resume_dir)
    else:
        ctx.enter("training")
        train_loss = trainer.train(
            resume_from_checkpoint=str(resume_dir) if resume_dir else None
        ).training_loss
    if ctx.stop_agreed():
        raise mark_agreed(
            Interrupted(
                f"stopped by {ctx.stop.signal_name} at step {trainer.state.global_step}; checkpoint saved"
            )
        )

    if speed.attention != "sdpa":
        # Generation in the evaluation would compile FlexAttention for every new length; SDPA needs none.
        set_attention(model, "sdpa")

    # Every rank calls save_model (transformers writes on rank 0 only, and joins the ranks where it must).
    trainer.save_model(str(ctx.outputs.adapter))
    ctx.dist.on_main(
        "saving the adapter", lambda: finish_adapter(tokenizer, ctx.outputs.adapter, adapter_keys)
    )

    resolved = {
        "method": plan.method,
        "precision": plan.dtype,
        "device": hardware.device_name,
        "notes": list(plan.notes),
        "totalSteps": trainer.state.max_steps,
        "stepsDone": trainer.state.global_step,
        "warmupSteps": warmup_steps(spec, trainer.state.max_steps),
        "effectiveBatchSize": spec.training.per_device_batch_size
        * spec.training.gradient_accumulation_steps
        * ctx.dist.world_size,
        "trainSequences": len(cast(Sized, trainer.train_dataset)),
        # Counted before training: FSDP replaces the parameters with shards of flat tensors.
        "trainableParameters": trainable,
        "speed": {**speed.describe(), **memory.describe(), "packing": spec.training.packing},
        "throughput": progress.throughput(),
    }
    if distributed is not None:
        resolved["distributed"] = distributed
    if hardware.cuda:
        peak = torch.cuda.max_memory_allocated()
        resolved["peakGpuMemoryGiB"] = round(peak / GIB, 2)
        limit = spec.training.gpu_memory_limit_gib
        if limit is not None and peak > limit * GIB:
            # The plan is an estimate: say so when it was wrong, the next run's user needs to know.
            log.warning(
                "training peaked at %.2f GiB allocated, above gpuMemoryLimitGib %.2f (the plan estimated "
                "%s GiB): lower perDeviceBatchSize or maxSeqLength to stay under it",
                peak / GIB,
                limit,
                memory.describe().get("estimatedPeakGiB", "?"),
            )
    return Trained(
        trainer=trainer,
        model=model,
        plan=plan,
        strategy=strategy,
        model_dir=model_source.path,
        train_loss=train_loss,
        resolved=resolved,
        tokens_trained=int(trainer.state.num_input_tokens_seen or 0) or None,
    )


def finish_adapter(tokenizer: Any, adapter_dir: Path, expected_keys: set[str]) -> None:
    tensors = verify_adapter(adapter_dir, expected_keys)
    log.info("adapter saved: %d LoRA tensors, all present", tensors)
    tokenizer.save_pretrained(str(adapter_dir))
    # A pickled TrainingArguments is no use to anyone loading the adapter.
    (adapter_dir / "training_args.bin").unlink(missing_ok=True)


def describe_distributed(ctx: RunContext, method: str, strategy: Strategy) -> dict[str, Any] | None:
    """How several processes train (None for one), logged and recorded in the manifest. DDP: each process
    holds the whole model (for QLoRA the 4-bit base, replicated on every GPU) and trains on its share of
    every batch; gradients of the adapter are averaged. FSDP: the same shares of every batch, with the
    weights sharded across the processes (parallelism.py)."""
    dist = ctx.dist
    if not dist.enabled:
        return None
    described = dist.describe(dist.backend(), strategy.label(method))
    described["strategyReason"] = strategy.reason
    training = ctx.spec.training
    log.info(
        "%s over %d processes (%d nodes x %d), %s backend: %d sequences per optimiser step "
        "(%d per micro-batch x %d accumulation x %d processes); %s",
        strategy.name.upper(),
        dist.world_size,
        dist.nodes,
        dist.local_world_size,
        described["backend"],
        training.per_device_batch_size * training.gradient_accumulation_steps * dist.world_size,
        training.per_device_batch_size,
        training.gradient_accumulation_steps,
        dist.world_size,
        strategy.reason,
    )
    return described


def choose_parallelism(ctx: RunContext, base: Any, lengths: list[int], hardware: Hardware) -> Strategy:
    """DDP or FSDP (parallelism.choose_strategy) from the loaded base model and the GPU's memory: what a
    replicated model needs at the least (micro-batch 1, every layer recomputed) against the budget."""
    spec = ctx.spec
    training = spec.training
    replicated = budget = None
    sharded_bytes = weight_bytes(base.parameters())
    if hardware.cuda and ctx.dist.enabled:
        static = int(torch.cuda.memory_allocated())
        free = int(torch.cuda.mem_get_info()[0])
        limit = training.gpu_memory_limit_gib
        budget, _ = memory_budget(static=static, free=free, limit=int(limit * GIB) if limit else None)
        # What DDP would run: every process holds the whole model, with fused LoRA layers.
        shape = ModelShape.of(base.config, FUSED_LAYERS)
        tokens = training.max_seq_length if training.packing else max(lengths, default=0)
        replicated = estimate_peak(
            shape,
            static=static,
            trainable=lora_parameter_count(base, spec.peft.target_modules, spec.peft.r, ALL_LINEAR),
            tokens=tokens,
            recomputed=shape.layers if training.gradient_checkpointing else 0,
        )
    return choose_strategy(
        requested=spec.resources.distributed_strategy,
        world_size=ctx.dist.world_size,
        cuda=hardware.cuda,
        replicated_peak=replicated,
        sharded_bytes=sharded_bytes,
        budget=budget,
    )


def choose_memory_plan(
    ctx: RunContext, model: Any, lengths: list[int], speed: SpeedPlan, hardware: Hardware, strategy: Strategy
) -> MemoryPlan:
    """Micro-batch and recomputed layers from what the loaded model holds and what the GPU has free (with
    FSDP: what it will hold once sharded, which frees the other processes' shares of the weights)."""
    training = ctx.spec.training
    static = free = None
    if hardware.cuda:
        saved = strategy.bytes_saved_per_gpu()
        static = int(torch.cuda.memory_allocated()) - saved
        free = int(torch.cuda.mem_get_info()[0]) + saved
    limit = training.gpu_memory_limit_gib
    # Layer inputs in host memory need the nested backward of offload.py, which DDP's hooks do not allow.
    host_free = host_memory_for_offload() if hardware.cuda and strategy.name == "single" else None
    if training.packing:
        # Packed rows are filled up to maxSeqLength whatever the examples' lengths.
        lengths = [training.max_seq_length] * (
            training.per_device_batch_size * training.gradient_accumulation_steps
        )
    return plan_memory(
        shape=ModelShape.of(model.config, FUSED_LAYERS if speed.fused_lora else PEFT_LAYERS),
        static=static or 0,
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        lengths=lengths,
        padding_free=speed.padding_free or training.packing,
        per_device_batch=training.per_device_batch_size,
        accumulation=training.gradient_accumulation_steps,
        checkpointing_allowed=training.gradient_checkpointing,
        free=free,
        limit=int(limit * GIB) if limit is not None else None,
        auto=training.auto_tune,
        host_free=host_free,
    )


def host_memory_for_offload() -> int | None:
    """Bytes of host memory recomputed layers' inputs may take: `HOST_SHARE` of what the container can
    still take (its cgroup's limit less its use, v2 or v1, or the machine's available memory)."""

    def read(path: str) -> str | None:
        try:
            return Path(path).read_text()
        except OSError:
            return None

    meminfo = read("/proc/meminfo")
    if meminfo is None:
        return None
    limit, used = read("/sys/fs/cgroup/memory.max"), read("/sys/fs/cgroup/memory.current")
    if limit is None:  # cgroup v1 nodes (no limit reads as a huge number there)
        limit = read("/sys/fs/cgroup/memory/memory.limit_in_bytes")
        used = read("/sys/fs/cgroup/memory/memory.usage_in_bytes")
    available = host_memory_available(meminfo, limit, used)
    return int(available * HOST_SHARE) if available is not None else None


def restore_finished(trainer: Any, checkpoint: Path) -> float | None:
    """The checkpoint holds the last step (the run stopped after saving it, before publishing): load its
    weights and state instead of training. transformers would run one step past max_steps when resuming
    at it, and report that extra step's loss as the run's. The run's last logged loss is the figure."""
    from transformers.trainer_callback import TrainerState

    trainer._load_from_checkpoint(str(checkpoint))
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    logged = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    log.info("the checkpoint at step %d is the last one: nothing left to train", trainer.state.global_step)
    return logged[-1] if logged else None


def quiet_libraries() -> None:
    """Progress bars and deprecation chatter drown the progress lines people and the operator read."""
    import warnings

    import datasets
    import transformers

    from .progress import drop_library_noise

    drop_library_noise()
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
    # Liger logs a warning for every optional backend it cannot import (CuTe DSL, Ascend) on every GPU.
    logging.getLogger("liger_kernel").setLevel(logging.ERROR)
