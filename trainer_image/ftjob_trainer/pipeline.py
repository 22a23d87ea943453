"""One training run, stage by stage: inputs, data checks, training, evaluation, outputs.

Every stage reports progress; every file is written under the work directory and then published under
the output URI. Errors are `TrainerError`s (see errors.py) that the CLI turns into an exit code and a
termination summary.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftjob.api.status import Artifacts, DatasetStats, Metrics
from ftjob.api.uris import join_uri
from ftjob.contract import Stage, TerminationSummary

from .base_model import ResolvedModel, resolve_base_model, resolve_tokenizer_files
from .checkpoints import CheckpointStore
from .config import TrainerConfig
from .errors import Interrupted
from .evaluation.report import EvalResults
from .manifest import InputFile, Manifest
from .ownership import RunRecord, claim_output, data_digest, ensure_owner
from .progress import ProgressReporter, StageTracker, now_iso
from .signals import StopRequest
from .storage import Storage, open_storage

log = logging.getLogger("ftjob.trainer")


@dataclass
class Outputs:
    """Local layout of what gets published, mirrored under the output URI."""

    root: Path

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    def artifacts(self, output_uri: str, merged: bool) -> Artifacts:
        return Artifacts(
            adapter=join_uri(output_uri, "adapter") + "/",
            merged_model=join_uri(output_uri, "merged") + "/" if merged else None,
            eval_report=join_uri(output_uri, "eval", "report.md"),
            eval_results=join_uri(output_uri, "eval", "eval.json"),
            data_report=join_uri(output_uri, "data-report.json"),
            manifest=join_uri(output_uri, "manifest.json"),
        )


@dataclass
class RunState:
    """What earlier stages hand to later ones, and to the termination summary on failure."""

    started_at: str = field(default_factory=now_iso)
    inputs: list[InputFile] = field(default_factory=list)
    dataset: DatasetStats | None = None
    resumed_from_step: int | None = None
    owner: RunRecord | None = None
    """This run, as recorded in `<output>/run.json` once it has claimed the output prefix."""
    output: dict[str, Any] | None = None
    """What the claim found and did, for the manifest."""


class Pipeline:
    def __init__(
        self, config: TrainerConfig, env: Mapping[str, str], reporter: ProgressReporter, stop: StopRequest
    ) -> None:
        self.config = config
        self.spec = config.spec
        self.env = env
        self.reporter = StageTracker(reporter)
        self.stop = stop
        self.storage: Storage = open_storage(self.spec.storage, env)
        self.outputs = Outputs(config.path("output"))
        self.state = RunState()

    def stage(self, stage: Stage) -> None:
        log.info("stage: %s", stage)
        self.reporter.stage(stage)
        if self.stop.requested:
            raise Interrupted(f"stopped by {self.stop.signal_name} during {stage}")

    # --- stages -------------------------------------------------------------------------------------
    def run(self) -> TerminationSummary:
        self.stage("downloading")
        train_file, validation_file = self.download_data()
        # The data check needs the tokenizer, not the weights: those (often tens of GB) come after it.
        model_dir = self.config.path("base-model")
        from .modeling import load_tokenizer

        tokenizer_dir = resolve_tokenizer_files(self.spec.base_model, self.storage, model_dir, self.env)
        tokenizer = load_tokenizer(tokenizer_dir, self.spec.base_model.trust_remote_code)

        self.stage("validating-data")
        prepared = self.prepare_data(train_file, validation_file, tokenizer)

        self.stage("loading-model")
        model = resolve_base_model(self.spec.base_model, self.storage, model_dir, self.env)
        from .train_run import train_and_evaluate

        result = train_and_evaluate(self, model, tokenizer, prepared)
        return self.publish(model, result)

    def download_data(self) -> tuple[Path, Path | None]:
        data = self.spec.data
        # Keep the object's own name: the data report refers to files by name.
        train_file = self.config.path("input", "train", _basename(data.train_uri))
        sha = self.storage.download_file(data.train_uri, train_file)
        self.state.inputs.append(InputFile(uri=data.train_uri, sha256=sha))
        validation_file = None
        if data.validation_uri:
            validation_file = self.config.path("input", "validation", _basename(data.validation_uri))
            sha = self.storage.download_file(data.validation_uri, validation_file)
            self.state.inputs.append(InputFile(uri=data.validation_uri, sha256=sha))
        # As soon as the data's digests are known, before the model download and any other write.
        self.claim_output()
        return train_file, validation_file

    def claim_output(self) -> None:
        """Make sure the output prefix is this run's (see ownership.py); raises OutputPrefixInUse."""
        owner = RunRecord(
            uid=self.config.uid,
            name=self.config.name,
            namespace=self.config.namespace,
            data=self.state.inputs,
            data_digest=data_digest(self.state.inputs),
        )
        self.state.owner = owner
        claim = claim_output(
            self.storage,
            self.spec.output.uri,
            owner,
            self.spec.output.on_existing,
            self.checkpoint_store(),
            resume_enabled=self.spec.checkpointing.resume,
        )
        self.state.output = claim.to_manifest(owner)

    def ensure_owner(self) -> None:
        if self.state.owner is not None:
            ensure_owner(self.storage, self.spec.output.uri, self.state.owner)

    def prepare_data(self, train_file: Path, validation_file: Path | None, tokenizer: Any) -> Any:
        from .chat_masks import tokenize_chat
        from .data import DataRejected, prepare_data

        def count_tokens(messages: list[dict[str, str]]) -> int:
            return len(tokenize_chat(tokenizer, messages).input_ids)

        try:
            prepared = prepare_data(
                train_file,
                validation_file,
                self.spec.data,
                seed=self.spec.training.seed,
                max_seq_length=self.spec.training.max_seq_length,
                out_dir=self.config.path("data"),
                count_tokens=count_tokens,
            )
        except DataRejected as exc:
            self.state.dataset = exc.report.to_dataset_stats()
            self.publish_data_report(exc.report)
            raise
        self.state.dataset = prepared.report.to_dataset_stats()
        self.publish_data_report(prepared.report)
        return prepared

    def publish_data_report(self, report: Any) -> None:
        # Written before any GPU time is spent, whatever the verdict: it is the answer to "why?".
        local = self.outputs.root / "data-report.json"
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(report.to_json())
        (self.outputs.root / "data-report.md").write_text(report.to_markdown())
        self.storage.upload_file(local, join_uri(self.spec.output.uri, "data-report.json"))
        self.storage.upload_file(
            self.outputs.root / "data-report.md", join_uri(self.spec.output.uri, "data-report.md")
        )

    def checkpoint_store(self) -> CheckpointStore:
        return CheckpointStore(
            storage=self.storage,
            output_uri=self.spec.output.uri,
            fingerprint=self.config.training_fingerprint,
            keep_last=self.spec.checkpointing.keep_last,
            data_digest=self.state.owner.data_digest if self.state.owner else data_digest(self.state.inputs),
            guard=self.ensure_owner,
        )

    def publish(self, model: ResolvedModel, result: TrainResult) -> TerminationSummary:
        self.stage("uploading")
        self.ensure_owner()
        artifacts = self.outputs.artifacts(self.spec.output.uri, merged=self.spec.output.merge_adapter)
        metrics = result.metrics()
        manifest = Manifest(
            job={"name": self.config.name, "namespace": self.config.namespace, "uid": self.config.uid},
            started_at=self.state.started_at,
            finished_at=now_iso(),
            base_model={"uri": model.uri, "revision": model.revision, "files": model.files},
            data=self.state.inputs,
            spec=self.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
            resolved=result.resolved,
            seed=self.spec.training.seed,
            resumed_from_step=self.state.resumed_from_step,
            output=self.state.output,
            tokens_trained=result.tokens_trained,
            metrics=metrics,
            artifacts=artifacts,
        )
        (self.outputs.root / "manifest.json").write_text(
            json.dumps(manifest.model_dump(mode="json", by_alias=True), indent=2) + "\n"
        )
        for sub in ("adapter", "eval") + (("merged",) if self.spec.output.merge_adapter else ()):
            self.storage.upload_dir(self.outputs.root / sub, join_uri(self.spec.output.uri, sub))
        # The manifest goes last: its presence says the rest is complete.
        self.storage.upload_file(
            self.outputs.root / "manifest.json", join_uri(self.spec.output.uri, "manifest.json")
        )
        self.stage("done")
        return TerminationSummary(
            outcome="Succeeded",
            reason="TrainingSucceeded",
            message=_success_message(result.eval),
            metrics=metrics,
            dataset=self.state.dataset,
            artifacts=artifacts,
            resumed_from_step=self.state.resumed_from_step,
        )


@dataclass
class TrainResult:
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


def _basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1] or "data.jsonl"


def _success_message(results: EvalResults) -> str:
    parts = []
    if results.eval_loss is not None:
        parts.append(f"validation loss {results.eval_loss:.4f}")
        if results.base_eval_loss is not None:
            parts[-1] += f" (base {results.base_eval_loss:.4f})"
    for name, value in results.tuned.items():
        base = results.base.get(name)
        parts.append(f"{name} {value:.3f}" + (f" (base {base:.3f})" if base is not None else ""))
    return "trained and evaluated: " + ", ".join(parts)
