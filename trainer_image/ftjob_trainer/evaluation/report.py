"""The evaluation's outputs: `eval.json`, a Markdown report with a loss curve, and sample predictions."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import Field

from ftjob.api.meta import ApiModel

from .samples import EvalSample


class LossPoint(ApiModel):
    step: int
    train_loss: float | None = None
    eval_loss: float | None = None


class EvalResults(ApiModel):
    """Everything measured, tuned and base side by side."""

    samples: int
    """Validation examples used for the generation metrics."""
    validation_examples: int
    eval_loss: float | None = None
    base_eval_loss: float | None = None
    perplexity: float | None = None
    base_perplexity: float | None = None
    train_loss: float | None = None
    tuned: dict[str, float] = Field(default_factory=dict)
    base: dict[str, float] = Field(default_factory=dict)
    history: list[LossPoint] = Field(default_factory=list)

    @property
    def delta(self) -> dict[str, float]:
        return {k: self.tuned[k] - self.base[k] for k in self.tuned if k in self.base}


def perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(loss) if loss < 50 else math.inf


def loss_history(log_history: list[dict[str, Any]]) -> list[LossPoint]:
    """Train and eval losses by step, from transformers' `trainer.state.log_history`."""
    points: dict[int, LossPoint] = {}
    for entry in log_history:
        step = int(entry.get("step", 0))
        point = points.setdefault(step, LossPoint(step=step))
        if "loss" in entry:
            point.train_loss = float(entry["loss"])
        if "eval_loss" in entry:
            point.eval_loss = float(entry["eval_loss"])
    return [
        points[s]
        for s in sorted(points)
        if points[s].train_loss is not None or points[s].eval_loss is not None
    ]


def plot_loss_curve(history: list[LossPoint], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display in a pod
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    train = [(p.step, p.train_loss) for p in history if p.train_loss is not None]
    evals = [(p.step, p.eval_loss) for p in history if p.eval_loss is not None]
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        ax.plot(*zip(*evals, strict=True), marker="o", label="validation loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_markdown(results: EvalResults, job_name: str, base_model: str) -> str:
    lines = [
        f"# Evaluation: {job_name}",
        "",
        f"Base model `{base_model}`; {results.samples} validation examples for the task metrics "
        f"({results.validation_examples} for the loss). Greedy decoding.",
        "",
        "| Metric | Base | Tuned | Difference |",
        "|---|---|---|---|",
        f"| Validation loss | {_fmt(results.base_eval_loss)} | {_fmt(results.eval_loss)} | "
        f"{_fmt(None if results.eval_loss is None or results.base_eval_loss is None else results.eval_loss - results.base_eval_loss)} |",
        f"| Perplexity | {_fmt(results.base_perplexity, 2)} | {_fmt(results.perplexity, 2)} | |",
    ]
    for name, tuned in results.tuned.items():
        base = results.base.get(name)
        diff = None if base is None else tuned - base
        lines.append(
            f"| {name} | {_fmt(base, 3)} | {_fmt(tuned, 3)} | {'-' if diff is None else f'{diff:+.3f}'} |"
        )
    lines += ["", "![loss curve](loss_curve.png)", "", "Sample predictions: `predictions.jsonl`.", ""]
    return "\n".join(lines)


def write_predictions(
    path: Path, samples: list[EvalSample], tuned: list[str], base: list[str] | None, limit: int = 20
) -> None:
    with path.open("w") as handle:
        for i, sample in enumerate(samples[:limit]):
            row = {"prompt": sample.prompt, "reference": sample.reference, "tuned": tuned[i]}
            if base is not None:
                row["base"] = base[i]
            handle.write(json.dumps(row) + "\n")


def write_report(
    directory: Path,
    results: EvalResults,
    samples: list[EvalSample],
    tuned: list[str],
    base: list[str] | None,
    *,
    job_name: str,
    base_model: str,
) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "eval.json": directory / "eval.json",
        "report.md": directory / "report.md",
        "loss_curve.png": directory / "loss_curve.png",
        "predictions.jsonl": directory / "predictions.jsonl",
    }
    payload = results.model_dump(mode="json", by_alias=True)
    payload["delta"] = results.delta
    files["eval.json"].write_text(json.dumps(payload, indent=2) + "\n")
    plot_loss_curve(results.history, files["loss_curve.png"])
    files["report.md"].write_text(render_markdown(results, job_name, base_model))
    write_predictions(files["predictions.jsonl"], samples, tuned, base)
    return files
