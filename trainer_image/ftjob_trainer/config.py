"""The trainer's whole configuration comes from its environment (filled by the Job the operator renders),
so a pod can be replayed as a local process from its spec alone."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ftjob import contract
from ftjob.api import FineTuneJobSpec, format_validation_errors

from .errors import ConfigInvalid


@dataclass(frozen=True)
class TrainerConfig:
    spec: FineTuneJobSpec
    name: str
    namespace: str
    uid: str
    workdir: Path
    termination_log: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TrainerConfig:
        raw = env.get(contract.ENV_SPEC)
        if not raw:
            raise ConfigInvalid(f"{contract.ENV_SPEC} is not set: it must hold the FineTuneJob spec as JSON")
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigInvalid(f"{contract.ENV_SPEC} is not valid JSON: {exc}") from exc
        try:
            spec = FineTuneJobSpec.model_validate(data)
        except ValidationError as exc:
            lines = format_validation_errors(exc, prefix="spec")
            raise ConfigInvalid("invalid spec: " + "; ".join(lines)) from exc
        return cls(
            spec=spec,
            name=env.get(contract.ENV_NAME, "local"),
            namespace=env.get(contract.ENV_NAMESPACE, "default"),
            uid=env.get(contract.ENV_UID, ""),
            workdir=Path(env.get(contract.ENV_WORKDIR, contract.DEFAULT_WORKDIR)),
            termination_log=Path(env.get(contract.ENV_TERMINATION_LOG, contract.DEFAULT_TERMINATION_LOG)),
        )

    @property
    def training_fingerprint(self) -> str:
        """Identifies what a checkpoint was trained for: every spec field that changes the training
        trajectory. A checkpoint is resumed only when this matches."""
        spec = self.spec
        relevant = {
            "baseModel": spec.base_model.uri,
            "data": spec.data.model_dump(mode="json", by_alias=True),
            "peft": spec.peft.model_dump(mode="json", by_alias=True),
            "training": spec.training.model_dump(mode="json", by_alias=True),
        }
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]

    def path(self, *parts: str) -> Path:
        """A path under the work directory; every file the trainer writes lives there."""
        return self.workdir.joinpath(*parts)
