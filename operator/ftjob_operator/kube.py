"""The one module that talks to the Kubernetes API (through the `kubernetes` client's transport).

Objects travel as plain dicts, exactly as the API server sends them: the client's typed models would
round-trip them through pydantic models and could drop fields this operator writes or reads.

Errors are classified once, here: 409 conflicts (the caller re-reads and retries), 429 (honour
Retry-After), 5xx and network errors (back off), 404, and other 4xx (the request itself is wrong).
Throttling and unavailability are retried here with bounded waits; everything else is the caller's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any, Final
from urllib.parse import quote

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from ftjob.api import GROUP, PLURAL, VERSION

from .names import JsonDict

logger = logging.getLogger(__name__)

MERGE_PATCH: Final = "application/merge-patch+json"


class ErrorKind(Enum):
    CONFLICT = "Conflict"
    """409: AlreadyExists on create, a stale resourceVersion on update."""
    NOT_FOUND = "NotFound"
    THROTTLED = "Throttled"
    """429: the API server (or API Priority and Fairness) asks to come back later."""
    UNAVAILABLE = "Unavailable"
    """5xx or no answer at all."""
    REJECTED = "Rejected"
    """Any other 4xx: forbidden, invalid, gone... Repeating the same request cannot help."""


class KubeError(Exception):
    def __init__(
        self, kind: ErrorKind, status: int, reason: str, message: str, retry_after: float | None = None
    ) -> None:
        self.kind = kind
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        super().__init__(f"{status} {reason}: {message}" if status else f"{reason}: {message}")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After in seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify(status: int, headers: Mapping[str, str] | None, body: str | bytes | None) -> KubeError:
    """A KubeError for an HTTP error response; the reason and message come from the Status body."""
    reason, message = "", ""
    try:
        doc = json.loads(body or b"")
        if isinstance(doc, dict):
            reason, message = str(doc.get("reason") or ""), str(doc.get("message") or "")
    except ValueError:
        message = (body.decode(errors="replace") if isinstance(body, bytes) else str(body or ""))[:512]
    header_map = {k.lower(): v for k, v in (headers or {}).items()}
    if status == 409:
        kind = ErrorKind.CONFLICT
    elif status == 404:
        kind = ErrorKind.NOT_FOUND
    elif status == 429:
        kind = ErrorKind.THROTTLED
    elif status >= 500:
        kind = ErrorKind.UNAVAILABLE
    else:
        kind = ErrorKind.REJECTED
    return KubeError(
        kind, status, reason or kind.value, message, parse_retry_after(header_map.get("retry-after"))
    )


@dataclass(frozen=True)
class RetryPolicy:
    """How long one API call may keep trying before the error reaches the reconcile."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 30.0
    default_retry_after: float = 1.0

    def delay(self, error: KubeError, attempt: int) -> float:
        if error.kind is ErrorKind.THROTTLED:
            wanted = error.retry_after if error.retry_after is not None else self.default_retry_after
            return min(wanted, self.max_retry_after)
        return min(self.base_delay * 2.0**attempt, self.max_delay)


def load_api_client(kubeconfig: str | None = None, pool_size: int = 16) -> k8s_client.ApiClient:
    """In-cluster configuration when running in a pod, else the kubeconfig: `kubeconfig` if given, else
    $KUBECONFIG or ~/.kube/config. `pool_size`: connections kept open (one per thread that calls the API)."""
    configuration = k8s_client.Configuration()
    configuration.connection_pool_maxsize = pool_size
    # urllib3 would otherwise retry 429/503 itself (honouring Retry-After without a cap, and invisibly);
    # only failed connection attempts are retried down there, everything else by Kube._call.
    configuration.retries = urllib3.Retry(
        total=2, connect=2, read=0, status=0, other=0, redirect=0, respect_retry_after_header=False
    )
    if kubeconfig is not None:
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
        return k8s_client.ApiClient(configuration)
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return k8s_client.ApiClient(configuration)


POLICY_PLURAL: Final = "finetunejobpolicies"
LIST_PAGE: Final = 100


