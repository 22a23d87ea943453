"""Reading FineTuneJob manifests from YAML files (several documents per file allowed).

Whatever the bytes, the outcome is a `ManifestError` or a list of results, each with one line per
problem, in bounded time and memory (see `ftjob.bounded_yaml`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ftjob.api import API_VERSION, KIND, FineTuneJob, format_validation_errors
from ftjob.api.errors import show_value
from ftjob.bounded_yaml import YamlLimits, YamlRefused, load_all_bounded

LIMITS = YamlLimits()
_NAME_CHARS = 253


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
        with path.open("rb") as stream:
            # One byte more than allowed is enough to tell that the file is too large.
            data = stream.read(LIMITS.max_bytes + 1)
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        docs = load_all_bounded(data, LIMITS)
    except YamlRefused as exc:
        raise ManifestError(f"{path}: {exc}") from None
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ManifestError(f"{path}: document {index + 1} is not a mapping")
    return docs


def validate_document(doc: dict[str, Any], source: str) -> ManifestResult:
    """Check one document against the API model, returning every problem at once."""
    name = _name(doc)
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        got = f"{_plain(doc.get('apiVersion'))} {_plain(doc.get('kind'))}"
        return ManifestResult(
            source, name, None, [f"apiVersion/kind: must be {API_VERSION} {KIND} (got {got})"]
        )
    try:
        job = FineTuneJob.model_validate(doc)
    except ValidationError as exc:
        return ManifestResult(source, name, None, format_validation_errors(exc))
    return ManifestResult(source, name, job, [])


def _name(doc: dict[str, Any]) -> str:
    """metadata.name for messages; any metadata, well-formed or not, gives a short one-line name."""
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if isinstance(name, str) and name and len(name) <= _NAME_CHARS and name.isprintable():
        return name
    return "(unnamed)" if name is None or name == "" else show_value(name)


def _plain(value: object) -> str:
    """A string as itself, anything else as short JSON."""
    return value if isinstance(value, str) and len(value) <= 80 and value.isprintable() else show_value(value)


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
