"""A minimal synchronous Kubernetes API client for tests: plain dicts over HTTP, like `kubectl` would send.

Deliberately independent of the operator's own client, so a bug there cannot hide itself in the tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import urllib3

JsonDict = dict[str, Any]
T = TypeVar("T")

FTJ = "/apis/ftjob.dev/v1alpha1"
BATCH = "/apis/batch/v1"
CORE = "/api/v1"


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {body[:500]}")


def path(prefix: str, plural: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
    out = f"{prefix}/namespaces/{quote(namespace)}/{plural}"
    if name is not None:
        out += f"/{quote(name)}"
    if sub is not None:
        out += f"/{sub}"
    return out


class KubeClient:
    """Admin by client certificate, or a bearer token; `impersonate` acts as another user (or
    `system:serviceaccount:NS:NAME`) through the API server's impersonation headers."""

    def __init__(
        self,
        base_url: str,
        *,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        token: str | None = None,
        impersonate: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if impersonate is not None:
            headers["Impersonate-User"] = impersonate
        tls: dict[str, Any] = {}
        if ca_file is not None:
            tls["ca_certs"] = str(ca_file)
        if cert_file is not None and key_file is not None:
            tls.update(cert_file=str(cert_file), key_file=str(key_file))
        # Tests and the kubelet agent share a client across threads.
        self._headers = headers
        self._http = urllib3.PoolManager(maxsize=8, **tls)

    def request(
        self,
        method: str,
        url_path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        url = self.base_url + url_path + (f"?{urlencode(query)}" if query else "")
        # Per-request headers replace a pool's default ones in urllib3: the identity goes on every request.
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = content_type
        data = json.dumps(body).encode() if body is not None else None
        response = self._http.request(method, url, body=data, headers=headers, timeout=30.0)
        return response.status, response.data

    def _ok(self, method: str, url_path: str, body: Any = None, **kwargs: Any) -> JsonDict:
        status, data = self.request(method, url_path, body, **kwargs)
        if not 200 <= status < 300:
            raise ApiError(status, data.decode(errors="replace"))
        doc = json.loads(data or b"{}")
        assert isinstance(doc, dict)
        return doc

    def get(self, url_path: str) -> JsonDict | None:
        status, data = self.request("GET", url_path)
        if status == 404:
            return None
        if not 200 <= status < 300:
            raise ApiError(status, data.decode(errors="replace"))
        doc = json.loads(data)
        assert isinstance(doc, dict)
        return doc

    def list_items(self, url_path: str, label_selector: str | None = None) -> list[JsonDict]:
        query = {"labelSelector": label_selector} if label_selector else None
        items = self._ok("GET", url_path, query=query).get("items") or []
        return [item for item in items if isinstance(item, dict)]

    def create(self, url_path: str, body: JsonDict) -> JsonDict:
        return self._ok("POST", url_path, body)

    def patch(self, url_path: str, body: JsonDict) -> JsonDict:
        return self._ok("PATCH", url_path, body, content_type="application/merge-patch+json")

    def apply(self, url_path: str, body: JsonDict, *, field_manager: str, force: bool = True) -> JsonDict:
        """Server-side apply, as `kubectl apply --server-side` sends it."""
        query = {"fieldManager": field_manager, "force": "true" if force else "false"}
        return self._ok("PATCH", url_path, body, content_type="application/apply-patch+yaml", query=query)

    def delete(self, url_path: str, propagation: str | None = None) -> None:
        body = {"propagationPolicy": propagation} if propagation else None
        self._ok("DELETE", url_path, body)

    def text(self, url_path: str, query: dict[str, str] | None = None) -> str:
        status, data = self.request("GET", url_path, query=query)
        if not 200 <= status < 300:
            raise ApiError(status, data.decode(errors="replace"))
        return data.decode()

    # -- shortcuts --------------------------------------------------------------------------------------
    def finetunejob(self, namespace: str, name: str) -> JsonDict | None:
        return self.get(path(FTJ, "finetunejobs", namespace, name))

    def job(self, namespace: str, name: str) -> JsonDict | None:
        return self.get(path(BATCH, "jobs", namespace, name))

    def jobs(self, namespace: str) -> list[JsonDict]:
        return self.list_items(path(BATCH, "jobs", namespace))

    def pods(self, namespace: str, label_selector: str | None = None) -> list[JsonDict]:
        return self.list_items(path(CORE, "pods", namespace), label_selector)

    def events(self, namespace: str, involved: str | None = None) -> list[JsonDict]:
        items = self.list_items(path(CORE, "events", namespace))
        return [
            e for e in items if involved is None or (e.get("involvedObject") or {}).get("name") == involved
        ]


def ftj_status(api: KubeClient, namespace: str, name: str) -> JsonDict:
    """The FineTuneJob's status ({} while it has none, or when the object is gone)."""
    return dict((api.finetunejob(namespace, name) or {}).get("status") or {})


def condition(status: JsonDict, type_: str) -> tuple[str, str] | None:
    """(status, reason) of the condition of that type, or None."""
    for c in status.get("conditions") or []:
        if c["type"] == type_:
            return c["status"], c["reason"]
    return None


def wait_for(
    probe: Callable[[], T | None], *, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"
) -> T:
    """Poll until `probe` returns something truthy; fail with the last value seen otherwise."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last seen: {last!r}")
