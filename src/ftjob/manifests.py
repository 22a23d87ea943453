"""Reading FineTuneJob manifests from YAML files (several documents per file allowed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ftjob.api import API_VERSION, KIND, FineTuneJob, format_validation_errors


@dataclass(frozen=True)
class ManifestResult:
    """The outcome of validating one YAML document."""

    source: str
    name: str
    job: FineTuneJob | None
    errors: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors


class ManifestError(Exception):
    """The file cannot be read or parsed as YAML at all."""


def load_documents(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from exc
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ManifestError(f"{path}: document {index + 1} is not a mapping")
    return docs


def validate_document(doc: dict[str, Any], source: str) -> ManifestResult:
    """Check one document against the API model, returning every problem at once."""
    name = str((doc.get("metadata") or {}).get("name") or "(unnamed)")
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        return ManifestResult(
            source,
            name,
            None,
            [
                f"apiVersion/kind: must be {API_VERSION} {KIND} (got {doc.get('apiVersion')} {doc.get('kind')})"
            ],
        )
    try:
        job = FineTuneJob.model_validate(doc)
    except ValidationError as exc:
        return ManifestResult(source, name, None, format_validation_errors(exc))
    return ManifestResult(source, name, job, [])


def validate_file(path: Path) -> list[ManifestResult]:
    return [validate_document(doc, f"{path}#{i + 1}") for i, doc in enumerate(load_documents(path))]


def load_job(path: Path) -> FineTuneJob:
    """The single FineTuneJob in a file; raises ManifestError naming every problem otherwise."""
    results = validate_file(path)
    if len(results) != 1:
        raise ManifestError(f"{path}: expected exactly one FineTuneJob document, found {len(results)}")
    result = results[0]
    if result.job is None:
        raise ManifestError(f"{path}: {result.name} is invalid:\n  " + "\n  ".join(result.errors))
    return result.job
