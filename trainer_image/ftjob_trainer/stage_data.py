"""Stage 2, validating-data: clean and split the data, and publish the data report whatever the verdict
(before any GPU time is spent: it is the answer to "why?")."""

from __future__ import annotations

from typing import Any

from ftjob.api.uris import join_uri

from .data import DataRejected, PreparedData, prepare_data
from .data.report import DataReport
from .run_context import RunContext
from .stage_inputs import DataFiles


def check_data(ctx: RunContext, files: DataFiles, tokenizer: Any) -> PreparedData:
    from .chat_masks import tokenize_chat

    def count_tokens(messages: list[dict[str, str]]) -> int:
        return len(tokenize_chat(tokenizer, messages).input_ids)

    try:
        prepared = prepare_data(
            files.train,
            files.validation,
            ctx.spec.data,
            seed=ctx.spec.training.seed,
            max_seq_length=ctx.spec.training.max_seq_length,
            out_dir=ctx.config.path("data"),
            count_tokens=count_tokens,
        )
    except DataRejected as exc:
        ctx.state.dataset = exc.report.to_dataset_stats()
        publish_data_report(ctx, exc.report)
        raise
    ctx.state.dataset = prepared.report.to_dataset_stats()
    publish_data_report(ctx, prepared.report)
    return prepared


def publish_data_report(ctx: RunContext, report: DataReport) -> None:
    if not ctx.dist.is_main:  # another node's local rank 0 checked the same data: rank 0 publishes
        return
    root = ctx.outputs.root
    root.mkdir(parents=True, exist_ok=True)
    (root / "data-report.json").write_text(report.to_json())
    (root / "data-report.md").write_text(report.to_markdown())
    for name in ("data-report.json", "data-report.md"):
        ctx.storage.upload_file(root / name, join_uri(ctx.spec.output.uri, name))
