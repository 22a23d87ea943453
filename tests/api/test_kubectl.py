"""What `kubectl explain` and `kubectl get` show users, from the real API server's OpenAPI and printer
columns."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftjob.schema.crd import open_api_schema
from ftjob.schema.structural import walk
from tests.api.apiserver import KUBECTL, apply, kubectl, merge_patch, words
from tests.support.kube_client import KubeClient, wait_for

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
SCHEMA = open_api_schema()
KEY = "dev.ftjob.v1alpha1.FineTuneJob"


def _served_node(served: dict[str, Any], path: str) -> dict[str, Any]:
    node = served
    for part in re.findall(r"\.([^.\[{]+)|(\[\])|(\{\})", path):
        name, items, values = part
        node = (
            node["items"] if items else node["additionalProperties"] if values else node["properties"][name]
        )
    return node


@pytest.fixture
def served(api: KubeClient) -> dict[str, Any]:
    """The FineTuneJob schema in the server's OpenAPI v3, which `kubectl explain` reads.

    The server publishes it a moment after the CRD is Established: wait for it."""

    def probe() -> dict[str, Any] | None:
        document = api.get("/openapi/v3/apis/ftjob.dev/v1alpha1") or {}
        schema: dict[str, Any] | None = (document.get("components") or {}).get("schemas", {}).get(KEY)
        return schema

    return wait_for(probe, timeout=30, what="the FineTuneJob schema in /openapi/v3")


def test_the_servers_openapi_carries_every_description(served: dict[str, Any]) -> None:
    checked, wrong = 0, []
    for path, node in walk(SCHEMA):
        if path.startswith((".spec", ".status")) and "description" in node:
            checked += 1
            if _served_node(served, path).get("description") != node["description"]:
                wrong.append(path)
    assert wrong == []
    assert checked > 100


def test_kubectl_explain_describes_every_spec_field(served: dict[str, Any], kubeconfig: Path) -> None:
    # One `kubectl explain` per object of the spec prints that object's description and each field's.
    objects = [path for path, node in walk(SCHEMA) if path.startswith(".spec") and "properties" in node]
    command = [KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(kubeconfig.parent / "kube-cache")]
    kubectl(kubeconfig, "explain", "finetunejob")  # fills the discovery cache before the parallel calls
    running = {
        path: subprocess.Popen(
            [*command, "explain", "finetunejob" + path.replace("[]", "")], stdout=subprocess.PIPE, text=True
        )
        for path in objects
    }
    explained = {path: words(process.communicate(timeout=60)[0]) for path, process in running.items()}
    missing = []
    for path, node in walk(SCHEMA):
        if not path.startswith(".spec") or path.endswith(("[]", "{}")):
            continue
        parent = path.rsplit(".", 1)[0] if path.count(".") > 1 else path
        for where in {parent, path} & set(explained):
            if words(node["description"]) not in explained[where]:
                missing.append(f"{path} (kubectl explain finetunejob{where})")
    assert missing == []
    assert len(explained) == len(objects) > 10


def _table(output: str) -> list[dict[str, str]]:
    header, *rows = output.strip().splitlines()
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
    names = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return [
        {name: row[a:b].strip() for name, a, b in zip(names, starts, [*starts[1:], None], strict=True)}
        for row in rows
    ]


def test_printer_columns_show_the_status(api: KubeClient, namespace: str, kubeconfig: Path) -> None:
    assert apply(api, namespace, QUICKSTART).ok
    status = {
        "phase": "Running",
        "progress": {"step": 42, "totalSteps": 100, "percent": 42},
        "metrics": {"evalLoss": 0.125},
        "jobName": "quickstart-train",
        "message": "training: step 42 of 100",
    }
    answer = merge_patch(
        api, namespace, "quickstart", {"status": status}, dry_run=False, subresource="status"
    )
    assert answer.ok, answer
    # A status write goes through the status subresource: the spec stays as it was, generation too.
    assert answer.body["metadata"]["generation"] == 1

    (row,) = _table(kubectl(kubeconfig, "get", "ftj", "-n", namespace))
    assert list(row) == ["NAME", "PHASE", "PROGRESS", "EVAL LOSS", "AGE"]
    assert (row["NAME"], row["PHASE"], row["PROGRESS"], row["EVAL LOSS"]) == (
        "quickstart",
        "Running",
        "42",
        "0.125",
    )

    (wide,) = _table(kubectl(kubeconfig, "get", "ftj", "-n", namespace, "-o", "wide"))
    assert list(wide)[5:] == ["MODEL", "METHOD", "JOB", "MESSAGE"]
    assert (wide["MODEL"], wide["METHOD"], wide["JOB"], wide["MESSAGE"]) == (
        "s3://ftjob-quickstart/models/smollm2-135m-instruct/",
        "qlora",
        "quickstart-train",
        "training: step 42 of 100",
    )


def test_the_category_and_short_name_find_it(namespace: str, kubeconfig: Path, api: KubeClient) -> None:
    assert apply(api, namespace, QUICKSTART).ok
    assert "finetunejob.ftjob.dev/quickstart" in kubectl(
        kubeconfig, "get", "ml", "-n", namespace, "-o", "name"
    )
    assert "finetunejob.ftjob.dev/quickstart" in kubectl(
        kubeconfig, "get", "all", "-n", namespace, "-o", "name"
    )