def resource_of(path: str) -> str:
    """`pods/log`, `finetunejobs/status`, `jobs`...: the resource (and subresource) a request path names."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    if "namespaces" in parts:
        rest = parts[parts.index("namespaces") + 2 :]
    else:
        rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if not rest:
        return "namespaces"
    return rest[0] if len(rest) < 3 else f"{rest[0]}/{rest[2]}"


def _path(*parts: str) -> str:
    return "/".join(quote(p, safe="") if i else p for i, p in enumerate(parts))


class Kube:
    """Typed verbs on the few resources the operator touches; every call is one HTTP request (plus retries)."""

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        request_timeout: tuple[float, float] = (5.0, 30.0),
        on_response: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self._api = api_client
        self._retry = retry
        self._sleep = sleep
        self._timeout = request_timeout
        self._on_response = on_response

    # -- FineTuneJobs ---------------------------------------------------------------------------------
    def get_finetunejob(self, namespace: str, name: str) -> JsonDict | None:
        return self._get(_path(f"/apis/{GROUP}/{VERSION}/namespaces", namespace, PLURAL, name))

    def patch_finetunejob_status(
        self, namespace: str, name: str, status_patch: JsonDict, resource_version: str | None
    ) -> JsonDict:
        """Merge-patch the status subresource; with a resourceVersion the API server refuses (409) to write
        over a newer version, so a status is never computed from one version and stored on another."""
        body: JsonDict = {"status": status_patch}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        path = _path(f"/apis/{GROUP}/{VERSION}/namespaces", namespace, PLURAL, name) + "/status"
        return self._json("PATCH", path, body=body, content_type=MERGE_PATCH)

    # -- FineTuneJobPolicies (guardrails and GPU-hour quota; see quota.py) -----------------------------
    def get_policy(self, namespace: str, name: str) -> JsonDict | None:
        """None when there is none, or when the FineTuneJobPolicy CRD is not installed (guardrails off)."""
        return self._get(_path(f"/apis/{GROUP}/{VERSION}/namespaces", namespace, POLICY_PLURAL, name))

    def patch_policy_status(
        self, namespace: str, name: str, status_patch: JsonDict, resource_version: str | None
    ) -> JsonDict:
        """With a resourceVersion: 409 when another writer got there first (the ledger's total must be the
        sum of its entries)."""
        body: JsonDict = {"status": status_patch}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        path = _path(f"/apis/{GROUP}/{VERSION}/namespaces", namespace, POLICY_PLURAL, name) + "/status"
        return self._json("PATCH", path, body=body, content_type=MERGE_PATCH)

    # -- Jobs -----------------------------------------------------------------------------------------
    def get_job(self, namespace: str, name: str) -> JsonDict | None:
        return self._get(_path("/apis/batch/v1/namespaces", namespace, "jobs", name))

    def list_jobs(self, namespace: str | None, label_selector: str) -> list[JsonDict]:
        """The Jobs matching the selector in `namespace` (None: in every namespace)."""
        where = _path("/apis/batch/v1/namespaces", namespace, "jobs") if namespace else "/apis/batch/v1/jobs"
        return self._items(where, label_selector, "Job")

    def create_job(self, namespace: str, body: JsonDict) -> JsonDict:
        return self._json("POST", _path("/apis/batch/v1/namespaces", namespace, "jobs"), body=body)

    def patch_job(self, namespace: str, name: str, patch: JsonDict) -> JsonDict:
        return self._json(
            "PATCH",
            _path("/apis/batch/v1/namespaces", namespace, "jobs", name),
            body=patch,
            content_type=MERGE_PATCH,
        )

    def delete_job(self, namespace: str, name: str, propagation: str) -> bool:
        """False when the Job was already gone."""
        try:
            self._json(
                "DELETE",
                _path("/apis/batch/v1/namespaces", namespace, "jobs", name),
                body={"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation},
            )
        except KubeError as err:
            if err.kind is ErrorKind.NOT_FOUND:
                return False
            raise
        return True

    # -- Services (the headless Service of a multi-node run) -------------------------------------------
    def create_service(self, namespace: str, body: JsonDict) -> JsonDict:
        return self._json("POST", _path("/api/v1/namespaces", namespace, "services"), body=body)

    # -- Pods -----------------------------------------------------------------------------------------
    def list_pods(self, namespace: str | None, label_selector: str) -> list[JsonDict]:
        """The pods matching the selector in `namespace` (None: in every namespace)."""
        where = _path("/api/v1/namespaces", namespace, "pods") if namespace else "/api/v1/pods"
        return self._items(where, label_selector, "Pod")

    def _items(self, path: str, label_selector: str, kind: str, page: int = LIST_PAGE) -> list[JsonDict]:
        """Every item, read in pages: a thousand Jobs in one answer would be tens of MB parsed at once."""
        items: list[JsonDict] = []
        token = ""
        while True:
            query = [("labelSelector", label_selector), ("limit", str(page))]
            if token:
                query.append(("continue", token))
            doc = self._json("GET", path, query=query)
            # A list's items carry no kind; the cache files objects by it.
            items.extend({**item, "kind": kind} for item in doc.get("items") or [] if isinstance(item, dict))
            token = str((doc.get("metadata") or {}).get("continue") or "")
            if not token:
                return items

    def read_pod_log(
        self, namespace: str, name: str, container: str, tail_lines: int, limit_bytes: int
    ) -> str:
        query = [("container", container), ("tailLines", str(tail_lines)), ("limitBytes", str(limit_bytes))]
        raw = self._call("GET", _path("/api/v1/namespaces", namespace, "pods", name) + "/log", query=query)
        return raw.decode("utf-8", errors="replace")

    # -- Events ---------------------------------------------------------------------------------------
    def create_event(self, namespace: str, body: JsonDict) -> None:
        self._json("POST", _path("/api/v1/namespaces", namespace, "events"), body=body)

    # -- transport ------------------------------------------------------------------------------------
    def _get(self, path: str) -> JsonDict | None:
        try:
            return self._json("GET", path)
        except KubeError as err:
            if err.kind is ErrorKind.NOT_FOUND:
                return None
            raise

    def _json(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
    ) -> JsonDict:
        raw = self._call(method, path, query=query, body=body, content_type=content_type)
        doc = json.loads(raw or b"{}")
        if not isinstance(doc, dict):
            raise KubeError(ErrorKind.UNAVAILABLE, 0, "BadResponse", f"{method} {path}: not a JSON object")
        return doc

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
    ) -> bytes:
        attempt = 0
        while True:
            try:
                return self._once(method, path, query, body, content_type)
            except KubeError as err:
                retriable = err.kind in (ErrorKind.THROTTLED, ErrorKind.UNAVAILABLE)
                if not retriable or attempt + 1 >= self._retry.attempts:
                    raise
                delay = self._retry.delay(err, attempt)
                logger.info("%s %s: %s; retrying in %.1f s", method, path, err, delay)
                self._sleep(delay)
                attempt += 1

    def _count(self, method: str, path: str, status: int) -> None:
        if self._on_response is not None:
            self._on_response(method, resource_of(path), status)

    def _once(
        self, method: str, path: str, query: Sequence[tuple[str, str]], body: Any, content_type: str
    ) -> bytes:
        headers = {"Accept": "application/json, */*"}
        if body is not None:
            headers["Content-Type"] = content_type
        serialized = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query) or None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(*serialized, _request_timeout=self._timeout)
            data: bytes = response.read()  # type: ignore[no-untyped-call]
        except urllib3.exceptions.HTTPError as err:
            self._count(method, path, 0)
            raise KubeError(ErrorKind.UNAVAILABLE, 0, type(err).__name__, str(err)) from err
        except k8s_client.ApiException as err:  # raised by the transport itself, e.g. on TLS errors
            self._count(method, path, 0)
            raise KubeError(ErrorKind.UNAVAILABLE, 0, "TransportError", str(err.reason)) from err
        status = int(response.status)
        self._count(method, path, status)
        if 200 <= status < 300:
            return data
        raise classify(status, dict(response.getheaders() or {}), data)  # type: ignore[no-untyped-call]
