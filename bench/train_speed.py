"""Training speed, side by side: the fine-tuning guides' QLoRA recipe in plain trl against this project's
trainer (`ftjob-train` with a spec), on the same random Mistral-7B-v0.3-shaped checkpoint, the same
tokenizer and the same chat rows, one after the other on one GPU.

    python bench/train_speed.py --out /tmp/speed               # the whole benchmark (GPU)
    python bench/train_speed.py --out /tmp/speed --tiny        # a 2-layer smoke run (CPU or GPU)
    python bench/train_speed.py --out /tmp/quality --data zipf --steps 50 --runs recipe,project-free
                                                               # the loss curves on rows with something to learn

What it builds first, under --out: a word-level tokenizer (32,768 ids, a minimal chat template with
generation markers), a randomly initialised bf16 Mistral checkpoint (`--layers`, 32 by default), and chat
JSONL rows of 300-1,500 tokens (a user turn and an assistant turn of random words). Then, each in its own
process:

- `recipe`: the guides' recipe as they write it: 4-bit nf4 with double quantization and bf16 compute,
  LoRA r=16, alpha=32, dropout 0.05 on the q/k/v/o/gate/up/down projections, batch 4 with accumulation 4,
  maxium length 2048, gradient checkpointing, no packing, lr 2e-4, cosine, loss on the assistant turns;
- `project-capped`: ftjob-train with the default spec and `gpuMemoryLimitGib` set to the recipe's measured
  peak (what the project does when memory is the constraint);
- `project-free`: ftjob-train with the default spec, no limit (what it does with the GPU to itself);
- `project-4x4-recompute` (only when asked for): the recipe's micro-batch 4 x 4 with every layer recomputed,
  autoTune off (the trainer's layers at the recipe's settings; calibrates the memory plan);
- `project-profile` (only when asked for in `--runs`): project-free for 4 steps with two micro-batches
  under torch.profiler (`bench/profiled_trainer.py`); the tables go to `profile/` beside the results;
  `project-profile-capped` does the same under the recipe's peak (`profile-capped/`).

Every run counts the same thing: tokens that are not padding, after the first optimiser step (compilation
and allocator warm-up), with the GPU synchronised at the clock reads; peak memory is
`torch.cuda.max_memory_allocated` over training; time to first step is from the process start to the end of
the first optimiser step (model load, data preparation and compilation included); losses are per
optimiser step. The results table goes to `--out/results.md` and `results.json`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|end|>"]
VOCAB = 32768
TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "<|assistant|> {% generation %}{{ message['content'] }} <|end|>{% endgeneration %} "
    "{% else %}<|user|> {{ message['content'] }} <|end|> {% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


# --- Assets --------------------------------------------------------------------------------------------------


def build_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = SPECIALS + [f"w{i}" for i in range(VOCAB - len(SPECIALS))]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="<|end|>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "</s>"],
    )
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(str(path))


def write_rows(path: Path, count: int, low: int, high: int, seed: int, kind: str = "uniform") -> None:
    """Chat rows whose rendering is `low`-`high` tokens: a user turn of a third to two thirds of it.

    `uniform`: every word drawn uniformly (nothing to learn; the speed runs). `zipf`: text-like rows with
    something to learn, for the loss curves: the user's words follow a Zipf law over the vocabulary, and
    the answer translates them word by word (a fixed permutation of the vocabulary), cycling through them
    to its length."""
    rng = random.Random(seed)
    words = VOCAB - len(SPECIALS)
    if kind == "zipf":
        cumulative = list(itertools.accumulate(1.0 / (rank + 10) ** 1.1 for rank in range(words)))
        translate = list(range(words))
        random.Random(0).shuffle(translate)  # the same translation for every file
    with path.open("w") as handle:
        for _ in range(count):
            total = rng.randint(low, high) - 6  # the template's markers
            user = rng.randint(total // 3, 2 * total // 3)
            if kind == "zipf":
                asked = rng.choices(range(words), cum_weights=cumulative, k=user)
                answer = [translate[asked[i % user]] for i in range(total - user)]
                ids = asked + answer
            else:
                ids = [rng.randrange(words) for _ in range(total)]
            text = [f"w{i}" for i in ids]
            row = {
                "messages": [
                    {"role": "user", "content": " ".join(text[:user])},
                    {"role": "assistant", "content": " ".join(text[user:])},
                ]
            }
            handle.write(json.dumps(row) + "\n")


def build_model(path: Path, layers: int, tiny: bool) -> None:
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    shape: dict[str, Any]
    if tiny:
        shape = {
            "hidden_size": 64,
            "intermediate_size": 224,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
        }
    else:  # Mistral-7B-v0.3
        shape = {
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
        }
    config = MistralConfig(
        vocab_size=VOCAB,
        num_hidden_layers=layers,
        max_position_embeddings=32768,
        sliding_window=None,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=6,
        pad_token_id=0,
        **shape,
    )
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = MistralForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(str(path), max_shard_size="5GB")
    del model
    if device == "cuda":
        torch.cuda.empty_cache()


def build_assets(root: Path, args: argparse.Namespace) -> dict[str, Path]:
    paths = {
        "model": root / "model",
        "train": root / "data" / "train.jsonl",
        "validation": root / "data" / "validation.jsonl",
    }
    paths["train"].parent.mkdir(parents=True, exist_ok=True)
    low, high = (30, 150) if args.tiny else (300, 1500)
    write_rows(paths["train"], args.rows, low, high, seed=1, kind=args.data)
    write_rows(paths["validation"], 16, low, high, seed=2, kind=args.data)
    if not (paths["model"] / "config.json").exists():
        started = time.monotonic()
        build_tokenizer(paths["model"])
        build_model(paths["model"], args.layers, args.tiny)
        print(f"built the model in {time.monotonic() - started:.1f}s", flush=True)
    return paths


# --- The recipe, in plain trl ----------------------------------------------------------------------------------


def run_recipe(args: argparse.Namespace) -> None:
    """The guides' QLoRA recipe (their settings, written here from their description), instrumented only to
    measure: a trainer subclass counts non-padding tokens, a callback reads the clock and the memory."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    started = float(os.environ.get("BENCH_T0", time.time()))
    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    load: dict[str, Any] = {"dtype": torch.bfloat16 if cuda else torch.float32}
    if cuda:
        load["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        load["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(args.model, **load)
    lora = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        bias="none",
        task_type="CAUSAL_LM",
    )
    dataset = load_dataset("json", data_files=args.train, split="train")
    config = SFTConfig(
        output_dir=args.workdir,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=4,
        learning_rate=2e-4,
        weight_decay=0.01,
        warmup_steps=math.ceil(0.03 * args.steps),  # transformers 5 has no warmup_ratio
        lr_scheduler_type="cosine",
        max_steps=args.steps,
        logging_steps=1,
        bf16=cuda,
        use_cpu=not cuda,
        max_length=2048,
        gradient_checkpointing=True,
        packing=False,
        assistant_only_loss=True,
        seed=42,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    meter: dict[str, Any] = {"tokens": 0, "steps": []}

    class Counting(SFTTrainer):
        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
            meter["tokens"] += int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, num_items_in_batch)  # type: ignore[no-untyped-call]

    class Clock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            meter["steps"].append((time.time() - started, state.global_step, meter["tokens"]))
            print(f"BENCH_STEP {state.global_step}", flush=True)

    trainer = Counting(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[Clock()],
    )
    trainer.train()
    steps = meter["steps"]
    (t0, s0, k0), (t1, s1, k1) = steps[0], steps[-1]
    result = {
        "nonPadTokensPerSecond": round((k1 - k0) / (t1 - t0), 1),
        "measuredSteps": s1 - s0,
        "secondsPerStep": round((t1 - t0) / (s1 - s0), 3),
        "timeToFirstStepSeconds": round(t0, 1),
        "peakAllocatedGiB": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "tokensTrained": k1,
        "losses": [round(e["loss"], 4) for e in trainer.state.log_history if "loss" in e],
        "attention": getattr(model.config, "_attn_implementation", None),
    }
    Path(args.result).write_text(json.dumps(result, indent=2))


