"""Stage 1, downloading: the data files, the output prefix's claim, and the tokenizer (not the weights:
the data check needs only the tokenizer, and the weights are often tens of GB)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base_model import resolve_tokenizer_files
from .manifest import InputFile
from .ownership import RunRecord, claim_output, data_digest
from .run_context import RunContext


@dataclass(frozen=True)
class DataFiles:
    train: Path
    validation: Path | None
    inputs: tuple[InputFile, ...] = ()


def download_data(ctx: RunContext) -> DataFiles:
    """Each node's local rank 0 downloads (the others read its files); the claim is global rank 0's."""
    files = ctx.dist.on_each_node("downloading the data", lambda: _fetch_data(ctx))
    ctx.state.inputs = list(files.inputs)
    # As soon as the data's digests are known, before the model download and any other write.
    ctx.state.owner = run_record(ctx)
    ctx.dist.on_main("claiming the output prefix", lambda: claim_output_prefix(ctx))
    return files


def _fetch_data(ctx: RunContext) -> DataFiles:
    data = ctx.spec.data
    # Keep the object's own name: the data report refers to files by name.
    train = ctx.config.path("input", "train", _basename(data.train_uri))
    inputs = [InputFile(uri=data.train_uri, sha256=ctx.storage.download_file(data.train_uri, train))]
    validation = None
    if data.validation_uri:
        validation = ctx.config.path("input", "validation", _basename(data.validation_uri))
        sha = ctx.storage.download_file(data.validation_uri, validation)
        inputs.append(InputFile(uri=data.validation_uri, sha256=sha))
    return DataFiles(train=train, validation=validation, inputs=tuple(inputs))


def run_record(ctx: RunContext) -> RunRecord:
    return RunRecord(
        uid=ctx.config.uid,
        name=ctx.config.name,
        namespace=ctx.config.namespace,
        data=ctx.state.inputs,
        data_digest=data_digest(ctx.state.inputs),
    )


def claim_output_prefix(ctx: RunContext) -> None:
    """Make sure the output prefix is this run's (see ownership.py); raises OutputPrefixInUse."""
    owner = ctx.state.owner = run_record(ctx)
    claim = claim_output(
        ctx.storage,
        ctx.spec.output.uri,
        owner,
        ctx.spec.output.on_existing,
        ctx.checkpoint_store(),
        resume_enabled=ctx.spec.checkpointing.resume,
    )
    ctx.state.output = claim.to_manifest(owner)


def load_run_tokenizer(ctx: RunContext) -> Any:
    from .modeling import load_tokenizer

    tokenizer_dir = ctx.dist.on_each_node(
        "downloading the tokenizer",
        lambda: resolve_tokenizer_files(
            ctx.spec.base_model, ctx.storage, ctx.config.path("base-model"), ctx.env
        ),
    )
    return load_tokenizer(tokenizer_dir, ctx.spec.base_model.trust_remote_code)


def _basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1] or "data.jsonl"
