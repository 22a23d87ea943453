"""The few reads the cluster commands make, through the official Kubernetes client and the user's kubeconfig.

kubectl's conventions: the kubeconfig from `--kubeconfig`, else $KUBECONFIG, else ~/.kube/config (or the
pod's service account inside a cluster); the current context unless `--context` names one; its namespace
unless `-n` names one. Every object comes back as the plain dict the API server sent (what `-o json`
prints), never as the client's model classes. Errors become `ClusterError`s with a sentence for a person.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ftjob.api import GROUP, PLURAL, VERSION

JsonDict = dict[str, Any]

INSTALL_HINT = "the cluster commands need the Kubernetes client: pip install 'ftjob[cli]'"
CONTAINER = "trainer"
LABEL_FINETUNEJOB = f"{GROUP}/finetunejob"
"""The label the operator puts on its Job and pods (ftjob_operator.names.LABEL_FINETUNEJOB)."""


_NO_LOG_YET = (
    "waiting to start",  # the container has not started: pulling its image, or not scheduled yet
    "does not have a host assigned",
    "is pending",
    ": not found",  # the pod went away between listing it and reading its log (a retry, a TTL)
)
"""The API server's words for "this pod has no log to give": an empty log, not an error."""


class ClusterError(Exception):
    """A read failed; the message says what and why, for a person."""


def _client_modules() -> tuple[Any, Any, Any]:
    # The core `ftjob` install (validate, generate) needs no Kubernetes client; only these commands do.
    try:
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ClusterError(INSTALL_HINT) from exc
    return client, config, ApiException


@dataclass
class Cluster:
    api: Any
    """A kubernetes.client.ApiClient."""
    namespace: str
    """The namespace of the context (or `default`)."""
    server: str = ""

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Cluster:
        client, config, _ = _client_modules()
        configuration = client.Configuration()
        namespace = "default"
        try:
            if kubeconfig is None and context is None and _in_cluster(config, configuration):
                namespace = _service_account_namespace() or namespace
            else:
                config.load_kube_config(
                    config_file=kubeconfig, context=context, client_configuration=configuration
                )
                _, active = config.list_kube_config_contexts(config_file=kubeconfig)
                if context is not None:
                    contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
                    active = next((c for c in contexts if c.get("name") == context), active)
                namespace = ((active or {}).get("context") or {}).get("namespace") or namespace
        except config.ConfigException as exc:
            raise ClusterError(f"no usable kubeconfig: {exc}") from exc
        return cls(client.ApiClient(configuration), namespace, configuration.host)

    # -- FineTuneJobs -------------------------------------------------------------------------------
    def list_jobs(self, namespace: str | None) -> list[JsonDict]:
        """FineTuneJobs of one namespace, or of all of them (`namespace=None`), sorted by namespace and name."""
        path = (
            f"/apis/{GROUP}/{VERSION}/{PLURAL}"
            if namespace is None
            else f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
        )
        items = self._get_json(path, what=f"FineTuneJobs{_in(namespace)}").get("items") or []
        return sorted(items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))

    def get_job(self, namespace: str, name: str) -> JsonDict:
        return self._get_json(
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}",
            what=f'FineTuneJob "{name}"{_in(namespace)}',
        )

    # -- its pods, their logs, Events -----------------------------------------------------------------
    def trainer_pods(self, namespace: str, name: str) -> list[JsonDict]:
        """The trainer pods of a FineTuneJob, oldest first (one per attempt the Job controller made)."""
        found = self._get_json(
            f"/api/v1/namespaces/{namespace}/pods",
            query={"labelSelector": f"{LABEL_FINETUNEJOB}={name}"},
            what=f"pods of {name}{_in(namespace)}",
        )
        items: list[JsonDict] = found.get("items") or []
        return sorted(
            items, key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"])
        )

    def pod_log(self, namespace: str, pod: str, *, limit_bytes: int = 16 * 2**20) -> str:
        """The trainer container's log so far ("" when the container has not started yet)."""
        try:
            data = self._get(
                f"/api/v1/namespaces/{namespace}/pods/{pod}/log",
                query={"container": CONTAINER, "limitBytes": str(limit_bytes)},
                what=f"the log of pod {pod}",
            )
        except ClusterError as exc:
            if any(phrase in str(exc) for phrase in _NO_LOG_YET):
                return ""
            raise
        return data.decode(errors="replace")

    def events(self, namespace: str, names: set[str]) -> list[JsonDict]:
        """core/v1 Events about any of the named objects (the FineTuneJob, its Job and pods), oldest first."""
        found = self._get_json(f"/api/v1/namespaces/{namespace}/events", what=f"Events{_in(namespace)}")
        items = [e for e in found.get("items") or [] if (e.get("involvedObject") or {}).get("name") in names]
        return sorted(items, key=_event_time)

    # -- plumbing ------------------------------------------------------------------------------------
    def _get_json(self, path: str, *, what: str, query: dict[str, str] | None = None) -> JsonDict:
        doc = json.loads(self._get(path, query=query, what=what))
        if not isinstance(doc, dict):
            raise ClusterError(f"reading {what}: the API server sent something other than an object")
        return doc

    def _get(self, path: str, *, what: str, query: dict[str, str] | None = None) -> bytes:
        _, _, api_exception = _client_modules()
        serialized = self.api.param_serialize(
            method="GET",
            resource_path=path,
            query_params=list((query or {}).items()) or None,
            header_params={"Accept": "application/json, */*"},
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(*serialized, _request_timeout=30)
            data: bytes = response.read()
        except api_exception as exc:  # the transport's own errors (TLS, for one)
            raise ClusterError(f"cannot reach the API server at {self.server}: {exc.reason}") from exc
        except Exception as exc:  # urllib3's connection errors have no common base worth importing for
            if type(exc).__module__.startswith("urllib3"):
                raise ClusterError(f"cannot reach the API server at {self.server}: {exc}") from exc
            raise
        status = int(response.status)
        if not 200 <= status < 300:
            raise ClusterError(_api_message(status, data, what))
        return data


def _in_cluster(config: Any, configuration: Any) -> bool:
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        return False
    return True


def _service_account_namespace() -> str | None:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def _in(namespace: str | None) -> str:
    return " in all namespaces" if namespace is None else f' in namespace "{namespace}"'


def _api_message(status: int, body: bytes, what: str) -> str:
    """The API server's own message (from the Status object it sent) in a sentence about `what`."""
    text = body.decode(errors="replace")
    try:
        message = str(json.loads(text).get("message", ""))
    except (ValueError, AttributeError):
        message = text.strip()[:300]
    if status == 404:
        return f"{what}: not found"
    if status in (401, 403):
        return f"reading {what}: {message or 'forbidden'}"
    return f"reading {what}: HTTP {status}: {message}"


def _event_time(event: JsonDict) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )
