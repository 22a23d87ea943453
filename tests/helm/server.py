"""The chart on the real API server of tests/support/control_plane.py: namespaces that enforce Pod Security
`restricted`, every rendered object applied server-side (as `helm install` would send it), and requests as
the admin or as one of the chart's ServiceAccounts (a TokenRequest token), with the server's warnings."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final
from urllib.parse import urlencode

import helm_python
import urllib3

from ftjob.schema.crd import CRD_NAME
from ftjob_operator.settings import OperatorSettings, settings_from
from tests.support.control_plane import ControlPlane
from tests.support.kube_client import CORE, wait_for

from .rendering import RELEASE, JsonDict, one, render

RESTRICTED: Final = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    # Warn too: Pod Security enforces on pods only; on a Deployment it can only warn.
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
}
FIELD_MANAGER: Final = "helm"
APPLY: Final = "application/apply-patch+yaml"
MERGE: Final = "application/merge-patch+json"


@dataclass(frozen=True)
class Reply:
    status: int
    body: JsonDict
    warnings: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))

    def ok(self) -> JsonDict:
        assert 200 <= self.status < 300, f"HTTP {self.status}: {self.message or self.body}"
        return self.body


class Api:
    """One identity on the API server: the admin's certificate, or a bearer token."""

    def __init__(self, plane: ControlPlane, token: str | None = None) -> None:
        self.base = plane.url
        tls: dict[str, Any] = {"ca_certs": str(plane.pki.path("ca.crt"))}
        self._headers: dict[str, str] = {}
        if token is None:
            tls.update(cert_file=str(plane.pki.path("admin.crt")), key_file=str(plane.pki.path("admin.key")))
        else:
            self._headers["Authorization"] = f"Bearer {token}"
        self._http = urllib3.PoolManager(maxsize=4, **tls)

    def request(
        self,
        method: str,
        url_path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
        dry_run: bool = False,
    ) -> Reply:
        query = dict(query or {})
        if dry_run:
            query["dryRun"] = "All"
        url = self.base + url_path + (f"?{urlencode(query)}" if query else "")
        response = self._http.request(
            method,
            url,
            body=json.dumps(body).encode() if body is not None else None,
            # Per-request headers replace a PoolManager's default ones: pass them all each time.
            headers={**self._headers, **({"Content-Type": content_type} if body is not None else {})},
            timeout=30.0,
        )
        try:
            doc = json.loads(response.data or b"{}")
        except ValueError:
            doc = {"message": response.data.decode(errors="replace")}
        warnings = tuple(_warning_text(w) for w in response.headers.getlist("Warning"))
        return Reply(response.status, doc if isinstance(doc, dict) else {"items": doc}, warnings)

    def get(self, url_path: str, **query: str) -> Reply:
        return self.request("GET", url_path, query=query or None)

    def watch(self, url_path: str, **query: str) -> int:
        """The status a watch request gets (200: the server streams events); the stream is then dropped.
        resourceVersion 0 lets the watch cache answer at once instead of first waiting until it is fresh."""
        url = (
            self.base
            + url_path
            + "?"
            + urlencode({"resourceVersion": "0", **query, "watch": "true", "timeoutSeconds": "10"})
        )
        response = self._http.request("GET", url, headers=self._headers, preload_content=False, timeout=30.0)
        try:
            return response.status
        finally:
            response.close()

    def post(self, url_path: str, body: JsonDict, *, dry_run: bool = False) -> Reply:
        return self.request("POST", url_path, body, dry_run=dry_run)

    def patch(self, url_path: str, body: JsonDict) -> Reply:
        return self.request("PATCH", url_path, body, content_type=MERGE)

    def apply(self, url_path: str, body: JsonDict, *, dry_run: bool = False) -> Reply:
        """Server-side apply, forcing conflicts (`kubectl apply --server-side --force-conflicts`)."""
        query = {"fieldManager": FIELD_MANAGER, "force": "true"}
        return self.request("PATCH", url_path, body, content_type=APPLY, query=query, dry_run=dry_run)

    def delete(self, url_path: str) -> Reply:
        return self.request("DELETE", url_path)


