"""What the operator's code needs from the Kubernetes API, derived from that code: its one API module (every
public method called against a recording client), kopf's registry and settings, and the Job it renders."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any, Final, cast

import ftjob_operator.main
from ftjob_operator.handlers import build_registry, kopf_settings
from ftjob_operator.kube import Kube
from ftjob_operator.reconcile import Reconciler
from ftjob_operator.render import render_job
from ftjob_operator.settings import OperatorSettings

Permission = tuple[str, str, str]
"""(API group, resource[/subresource], verb)."""

# The contract, written out (docs/multi-tenant.md shows the same table); tests/helm/test_rbac.py proves that
# the operator's code needs exactly this and the chart grants exactly this.
EXPECTED: Final[frozenset[Permission]] = frozenset(
    {
        ("ftjob.dev", "finetunejobs", "get"),
        ("ftjob.dev", "finetunejobs", "list"),
        ("ftjob.dev", "finetunejobs", "watch"),
        ("ftjob.dev", "finetunejobs", "patch"),
        ("ftjob.dev", "finetunejobs/status", "patch"),
        ("ftjob.dev", "finetunejobs/finalizers", "update"),
        ("batch", "jobs", "get"),
        ("batch", "jobs", "list"),
        ("batch", "jobs", "watch"),
        ("batch", "jobs", "create"),
        ("batch", "jobs", "patch"),
        ("batch", "jobs", "delete"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods/log", "get"),
        ("", "events", "create"),
    }
)
FORBIDDEN_RESOURCES: Final = {"secrets", "configmaps", "serviceaccounts/token", "pods/exec", "pods/attach"}


# --- what the operator's code does --------------------------------------------------------------------------
class _Response:
    status = 200

    def read(self) -> bytes:
        return b"{}"

    def getheaders(self) -> dict[str, str]:
        return {}


class RecordingApiClient:
    """Stands in for kubernetes.client.ApiClient in Kube: records (method, path), answers 200 {}."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    def param_serialize(self, *, method: str, resource_path: str, **_: Any) -> tuple[str, str]:
        self.requests.append((method, resource_path))
        return method, resource_path

    def call_api(self, *_: Any, **__: Any) -> _Response:
        return _Response()


_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/namespaces/[^/]+/(?P<resource>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)
_VERBS = {"POST": "create", "PATCH": "patch", "PUT": "update"}


def permission_of(method: str, path: str) -> Permission:
    match = _PATH.match(path)
    assert match is not None, f"unexpected API path {path}"
    resource = match["resource"] + (f"/{match['sub']}" if match["sub"] else "")
    named = match["name"] is not None
    if method == "GET":
        verb = "get" if named else "list"
    elif method == "DELETE":
        verb = "delete" if named else "deletecollection"
    else:
        verb = _VERBS[method]
    return match["group"] or "", resource, verb


def _dummy(annotation: str) -> Any:
    if "JsonDict" in annotation or "dict" in annotation:
        return {}
    if annotation.startswith("int"):
        return 1
    return "x"


def kube_permissions() -> set[Permission]:
    """Call every public method of the operator's only API module and map each request to a permission."""
    client = RecordingApiClient()
    kube = Kube(cast(Any, client), sleep=lambda _: None)
    methods = [name for name, _ in inspect.getmembers(Kube, inspect.isfunction) if not name.startswith("_")]
    assert methods, "Kube has no public methods?"
    for name in methods:
        bound = getattr(kube, name)
        params = inspect.signature(bound).parameters.values()
        bound(*(_dummy(str(p.annotation)) for p in params if p.default is inspect.Parameter.empty))
    assert len(client.requests) >= len(methods)
    return {permission_of(method, path) for method, path in client.requests}


def kopf_permissions(settings: OperatorSettings) -> set[Permission]:
    """What kopf itself needs for the registered handlers: a watch (list+watch) per resource, and a patch of
    the objects whose change handlers keep progress and diff base in annotations."""
    registry = build_registry(Reconciler(Kube(cast(Any, RecordingApiClient())), settings), settings)
    kopf_config = kopf_settings(settings)
    out: set[Permission] = set()
    # kopf exposes no public listing of handlers; these are the registries its own observer scans.
    for kind, handlers in (
        ("changing", registry._changing.get_all_handlers()),
        ("watching", registry._watching.get_all_handlers()),
        ("spawning", registry._spawning.get_all_handlers()),
        ("indexing", registry._indexing.get_all_handlers()),
    ):
        for handler in handlers:
            selector = handler.selector
            assert selector is not None
            group, resource = selector.group or "", selector.plural or selector.any_name
            assert isinstance(resource, str), f"handler {handler.id} selects no single resource"
            out |= {(group, resource, "list"), (group, resource, "watch")}
            if kind in ("changing", "spawning"):
                out.add((group, resource, "patch"))
    assert not registry._webhooks.get_all_handlers(), (
        "webhooks need a Service and more RBAC: update the chart"
    )
    if kopf_config.posting.enabled:
        out.add(("", "events", "create"))
    if not kopf_config.scanning.disabled:
        # kopf would watch CRDs (and, in namespaced mode, Namespaces): cluster-scoped reads the chart does not
        # grant. It degrades with a warning, but the operator turns scanning off instead.
        out |= {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
        out |= {("", "namespaces", v) for v in ("list", "watch")}
    return out


def kopf_runs_standalone() -> bool:
    """main() calls kopf.run(standalone=True): no peering objects, so no RBAC for them."""
    tree = ast.parse(Path(inspect.getfile(ftjob_operator.main)).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "kopf.run":
            return any(
                k.arg == "standalone" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords
            )
    raise AssertionError("main.py does not call kopf.run")


def owner_reference_permissions(settings: OperatorSettings) -> set[Permission]:
    """blockOwnerDeletion on the trainer Job's ownerReference requires `update` on the owner's finalizers
    subresource wherever the OwnerReferencesPermissionEnforcement admission plugin is on."""
    ftj = {
        "apiVersion": "ftjob.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "demo", "namespace": "team-a", "uid": "8d4c2a52-0000-4000-8000-000000000001"},
        "spec": {
            "baseModel": {"uri": "s3://models/smollm2/"},
            "data": {"trainUri": "s3://data/train.jsonl"},
            "output": {"uri": "s3://results/demo/"},
        },
    }
    job = render_job(ftj, settings)
    refs = job["metadata"]["ownerReferences"]
    if any(ref.get("blockOwnerDeletion") for ref in refs):
        return {("ftjob.dev", "finetunejobs/finalizers", "update")}
    return set()


def required_permissions() -> set[Permission]:
    settings = OperatorSettings()
    assert kopf_runs_standalone(), "kopf peering needs (cluster)kopfpeerings RBAC: update the chart"
    return kube_permissions() | kopf_permissions(settings) | owner_reference_permissions(settings)