# --- The project, through ftjob-train ---------------------------------------------------------------------------


FIXED_RUNS: dict[str, dict[str, Any]] = {
    # The recipe's micro-batch and recomputation, autoTune off: what the trainer's own layers cost at the
    # recipe's settings, and the memory they hold (calibrates the memory plan).
    "project-4x4-recompute": {
        "autoTune": False,
        "perDeviceBatchSize": 4,
        "gradientAccumulationSteps": 4,
        "gradientCheckpointing": True,
    },
}
"""Runs with the trainer's choices fixed in the spec (`--runs` names them like the others)."""


def project_spec(
    paths: dict[str, Path],
    root: Path,
    name: str,
    steps: int,
    limit: float | None,
    fixed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The default spec for a QLoRA job, with the benchmark's inputs and the run's length; the few fields
    set here only shorten what follows training (evaluation) or log every step."""
    training: dict[str, Any] = {"maxSteps": steps, "loggingSteps": 1, **(fixed or {})}
    if limit is not None:
        training["gpuMemoryLimitGib"] = limit
    return {
        "baseModel": {"uri": str(paths["model"])},
        "data": {"trainUri": f"file://{paths['train']}", "validationUri": f"file://{paths['validation']}"},
        "output": {"uri": f"file://{root / name / 'out'}/"},
        "training": training,
        "checkpointing": {"everySteps": steps},
        "evaluation": {"maxSamples": 1, "maxNewTokens": 4, "compareWithBase": False},
    }


def run_project(
    paths: dict[str, Path],
    root: Path,
    name: str,
    steps: int,
    limit: float | None,
    timeout: float,
    profile: Path | None = None,
    fixed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from ftjob import contract

    # A run's output prefix from an earlier benchmark would be taken as this job's finished attempt.
    shutil.rmtree(root / name, ignore_errors=True)
    env = dict(os.environ)
    command = [sys.executable, "-m", "ftjob_trainer.cli"]
    if profile is not None:
        # Micro-batches 5 and 6 under torch.profiler (so this run's rate is not comparable).
        command = [sys.executable, str(HERE / "profiled_trainer.py")]
        env["FTJOB_BENCH_PROFILE"] = str(profile)
    env.update(
        {
            contract.ENV_SPEC: json.dumps(project_spec(paths, root, name, steps, limit, fixed)),
            contract.ENV_WORKDIR: str(root / name / "work"),
            contract.ENV_TERMINATION_LOG: str(root / name / "termination-log"),
            contract.ENV_NAME: f"bench-{name}",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    log = root / f"{name}.log"
    code, first_step = _stream(command, env, log, timeout, _project_step)
    result: dict[str, Any] = {"exitCode": code, "timeToFirstStepSeconds": first_step}
    manifest_path = root / name / "out" / "manifest.json"
    if code != 0 or not manifest_path.exists():
        result["logTail"] = log.read_text()[-3000:]
        return result
    result.update(manifest_figures(json.loads(manifest_path.read_text()), root / name))
    if limit is not None:
        # The trainer says which bound it planned for; a limit it never saw must not pass for a capped run.
        result["limitApplied"] = "limit" in str((result["speed"] or {}).get("reason", ""))
    return result


def manifest_figures(manifest: dict[str, Any], run: Path) -> dict[str, Any]:
    """What a run of `ftjob-train` measured, as its manifest records it, and its per-step losses."""
    resolved = manifest["resolved"]
    throughput = resolved.get("throughput", {})
    return {
        "nonPadTokensPerSecond": throughput.get("nonPadTokensPerSecond"),
        "measuredSteps": throughput.get("measuredSteps"),
        "secondsPerStep": throughput.get("secondsPerStep"),
        "peakAllocatedGiB": resolved.get("peakGpuMemoryGiB"),
        "tokensTrained": manifest.get("tokensTrained"),
        "speed": resolved.get("speed"),
        "distributed": resolved.get("distributed"),
        "losses": _project_losses(run),
    }


def _project_step(line: str) -> bool:
    from ftjob import contract

    if contract.PROGRESS_PREFIX not in line:
        return False
    record = json.loads(line.split(contract.PROGRESS_PREFIX, 1)[1])
    return record.get("stage") == "training" and int(record.get("step") or 0) >= 1


def _project_losses(run: Path) -> list[float]:
    """Per-step training losses from the last checkpoint's trainer state."""
    states = sorted(run.rglob("trainer_state.json"), key=lambda p: json.loads(p.read_text())["global_step"])
    if not states:
        return []
    history = json.loads(states[-1].read_text())["log_history"]
    return [round(e["loss"], 4) for e in history if "loss" in e]


def _stream(
    command: list[str], env: dict[str, str], log: Path, timeout: float, is_first_step: Any
) -> tuple[int, float | None]:
    """Run, copy the output to `log`, note when the first optimiser step ended (seconds from the start)."""
    started = time.time()
    env = {**env, "BENCH_T0": str(started)}
    first: float | None = None
    with log.open("w") as sink:
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO
        )
        assert proc.stdout is not None
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        for line in proc.stdout:
            sink.write(line)
            if first is None and is_first_step(line):
                first = round(time.time() - started, 1)
        code = proc.wait()
        watchdog.cancel()
        if time.time() - started >= timeout:
            sink.write(f"\nBENCH: killed after {timeout:.0f}s\n")
    return code, first