def _warning_text(header: str) -> str:
    """The text of a `Warning: 299 - "..."` header (RFC 7234 quoting undone)."""
    match = re.fullmatch(r'\d{3} \S+ "(.*)"', header.strip())
    return re.sub(r"\\(.)", r"\1", match[1]) if match else header


# -- discovery: where an object lives, as the server says ------------------------------------------------
_DISCOVERY: dict[str, list[JsonDict]] = {}


def served_resource(api: Api, api_version: str, kind: str) -> JsonDict | None:
    """The server's APIResource for `kind` (name, namespaced, verbs), or None when it serves no such kind."""
    if api_version not in _DISCOVERY:
        reply = api.get(CORE if api_version == "v1" else f"/apis/{api_version}")
        _DISCOVERY[api_version] = list(reply.body.get("resources") or []) if reply.status == 200 else []
    found = [r for r in _DISCOVERY[api_version] if r["kind"] == kind and "/" not in r["name"]]
    return found[0] if found else None


def object_path(api: Api, obj: JsonDict) -> str:
    resource = served_resource(api, obj["apiVersion"], obj["kind"])
    assert resource is not None, f"the server serves no {obj['apiVersion']} {obj['kind']}"
    base = CORE if obj["apiVersion"] == "v1" else f"/apis/{obj['apiVersion']}"
    namespace = obj["metadata"].get("namespace")
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    assert bool(namespace) == resource["namespaced"], (
        f"{where}: namespace {namespace!r}, but the server says namespaced={resource['namespaced']}"
    )
    scope = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{scope}/{resource['name']}/{obj['metadata']['name']}"


# -- namespaces and ServiceAccounts ------------------------------------------------------------------------
def create_namespace(api: Api, name: str, labels: dict[str, str] | None = None) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
    api.post(f"{CORE}/namespaces", body).ok()


def service_account_token(api: Api, namespace: str, name: str) -> str:
    """A TokenRequest token of the ServiceAccount: what the kubelet projects into its pods."""
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600},
    }
    reply = api.post(f"{CORE}/namespaces/{namespace}/serviceaccounts/{name}/token", body).ok()
    token: str = reply["status"]["token"]
    return token


def other_namespace(api: Api, installation: Installation) -> str:
    """A restricted namespace beside the installation's, where none of its FineTuneJobs may be."""
    name = f"{installation.namespace.removesuffix('-system')}-other"
    if name not in installation.namespaces:
        create_namespace(api, name, RESTRICTED)
        installation.namespaces.append(name)
    return name


