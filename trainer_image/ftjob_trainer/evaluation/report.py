"""The evaluation's outputs: `eval.json`, `report.md` with a loss curve and a metrics chart, and every
evaluated prediction (`predictions.jsonl`).

`report.md` is read on GitHub, in an S3 console and in a terminal (`ftjob describe`), so it sticks to
what all three render: headings, tables, images with alt text and plain paragraphs; no HTML."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from pydantic import Field

from ftjob.api.meta import ApiModel

from .failures import Failure, Prediction, headline_metric, select_failures
from .generation import Answer
from .samples import EvalSample


class GenerationStats(ApiModel):
    """How the answers were generated, and how many the token limit cut."""

    max_new_tokens: int
    budget: str
    """`derived` (from the references) or `spec` (spec.evaluation.maxNewTokens)."""
    longest_reference_tokens: int
    batch_size: int
    truncated: dict[str, int] = Field(default_factory=dict)
    """Answers cut by the limit, per model (`tuned`, `base`)."""
    seconds: dict[str, float] = Field(default_factory=dict)
    """Wall-clock seconds per part: `loss` (both models' validation loss), `tuned`, `base` (generation)."""


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
    generation: GenerationStats | None = None

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


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display in a pod
    import matplotlib.pyplot as plt

    return plt


def plot_loss_curve(history: list[LossPoint], path: Path, base_eval_loss: float | None = None) -> Path:
    """Training loss, validation loss at each evaluation, and the base model's validation loss as the
    line the tuned model has to get under."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    train = [(p.step, p.train_loss) for p in history if p.train_loss is not None]
    evals = [(p.step, p.eval_loss) for p in history if p.eval_loss is not None]
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="tab:blue")
    if evals:
        ax.plot(*zip(*evals, strict=True), marker="o", label="validation loss (tuned)", color="tab:orange")
        for step, loss in evals[-1:]:
            ax.annotate(f"{loss:.3f}", (step, loss), textcoords="offset points", xytext=(0, 8), ha="center")
    if base_eval_loss is not None and math.isfinite(base_eval_loss):
        ax.axhline(
            base_eval_loss,
            linestyle="--",
            color="tab:gray",
            label=f"validation loss (base) {base_eval_loss:.3f}",
        )
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if train or evals or base_eval_loss is not None:
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_metrics(base: dict[str, float], tuned: dict[str, float], path: Path) -> Path:
    """One pair of bars per task metric, base against tuned, each with its value."""
    plt = _pyplot()
    names = list(tuned)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(names) + 1), 3.6), dpi=100)
    width = 0.38
    xs = list(range(len(names)))
    series = [("base", base, "tab:gray", -width / 2), ("tuned", tuned, "tab:green", width / 2)]
    for label, values, color, offset in series:
        heights = [values.get(n, 0.0) for n in names]
        bars = ax.bar([x + offset for x in xs], heights, width, label=label, color=color)
        ax.bar_label(bars, labels=[f"{values[n]:.2f}" if n in values else "-" for n in names], fontsize=8)
    ax.set_xticks(xs, names)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("score (0 to 1)")
    ax.legend(loc="upper left", ncols=2, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_markdown(
    results: EvalResults, job_name: str, base_model: str, failures: list[Failure] | None = None
) -> str:
    lines = [
        f"# Evaluation: {job_name}",
        "",
        f"Base model `{base_model}`; {results.samples} validation examples for the task metrics "
        f"({results.validation_examples} for the loss). Greedy decoding.",
        "",
        "| Metric | Base | Tuned | Change |",
        "|---|---:|---:|---:|",
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
    lines.append("")
    if results.generation is not None:
        lines += [_generation_paragraph(results.generation, results.samples), ""]
    lines += ["![Loss curve: train, validation, and the base model's validation loss](loss_curve.png)", ""]
    if results.tuned:
        lines += ["![Task metrics, base against tuned](metrics.png)", ""]
    if failures is not None:
        lines += render_failures(failures, results.samples)
    lines += ["Every evaluated answer, with its scores: `predictions.jsonl`.", ""]
    return "\n".join(lines)


def _generation_paragraph(gen: GenerationStats, samples: int) -> str:
    how = (
        f"derived from the references: the longest is {gen.longest_reference_tokens} tokens"
        if gen.budget == "derived"
        else "set by spec.evaluation.maxNewTokens"
    )
    cut = ", ".join(f"{model} {count} of {samples}" for model, count in gen.truncated.items())
    took = ", ".join(f"{part} {seconds:.1f} s" for part, seconds in gen.seconds.items())
    return (
        f"Answers were limited to {gen.max_new_tokens} new tokens ({how}), in batches of {gen.batch_size}. "
        f"Cut by that limit: {cut or 'none'}. Time: {took}."
    )


def render_failures(failures: list[Failure], samples: int) -> list[str]:
    if not failures:
        return [
            "## Failures",
            "",
            f"The tuned model and the base model answered all {samples} samples right.",
            "",
        ]
    whose = failures[0].model
    title = (
        "Where the tuned model still fails"
        if whose == "tuned"
        else "The tuned model answered every sample right; where the base model failed"
    )
    lines = [f"## {title}", ""]
    for failure in failures:
        p = failure.prediction
        asked = next((m["content"] for m in reversed(p.prompt) if m.get("role") == "user"), "")
        lines += [
            f"**Sample {p.index}.** Prompt: {_cell(asked, 300, in_table=False)}",
            "",
            "| Reference | Base | Tuned |",
            "|---|---|---|",
            f"| {_cell(p.reference)} | {_cell(p.base, cut=p.base_truncated)} | {_cell(p.tuned, cut=p.tuned_truncated)} |",
            "",
            f"What differs ({whose} against the reference): " + "; ".join(failure.differences) + ".",
            "",
        ]
    return lines


def _cell(text: str | None, limit: int = 240, *, cut: bool = False, in_table: bool = True) -> str:
    """Inline code on one line, long text shortened; in a table, pipes escaped (GitHub and rich both
    split cells on a bare pipe, even inside code, and show the escaped one as a plain pipe)."""
    if text is None:
        return "-"
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    if not flat:
        return "(empty)"
    longest_run = max((len(r) for r in re.findall(r"`+", flat)), default=0)
    fence = "`" * (longest_run + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    body = flat.replace("|", "\\|") if in_table else flat
    code = f"{fence}{pad}{body}{pad}{fence}"
    return code + (" (cut by the token limit)" if cut else "")


def prediction_rows(
    samples: list[EvalSample],
    tuned: list[Answer],
    base: list[Answer] | None,
    tuned_scores: list[dict[str, float]],
    base_scores: list[dict[str, float]] | None,
) -> list[Prediction]:
    return [
        Prediction(
            index=i,
            prompt=sample.prompt,
            reference=sample.reference,
            tuned=tuned[i].text,
            tuned_scores=tuned_scores[i],
            tuned_truncated=tuned[i].truncated,
            base=None if base is None else base[i].text,
            base_scores=None if base_scores is None else base_scores[i],
            base_truncated=False if base is None else base[i].truncated,
        )
        for i, sample in enumerate(samples)
    ]


def write_predictions(path: Path, rows: list[Prediction]) -> None:
    """Every evaluated sample: prompt, reference, each model's answer, its scores and whether it was cut."""
    with path.open("w") as handle:
        for row in rows:
            out: dict[str, Any] = {
                "index": row.index,
                "prompt": row.prompt,
                "reference": row.reference,
                "tuned": row.tuned,
                "tunedScores": row.tuned_scores,
                "tunedTruncated": row.tuned_truncated,
            }
            if row.base is not None:
                out |= {"base": row.base, "baseScores": row.base_scores, "baseTruncated": row.base_truncated}
            handle.write(json.dumps(out, ensure_ascii=False) + "\n")


def write_report(
    directory: Path,
    results: EvalResults,
    rows: list[Prediction],
    *,
    job_name: str,
    base_model: str,
    failures_shown: int = 5,
) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "eval.json": directory / "eval.json",
        "report.md": directory / "report.md",
        "loss_curve.png": directory / "loss_curve.png",
        "predictions.jsonl": directory / "predictions.jsonl",
    }
    payload = results.model_dump(mode="json", by_alias=True, exclude_none=True)
    payload["delta"] = results.delta
    files["eval.json"].write_text(json.dumps(payload, indent=2) + "\n")
    plot_loss_curve(results.history, files["loss_curve.png"], results.base_eval_loss)
    if results.tuned:
        files["metrics.png"] = plot_metrics(results.base, results.tuned, directory / "metrics.png")
    failures = select_failures(rows, failures_shown) if headline_metric(list(results.tuned)) else None
    files["report.md"].write_text(render_markdown(results, job_name, base_model, failures))
    write_predictions(files["predictions.jsonl"], rows)
    return files
