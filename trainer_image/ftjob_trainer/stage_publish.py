"""Stage 6, uploading: the adapter, the evaluation and the manifest under the output prefix, and the
summary that ends up in the termination message."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from ftjob.api.status import Metrics
from ftjob.api.uris import join_uri
from ftjob.contract import GATE_NOT_MET, TerminationSummary

from .base_model import ResolvedModel
from .durable_summary import write_summary
from .evaluation.report import EvalResults
from .gate import judge
from .manifest import Manifest
from .progress import now_iso
from .run_context import REJECTED, RunContext

log = logging.getLogger("ftjob.trainer")


@dataclass(frozen=True)
class RunResult:
    """What training and evaluation produced, as the manifest and the summary report it."""

    eval: EvalResults
    resolved: dict[str, Any]
    tokens_trained: int | None

    def metrics(self) -> Metrics:
        e = self.eval
        return Metrics(
            train_loss=e.train_loss,
            eval_loss=e.eval_loss,
            perplexity=e.perplexity,
            base_eval_loss=e.base_eval_loss,
            tuned=e.tuned,
            base=e.base,
        )


def publish(ctx: RunContext, model: ResolvedModel, result: RunResult) -> TerminationSummary:
    """Upload everything; the summary says Succeeded, or Failed/EvaluationGateNotMet when the tuned model
    missed spec.evaluation.gate (its models then go under `rejected/`)."""
    ctx.ensure_owner()
    spec = ctx.spec
    verdict = judge(spec.evaluation.gate, result.eval) if spec.evaluation.gate is not None else None
    rejected = verdict is not None and not verdict.passed
    artifacts = ctx.outputs.artifacts(spec.output.uri, merged=spec.output.merge_adapter, rejected=rejected)
    metrics = result.metrics()
    resolved = dict(result.resolved)
    if verdict is not None:
        resolved["evaluationGate"] = verdict.to_manifest()
        log.info("%s", verdict.message)
    manifest = Manifest(
        job={"name": ctx.config.name, "namespace": ctx.config.namespace, "uid": ctx.config.uid},
        started_at=ctx.state.started_at,
        finished_at=now_iso(),
        base_model={"uri": model.uri, "revision": model.revision, "files": model.files},
        data=ctx.state.inputs,
        spec=spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        resolved=resolved,
        seed=spec.training.seed,
        resumed_from_step=ctx.state.resumed_from_step,
        output=ctx.state.output,
        tokens_trained=result.tokens_trained,
        metrics=metrics,
        artifacts=artifacts,
    )
    root = ctx.outputs.root
    (root / "manifest.json").write_text(
        json.dumps(manifest.model_dump(mode="json", by_alias=True), indent=2) + "\n"
    )
    models_uri = join_uri(spec.output.uri, REJECTED) if rejected else spec.output.uri
    for sub in ("adapter",) + (("merged",) if spec.output.merge_adapter else ()):
        ctx.storage.upload_dir(root / sub, join_uri(models_uri, sub))
    ctx.storage.upload_dir(root / "eval", join_uri(spec.output.uri, "eval"))
    # The manifest goes last: its presence says the rest is complete.
    ctx.storage.upload_file(root / "manifest.json", join_uri(spec.output.uri, "manifest.json"))
    if rejected and verdict is not None:
        summary = TerminationSummary(
            outcome="Failed",
            reason=GATE_NOT_MET,
            message=f"{verdict.message}; the adapter is under {artifacts.adapter}, not promoted",
            metrics=metrics,
            dataset=ctx.state.dataset,
            artifacts=artifacts,
            resumed_from_step=ctx.state.resumed_from_step,
        )
    else:
        message = success_message(result.eval)
        if verdict is not None:
            message = f"{message}; {verdict.message}"
        summary = TerminationSummary(
            outcome="Succeeded",
            reason="TrainingSucceeded",
            message=message,
            metrics=metrics,
            dataset=ctx.state.dataset,
            artifacts=artifacts,
            resumed_from_step=ctx.state.resumed_from_step,
        )
    # The durable copy of the termination message, re-read if the pod is gone before the operator read it.
    write_summary(ctx.storage, spec.output.uri, ctx.identity(), summary)
    return summary


def success_message(results: EvalResults) -> str:
    parts = []
    if results.eval_loss is not None:
        parts.append(f"validation loss {results.eval_loss:.4f}")
        if results.base_eval_loss is not None:
            parts[-1] += f" (base {results.base_eval_loss:.4f})"
    for name, value in results.tuned.items():
        base = results.base.get(name)
        parts.append(f"{name} {value:.3f}" + (f" (base {base:.3f})" if base is not None else ""))
    return "trained and evaluated: " + ", ".join(parts)