def username(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


# -- an installation of the chart ----------------------------------------------------------------------
@dataclass
class Installation:
    """The chart rendered with `values` under a unique release name and namespaces, every object applied."""

    release: str
    namespace: str
    values: JsonDict
    objects: list[JsonDict]
    replies: dict[str, Reply] = field(default_factory=dict)
    """object path -> the server's answer to its server-side apply (dry-run for the CRD)."""
    unserved: list[JsonDict] = field(default_factory=list)
    """Objects of kinds this server does not serve (another project's CRD: the ServiceMonitor)."""
    namespaces: list[str] = field(default_factory=list)
    """Namespaces made for it (uninstall deletes them)."""

    @property
    def deployment(self) -> JsonDict:
        return one(self.objects, "Deployment")

    @property
    def operator_account(self) -> str:
        name: str = self.deployment["spec"]["template"]["spec"]["serviceAccountName"]
        return name

    @property
    def watched(self) -> tuple[str, ...]:
        return tuple(self.values.get("watch", {}).get("namespaces") or ())

    @property
    def settings(self) -> OperatorSettings:
        """The operator's settings, parsed by its own parser from the args the chart passes."""
        (container,) = self.deployment["spec"]["template"]["spec"]["containers"]
        return settings_from(container["args"], {})

    def operator_args(self) -> list[str]:
        """The chart's args, minus the ports (a test process listens on free ones)."""
        (container,) = self.deployment["spec"]["template"]["spec"]["containers"]
        return [a for a in container["args"] if not a.startswith(("--liveness-port", "--metrics-port"))]


def localized(values: JsonDict, prefix: str) -> JsonDict:
    """`values` with every namespace it names prefixed, so each installation has namespaces of its own."""
    out: JsonDict = json.loads(json.dumps(values))
    watch = out.get("watch", {})
    if watch.get("namespaces"):
        watch["namespaces"] = [f"{prefix}-{ns}" for ns in watch["namespaces"]]
    trainer_sa = out.get("trainerServiceAccount", {})
    if trainer_sa.get("namespaces"):
        trainer_sa["namespaces"] = [f"{prefix}-{ns}" for ns in trainer_sa["namespaces"]]
    if trainer_sa.get("perNamespace"):
        trainer_sa["perNamespace"] = {f"{prefix}-{ns}": v for ns, v in trainer_sa["perNamespace"].items()}
    return out


def install(
    api: Api,
    chart: helm_python.Chart,
    values: JsonDict,
    *,
    prefix: str | None = None,
    namespace_labels: dict[str, str] | None = None,
) -> Installation:
    """Create restricted namespaces (the release's and every one the values name, with `namespace_labels`
    too), render the chart into them and apply every object server-side; CRDs with dryRun=All (the
    session's CRDs are the same objects and other tests use them). Fails with the server's message on the
    first object it refuses."""
    prefix = prefix or f"h{uuid.uuid4().hex[:8]}"
    values = localized(values, prefix)
    release_namespace = f"{prefix}-system"
    extra = [
        *values.get("watch", {}).get("namespaces", []),
        *values.get("trainerServiceAccount", {}).get("namespaces", []),
        *sorted(values.get("trainerServiceAccount", {}).get("perNamespace", {})),
    ]
    namespaces = list(dict.fromkeys([release_namespace, *extra]))
    for name in namespaces:
        create_namespace(api, name, {**RESTRICTED, **(namespace_labels or {})})
    objects = render(chart, values, release=f"{RELEASE}-{prefix}", namespace=release_namespace)
    installation = Installation(
        f"{RELEASE}-{prefix}", release_namespace, values, objects, namespaces=namespaces
    )
    for obj in objects:
        if served_resource(api, obj["apiVersion"], obj["kind"]) is None:
            installation.unserved.append(obj)
            continue
        url = object_path(api, obj)
        reply = api.apply(url, obj, dry_run=_shared_crd(obj))
        if obj["kind"] == "CustomResourceDefinition" and not _shared_crd(obj):
            wait_for(partial(_established, api, url), timeout=30, what=f"CRD {obj['metadata']['name']}")
        assert reply.status in (200, 201), (
            f"{obj['kind']}/{obj['metadata']['name']}: {reply.status} {reply.message}"
        )
        installation.replies[url] = reply
    return installation


def _shared_crd(obj: JsonDict) -> bool:
    """The FineTuneJob CRD is the session's (kube_fixtures applies the generated one): only dry-run it. The
    FineTuneJobPolicy CRD is applied for real: the guardrails refuse everything they match while the kind
    they take parameters from is missing."""
    return bool(obj["kind"] == "CustomResourceDefinition" and obj["metadata"]["name"] == CRD_NAME)


def _established(api: Api, url: str) -> bool:
    conditions = api.get(url).ok().get("status", {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def uninstall(api: Api, installation: Installation) -> None:
    """Delete what the installation created (never a CRD: other tests use it), without waiting. Cluster-scoped
    objects first: a guardrail left behind would judge the rest of the session's requests."""
    for url, reply in installation.replies.items():
        if "/namespaces/" not in url and reply.body.get("kind") != "CustomResourceDefinition":
            api.delete(url)
    for name in installation.namespaces:
        api.delete(f"{CORE}/namespaces/{name}")