# --- Orchestration ---------------------------------------------------------------------------------------------


def loss_agreement(a: list[float], b: list[float]) -> dict[str, Any]:
    n = min(len(a), len(b))
    if n == 0:
        return {"steps": 0}
    diffs = [abs(x - y) for x, y in zip(a[:n], b[:n], strict=True)]
    return {
        "steps": n,
        "maxAbsDiff": round(max(diffs), 4),
        "meanAbsDiff": round(sum(diffs) / n, 4),
        "meanLossA": round(sum(a[:n]) / n, 4),
        "meanLossB": round(sum(b[:n]) / n, 4),
        # Where the curves end: the last ten steps' mean (the loss on `zipf` rows falls from about 10.4).
        "lastTenA": round(sum(a[n - 10 : n]) / len(a[n - 10 : n]), 4) if n >= 10 else None,
        "lastTenB": round(sum(b[n - 10 : n]) / len(b[n - 10 : n]), 4) if n >= 10 else None,
    }


def table(results: dict[str, Any]) -> str:
    recipe = results["runs"].get("recipe", {})
    base = recipe.get("nonPadTokensPerSecond")
    rows = [
        "| run | non-pad tokens/s | ratio | peak GiB allocated | s/step | time to first step (s) | tokens trained | what ran |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, run in results["runs"].items():
        rate = run.get("nonPadTokensPerSecond")
        ratio = f"{rate / base:.2f}x" if rate and base else "-"
        speed = run.get("speed") or {}
        ran = (
            f"{speed.get('attention')}, padding-free {speed.get('paddingFree')}, kernels {speed.get('kernels')}, "
            f"micro-batch {speed.get('microBatchSize')}x{speed.get('gradientAccumulationSteps')}, "
            f"checkpointing {speed.get('gradientCheckpointing')} ({speed.get('recomputedLayers')}/{speed.get('layers')} layers"
            f"{', inputs in host memory' if speed.get('recomputedInputs') == 'host' else ''}), "
            f"{speed.get('optimizer')}"
            if speed
            else f"{run.get('attention') or 'sdpa'}, padded, 4x4, checkpointing full"
        )
        if run.get("exitCode"):
            ran = f"FAILED (exit {run['exitCode']})"
        if run.get("limitApplied") is False:
            ran = f"LIMIT NOT APPLIED: {ran}"
        rows.append(
            f"| {name} | {rate if rate is not None else '-'} | {ratio} | {run.get('peakAllocatedGiB', '-')} | "
            f"{run.get('secondsPerStep', '-')} | {run.get('timeToFirstStepSeconds', '-')} | {run.get('tokensTrained', '-')} | {ran} |"
        )
    lines = [
        f"Device: {results['device']}; model: {results['model']}; {results['steps']} optimiser steps per run; "
        f"{results.get('data', 'uniform')} rows.",
        "",
    ]
    lines += [*rows, "", "Loss agreement with the recipe (per optimiser step):", ""]
    for name, agreement in results.get("lossAgreement", {}).items():
        lines.append(f"- {name}: {json.dumps(agreement)}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", nargs="?", default="all", choices=("all", "recipe"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/train-speed"))
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument(
        "--tiny", action="store_true", help="a 2-layer, 64-wide model and short rows (smoke run)"
    )
    parser.add_argument("--runs", default="recipe,project-capped,project-free")
    parser.add_argument(
        "--data",
        choices=("uniform", "zipf"),
        default="uniform",
        help="uniform random words (speed) or Zipf-distributed words with translated answers (loss curves)",
    )
    parser.add_argument(
        "--cap",
        type=float,
        help="GiB for the capped runs when the recipe does not run (its peak was 7.61 on the H200)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run at most")
    parser.add_argument("--budget", type=float, default=3600.0, help="seconds for the whole benchmark")
    parser.add_argument("--results", type=Path, help="where results.md/json go too (e.g. $OUT)")
    # `recipe` (the child process):
    parser.add_argument("--model")
    parser.add_argument("--train")
    parser.add_argument("--workdir")
    parser.add_argument("--result")
    args = parser.parse_args()
    if args.command == "recipe":
        run_recipe(args)
        return 0

    wanted = args.runs.split(",")
    known = {
        "recipe",
        "project-capped",
        "project-free",
        "project-profile",
        "project-profile-capped",
        *FIXED_RUNS,
    }
    if unknown := [n for n in wanted if n not in known]:
        # Before the model is built and any run spends device time.
        parser.error(f"unknown runs {unknown}: choose from {sorted(known)}")

    import torch

    deadline = time.monotonic() + float(args.budget)

    def timeout() -> float:
        return max(1.0, min(float(args.timeout), deadline - time.monotonic() - 5))

    root = args.out.resolve()
    root.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        args.layers = 2
    paths = build_assets(root, args)
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "model": f"random Mistral-7B-v0.3 shape, {args.layers} layers"
        if not args.tiny
        else "tiny Mistral, 2 layers",
        "steps": args.steps,
        "rows": args.rows,
        "data": args.data,
        "runs": {},
    }

    def save() -> None:
        results["lossAgreement"] = {
            name: loss_agreement(results["runs"]["recipe"].get("losses", []), run.get("losses", []))
            for name, run in results["runs"].items()
            if name != "recipe" and "recipe" in results["runs"]
        }
        for folder in {root, args.results} - {None}:
            (folder / "results.json").write_text(json.dumps(results, indent=2))
            (folder / "results.md").write_text(table(results))

    if "recipe" in wanted:
        out = root / "recipe.json"
        command = [
            sys.executable, str(Path(__file__).resolve()), "recipe", "--model", str(paths["model"]),
            "--train", str(paths["train"]), "--workdir", str(root / "recipe-work"), "--result", str(out),
            "--steps", str(args.steps),
        ]  # fmt: skip
        code, first = _stream(
            command,
            dict(os.environ),
            root / "recipe.log",
            timeout(),
            lambda line: line.startswith("BENCH_STEP 1"),
        )
        run = (
            json.loads(out.read_text())
            if code == 0 and out.exists()
            else {"exitCode": code, "logTail": (root / "recipe.log").read_text()[-3000:]}
        )
        run["timeToFirstStepSeconds"] = first
        results["runs"]["recipe"] = run
        save()
    cap = results["runs"].get("recipe", {}).get("peakAllocatedGiB") or args.cap
    # The project's runs go in the order --runs names them, so a short budget cuts the last ones.
    for name in [n for n in wanted if n != "recipe"]:
        if name in ("project-capped", "project-free"):
            limit = cap if name == "project-capped" else None
            if name == "project-capped" and limit is None:
                continue
            results["runs"][name] = run_project(paths, root, name, args.steps, limit, timeout())
            save()
            continue
        if name in FIXED_RUNS:
            results["runs"][name] = run_project(
                paths, root, name, args.steps, None, timeout(), fixed=FIXED_RUNS[name]
            )
            save()
            continue
        # project-profile(-capped): the default spec with the GPU to itself (or under the recipe's peak),
        # 4 steps, two micro-batches of step 3 profiled.
        capped = name == "project-profile-capped"
        if capped and cap is None:
            continue
        folder = (args.results or root) / ("profile-capped" if capped else "profile")
        shutil.rmtree(folder, ignore_errors=True)  # an earlier run's summary must not pass for this one's
        run = run_project(paths, root, name, 4, cap if capped else None, timeout(), profile=folder)
        summary = folder / "summary.json"
        results["profile-capped" if capped else "profile"] = {
            "exitCode": run.get("exitCode"),
            "speed": run.get("speed"),
            **(json.loads(summary.read_text()) if summary.exists() else {"missing": str(summary)}),
        }
        save()
    print(table(results), flush=True)
    return 0 if all(not r.get("exitCode") for r in results["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
