"""How long evaluation's generation takes, before and after issue 12, on the demo task (a benchmark script).

    python -m ftjob_cli.demo.eval_speed .ftjob/demo/results/adapter --samples 60

Loads SmolLM2-135M-Instruct with the adapter `make demo` trained, takes `--samples` examples of the demo
dataset (a fresh seed, so not the training ones), and generates every answer with the tuned model and the
base model (adapter off), twice:

- before: the old defaults, batches of 8 in the samples' order, 256 new tokens (the old
  `maxNewTokens` default; `--before-budget` changes it);
- after: the budget derived from the references (`generation_budget`), batches of 16 sorted by length.

Prints seconds per model, the budget, the answers cut by it and the exact-match score of each way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _old_generate(model: Any, tokenizer: Any, samples: Sequence[Any], budget: int) -> list[str]:
    """The evaluation's generation as it was before (batches of 8 in order, fixed budget)."""
    import torch

    from ftjob_trainer.evaluation.generation import stop_token_ids

    tokenizer.padding_side = "left"
    answers: list[str] = []
    for start in range(0, len(samples), 8):
        batch = samples[start : start + 8]
        texts = [
            tokenizer.apply_chat_template(s.prompt, tokenize=False, add_generation_prompt=True) for s in batch
        ]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            output = model.generate(
                **inputs,
                max_new_tokens=budget,
                do_sample=False,
                eos_token_id=stop_token_ids(tokenizer),
                pad_token_id=tokenizer.pad_token_id,
                use_cache=True,
            )
        new = output[:, inputs["input_ids"].shape[1] :]
        answers += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return answers


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ftjob_cli.demo.eval_speed", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "adapter",
        type=Path,
        nargs="?",
        help="the adapter folder `make demo` copied out (none: base model only)",
    )
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--before-budget", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftjob_trainer.evaluation.generation import generate_answers, generation_budget
    from ftjob_trainer.evaluation.metrics import score
    from ftjob_trainer.evaluation.samples import to_sample

    from .models import smollm2_dir
    from .orders import write_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the trainer does on a CPU
    data = write_dataset(Path(".ftjob/eval-speed/orders.jsonl"), count=args.samples, seed=12)
    samples = []
    for line in data.read_text().splitlines():
        try:
            messages = json.loads(line)["messages"]
            samples.append(to_sample(messages))
        except (ValueError, KeyError, TypeError):
            continue  # the dataset's deliberately broken lines
    samples = samples[: args.samples]
    base_model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir()))
    tokenizer = AutoTokenizer.from_pretrained(str(args.adapter or smollm2_dir()))
    model: Any = PeftModel.from_pretrained(base_model, str(args.adapter)) if args.adapter else base_model
    model.eval()
    references = [s.reference for s in samples]
    derived = generation_budget(
        [len(tokenizer(r, add_special_tokens=False).input_ids) for r in references], None
    )

    rows = []
    for label in ("tuned", "base") if args.adapter else ("base",):
        context = model.disable_adapter() if args.adapter and label == "base" else contextlib.nullcontext()
        with context:
            started = time.monotonic()
            old = _old_generate(model, tokenizer, samples, args.before_budget)
            old_seconds = time.monotonic() - started
            started = time.monotonic()
            new = generate_answers(model, tokenizer, samples, max_new_tokens=derived, batch_size=16)
            new_seconds = time.monotonic() - started
        rows.append(
            (
                label,
                old_seconds,
                score(["exactMatch"], old, references)["exactMatch"],
                new_seconds,
                score(["exactMatch"], [a.text for a in new], references)["exactMatch"],
                sum(a.truncated for a in new),
            )
        )
    print(
        f"{len(samples)} samples; before: {args.before_budget} new tokens, batches of 8; after: {derived} (derived), batches of 16"
    )
    print(f"{'model':<6} {'before s':>9} {'exactMatch':>10} {'after s':>8} {'exactMatch':>10} {'cut':>4}")
    for label, old_s, old_em, new_s, new_em, cut in rows:
        print(f"{label:<6} {old_s:>9.1f} {old_em:>10.3f} {new_s:>8.1f} {new_em:>10.3f} {cut:>4}")
    total_old, total_new = sum(r[1] for r in rows), sum(r[3] for r in rows)
    print(f"total  {total_old:>9.1f} {'':>10} {total_new:>8.1f}   ({total_old / total_new:.1f}x faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
