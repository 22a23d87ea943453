"""One training run, as the sequence of its stages; each stage lives in its own module (stage_*.py) and
takes and returns typed values. Every stage reports progress; every file is written under the work
directory and then published under the output URI. Errors are `TrainerError`s (see errors.py) that the
CLI turns into an exit code and a termination summary.

The torch-importing stages (training, evaluation) are imported only when reached, so a run that fails
its data check never pays for importing them.
"""

from __future__ import annotations

import logging

from ftjob.contract import TerminationSummary

from .base_model import resolve_base_model
from .durable_summary import finished_before
from .run_context import RunContext
from .stage_data import check_data
from .stage_inputs import download_data, load_run_tokenizer
from .stage_publish import RunResult, publish

log = logging.getLogger("ftjob.trainer")


def run_pipeline(ctx: RunContext) -> TerminationSummary:
    ctx.enter("downloading")
    files = download_data(ctx)
    done = ctx.dist.on_main(
        "reading an earlier result", lambda: finished_before(ctx.storage, ctx.spec.output.uri, ctx.identity())
    )
    if done is not None:
        log.warning(
            "this run (same uid, spec and data) already succeeded and published its results under %s: not "
            "training again; its summary stands. To train again, change the spec or use another output prefix",
            ctx.spec.output.uri,
        )
        ctx.enter("done")
        return done
    tokenizer = load_run_tokenizer(ctx)

    ctx.enter("validating-data")
    # Deterministic: every node's local rank 0 prepares the same files (rank 0 publishes the report).
    prepared = ctx.dist.on_each_node("checking the data", lambda: check_data(ctx, files, tokenizer))
    ctx.state.dataset = prepared.report.to_dataset_stats()

    ctx.enter("loading-model")
    model_source = ctx.dist.on_each_node(
        "downloading the model",
        lambda: resolve_base_model(ctx.spec.base_model, ctx.storage, ctx.config.path("base-model"), ctx.env),
    )

    from .stage_evaluate import evaluate, merge_adapter
    from .stage_train import train

    trained = train(ctx, model_source, tokenizer, prepared)  # enters "training" once resumed

    ctx.enter("evaluating")
    results = evaluate(ctx, trained, tokenizer, prepared)  # None on every rank but 0
    if ctx.spec.output.merge_adapter:
        ctx.dist.on_main("merging the adapter", lambda: merge_adapter(ctx, model_source, trained.plan.dtype))

    ctx.enter("uploading")

    def publish_all() -> TerminationSummary:
        assert results is not None  # rank 0 evaluated
        result = RunResult(eval=results, resolved=trained.resolved, tokens_trained=trained.tokens_trained)
        return publish(ctx, model_source, result)

    summary = ctx.dist.on_main("publishing", publish_all)
    ctx.enter("done")
    return summary
