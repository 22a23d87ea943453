"""What every stage of a run shares: the configuration, storage, progress, the stop request, the local
layout of the outputs, and what earlier stages found out (for later stages and the termination summary).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftjob.api import FineTuneJobSpec
from ftjob.api.status import Artifacts, DatasetStats
from ftjob.api.uris import join_uri
from ftjob.contract import Stage

from .checkpoints import CheckpointStore
from .config import TrainerConfig
from .distributed import Distributed, mark_agreed
from .durable_summary import RunIdentity
from .errors import Interrupted
from .manifest import InputFile
from .ownership import RunRecord, data_digest, ensure_owner
from .progress import ProgressReporter, StageTracker, now_iso
from .signals import StopRequest
from .storage import Storage, open_storage

log = logging.getLogger("ftjob.trainer")

REJECTED = "rejected"
"""Sub-prefix of the models (adapter, merged) of a run that missed its evaluation gate."""


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

    def artifacts(self, output_uri: str, merged: bool, rejected: bool = False) -> Artifacts:
        """Where everything lands; a model that missed the evaluation gate goes under `rejected/`, where
        automation that promotes `adapter/` does not look."""
        models = join_uri(output_uri, REJECTED) if rejected else output_uri
        return Artifacts(
            adapter=join_uri(models, "adapter") + "/",
            merged_model=join_uri(models, "merged") + "/" if merged else None,
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


class RunContext:
    def __init__(
        self,
        config: TrainerConfig,
        env: Mapping[str, str],
        reporter: ProgressReporter,
        stop: StopRequest,
        dist: Distributed | None = None,
    ) -> None:
        self.config = config
        self.dist = dist or Distributed()
        self.spec: FineTuneJobSpec = config.spec
        self.env = env
        self.reporter = StageTracker(reporter)
        self.stop = stop
        self.storage: Storage = open_storage(self.spec.storage, env)
        self.outputs = Outputs(config.path("output"))
        self.state = RunState()

    def enter(self, stage: Stage) -> None:
        """Announce a stage; a stop requested in between ends the run here, before the stage's work."""
        log.info("stage: %s", stage)
        self.reporter.stage(stage)
        if self.stop_agreed():
            raise mark_agreed(Interrupted(f"stopped by {self.stop.signal_name} during {stage}"))

    def stop_agreed(self) -> bool:
        """Whether to stop now: with several processes, every rank stops when one of them was told to (torchrun
        forwards SIGTERM to all, but not at the same instant), so none waits for the others in a collective."""
        if self.dist.any(self.stop.requested) and not self.stop.requested:
            self.stop.set("SIGTERM")
        return self.stop.requested

    def ensure_owner(self) -> None:
        """Before every write under the output prefix: it must still be this run's (see ownership.py)."""
        if self.state.owner is not None:
            ensure_owner(self.storage, self.spec.output.uri, self.state.owner)

    def identity(self) -> RunIdentity:
        """This run, as its durable summary records it (the data digest is known once the data is in)."""
        return RunIdentity(
            uid=self.config.uid,
            spec_digest=self.config.spec_digest,
            data_digest=self.state.owner.data_digest if self.state.owner else data_digest(self.state.inputs),
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
