"""Sending FineTuneJobs to the test session's real API server the way kubectl sends them.

Every write asks for strict field validation (`fieldValidation=Strict`, kubectl's default since 1.27), so
an unknown field is an error rather than silently pruned. `dry_run=True` (`dryRun=All`, what
`kubectl apply --dry-run=server` sends) runs the whole admission and validation chain, defaulting and
CEL transition rules included, without storing anything.
"""

from __future__ import annotations

import copy
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftjob.api import FineTuneJobSpec
from ftjob.schema.crd import spec_schema
from tests.support.kube_client import FTJ, JsonDict, KubeClient, path

PLURAL = "finetunejobs"
KUBECTL = "kubectl"


@dataclass(frozen=True)
class Answer:
    """The API server's reply: HTTP status and body (the object, or a metav1.Status)."""

    status: int
    body: JsonDict

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        return "" if self.ok else str(self.body.get("message", ""))

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message or json.dumps(self.body)[:300]}"


def _answer(reply: tuple[int, bytes]) -> Answer:
    status, data = reply
    try:
        body = json.loads(data or b"{}")
    except ValueError:
        body = {"message": data.decode(errors="replace")}
    return Answer(status, body if isinstance(body, dict) else {"message": str(body)})


def _query(dry_run: bool, **extra: str) -> dict[str, str]:
    query = {"fieldValidation": "Strict", **extra}
    if dry_run:
        query["dryRun"] = "All"
    return query


def in_namespace(doc: JsonDict, namespace: str) -> JsonDict:
    """A copy of `doc` placed in `namespace` (the examples name their own)."""
    doc = copy.deepcopy(doc)
    doc.setdefault("metadata", {})["namespace"] = namespace
    return doc


def create(api: KubeClient, namespace: str, doc: JsonDict, *, dry_run: bool = True) -> Answer:
    """POST, as `kubectl create` (and client-side `kubectl apply` of a new object) sends it."""
    body = in_namespace(doc, namespace)
    return _answer(api.request("POST", path(FTJ, PLURAL, namespace), body, query=_query(dry_run)))


def apply(api: KubeClient, namespace: str, doc: JsonDict, *, dry_run: bool = False) -> Answer:
    """Server-side apply, as `kubectl apply --server-side` sends it."""
    body = in_namespace(doc, namespace)
    name = body["metadata"]["name"]
    return _answer(
        api.request(
            "PATCH",
            path(FTJ, PLURAL, namespace, name),
            body,
            content_type="application/apply-patch+yaml",
            query=_query(dry_run, fieldManager="kubectl", force="true"),
        )
    )


def merge_patch(
    api: KubeClient,
    namespace: str,
    name: str,
    patch: JsonDict,
    *,
    dry_run: bool = True,
    subresource: str | None = None,
) -> Answer:
    """A JSON merge patch (`kubectl patch --type=merge`); `None` values remove fields."""
    return _answer(
        api.request(
            "PATCH",
            path(FTJ, PLURAL, namespace, name, subresource),
            patch,
            content_type="application/merge-patch+json",
            query=_query(dry_run),
        )
    )


def kubectl(kubeconfig: Path, *args: str) -> str:
    """Run kubectl against the test control plane; its discovery cache stays beside the kubeconfig."""
    command = [KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(kubeconfig.parent / "kube-cache")]
    result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def words(text: Any) -> str:
    """Whitespace-normalised text: kubectl wraps descriptions at its own width."""
    return " ".join(str(text).split())


def model_defaults(spec: JsonDict) -> JsonDict:
    """The spec with the model's defaults filled in, in the form the server stores it (see `comparable`)."""
    dumped = FineTuneJobSpec.model_validate(spec).model_dump(mode="json", by_alias=True, exclude_none=True)
    return comparable(dumped)


def comparable(spec: JsonDict) -> JsonDict:
    """A spec without empty maps and lists (the model defaults them, the schema leaves them out) and with
    int-or-string values as strings (the server keeps `cpu: 8` as written, the model reads "8")."""
    value = _comparable(spec, spec_schema())
    assert isinstance(value, dict)
    return value


def _comparable(value: Any, schema: JsonDict) -> Any:
    if schema.get("x-kubernetes-int-or-string") and isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {
            key: _comparable(sub, props.get(key) or (extra if isinstance(extra, dict) else {}))
            for key, sub in value.items()
            if sub not in ({}, []) or (key in props and props[key].get("default") == sub)
        }
    if isinstance(value, list):
        return [_comparable(item, schema.get("items") or {}) for item in value]
    return value
