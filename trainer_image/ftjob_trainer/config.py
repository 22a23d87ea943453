"""The trainer's whole configuration comes from its environment (filled by the Job the operator renders),
so a pod can be replayed as a local process from its spec alone."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ftjob import contract
from ftjob.api import FineTuneJobSpec, format_validation_errors
from ftjob.api.lenient import parse_spec_leniently

from .errors import ConfigInvalid

log = logging.getLogger("ftjob.trainer")


def check_contract_version(env: Mapping[str, str]) -> int:
    """The contract version the operator rendered the Job with (absent: 1, before versions existed).

    A newer version than this trainer knows is logged, not refused: compatible changes (new defaulted
    fields) keep the version, and the spec is read leniently below; only an incompatible change raises it.
    """
    raw = env.get(contract.ENV_CONTRACT_VERSION, "1")
    try:
        version = int(raw)
    except ValueError as exc:
        raise ConfigInvalid(f"{contract.ENV_CONTRACT_VERSION} is not an integer: {raw!r}") from exc
    if version > contract.CONTRACT_VERSION:
        log.warning(
            "the operator speaks contract version %d, this trainer image version %d: update the trainer image",
            version,
            contract.CONTRACT_VERSION,
        )
    else:
        log.info("operator-trainer contract version %d", version)
    return version


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
        check_contract_version(env)
        try:
            spec, unknown = parse_spec_leniently(data)
        except ValidationError as exc:
            lines = format_validation_errors(exc, prefix="spec")
            raise ConfigInvalid("invalid spec: " + "; ".join(lines)) from exc
        for path in unknown:
            log.warning("ignoring the field spec.%s, unknown to this trainer image (newer operator?)", path)
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

    @property
    def spec_digest(self) -> str:
        """Identifies the whole spec (suspend aside): a finished run with the same one need not run again."""
        doc = self.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        doc.pop("suspend", None)
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    def path(self, *parts: str) -> Path:
        """A path under the work directory; every file the trainer writes lives there."""
        return self.workdir.joinpath(*parts)
