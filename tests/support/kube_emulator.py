"""A Kubernetes API for tests: kmock's in-memory emulator, taught what a real API server does that the
operator (and kopf) rely on, served over HTTP from a background thread.

What the subclass adds to `kmock.KubernetesEmulator`:

- metadata the API server assigns: `uid`, `creationTimestamp`, `resourceVersion` (one increasing counter),
  `generation` (1 on create, +1 when anything outside metadata and status changes), names for
  `generateName`;
- the `status` subresource: writes to the object ignore `status`, writes to `/status` change only
  `status` (for the resources declared with one), and `status` is dropped on create;
- optimistic concurrency: a write carrying `metadata.resourceVersion` fails with 409 when it is stale;
  creating an existing name fails with 409 AlreadyExists;
- no-op patches change nothing (no new resourceVersion, no watch event), as on a real server;
- merge patches per RFC 7386 (strategic merge patches are treated as merge patches) and JSON patches;
- deletion with finalizers (deletionTimestamp first) and a garbage collector for ownerReferences
  (Background, Foreground and Orphan propagation; done synchronously);
- list and watch with label selectors (equality, inequality, existence), field selectors on
  metadata.name/namespace, `resourceVersion` on lists, and watches that resume from a resourceVersion
  without losing the events in between;
- `pods/{name}/log` serving test-controlled text (with `tailLines`);
- fault injection (`fail`) and requests held in flight (`hold`), to test error handling and crashes.

Not emulated: schemas and validation, admission, RBAC, server-side apply, PUT, the controllers (Job,
kubelet, Kueue): tests and the e2e node agent play those parts through the API.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import itertools
import json
import re
import secrets
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import apps, enums, rendering

T = TypeVar("T")
JsonDict = dict[str, Any]

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

# plural-key -> (kind, namespaced, subresources)
RESOURCES: dict[str, tuple[str, bool, tuple[str, ...]]] = {
    "ftjob.dev/v1alpha1/finetunejobs": ("FineTuneJob", True, ("status",)),
    "batch/v1/jobs": ("Job", True, ("status",)),
    "v1/pods": ("Pod", True, ("status", "log")),
    "v1/events": ("Event", True, ()),
    "events.k8s.io/v1/events": ("Event", True, ()),
    "v1/namespaces": ("Namespace", False, ("status",)),
    "v1/secrets": ("Secret", True, ()),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False, ("status",)),
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(doc: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def _selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for term in (t.strip() for t in re.split(r",(?![^(]*\))", selector) if t.strip()):
        if match := re.fullmatch(r"(\S+?)\s*(==|=|!=)\s*(\S*)", term):
            key, op, value = match.groups()
            if (labels.get(key) == value) != (op != "!="):
                return False
        elif match := re.fullmatch(r"(\S+)\s+(in|notin)\s+\(([^)]*)\)", term):
            key, op, values = match.groups()
            allowed = {v.strip() for v in values.split(",")}
            if (labels.get(key) in allowed) != (op == "in"):
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _field_matches(selector: str, obj: JsonDict) -> bool:
    meta = obj.get("metadata") or {}
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        key, op, value = re.fullmatch(r"(\S+?)\s*(==|=|!=)\s*(\S*)", term).groups()  # type: ignore[union-attr]
        field = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace")}.get(key)
        if (field == value) != (op != "!="):
            return False
    return True


@dataclasses.dataclass
class Fault:
    """Answer matching requests with an error instead of serving them."""

    match: Callable[[rendering.Request], bool]
    status: int
    reason: str
    message: str
    headers: dict[str, str]
    times: int
    hits: int = 0


@dataclasses.dataclass
class Hold:
    """Keep a matching request in flight (after applying it, or before) until released."""

    match: Callable[[rendering.Request], bool]
    apply_first: bool
    arrived: threading.Event = dataclasses.field(default_factory=threading.Event)
    released: threading.Event = dataclasses.field(default_factory=threading.Event)
    taken: bool = False

    def release(self) -> None:
        self.released.set()


def request_matches(
    method: str | None = None,
    plural: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
    namespace: str | None = None,
) -> Callable[[rendering.Request], bool]:
    """A predicate on requests for `fail` and `hold` (`subresource=""` means the object itself)."""

    def check(request: rendering.Request) -> bool:
        resource = request.resource
        return (
            (
                method is None
                or str(getattr(request.method, "value", request.method)).upper() == method.upper()
            )
            and (plural is None or (resource is not None and resource.plural == plural))
            and (name is None or request.name == name)
            and (namespace is None or request.namespace == namespace)
            and (subresource is None or (request.subresource or "") == subresource)
        )

    return check


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    pod_logs: dict[tuple[str, str], str] = attrs.field(factory=dict)
    """(namespace, pod) -> the text `pods/{name}/log` serves; tests write it from any thread."""
    _rv: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1001))
    _last_rv: int = 1000
    _journal: dict[Any, list[tuple[int, JsonDict]]] = attrs.field(factory=dict)
    _faults: list[Fault] = attrs.field(factory=list)
    _holds: list[Hold] = attrs.field(factory=list)
    _guard: threading.Lock = attrs.field(factory=threading.Lock)
    _status_subresource: set[Any] = attrs.field(factory=set)
    _kinds: dict[Any, str] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for key, (kind, namespaced, subresources) in RESOURCES.items():
            self.resources[key] = kmock.ResourceInfo(
                kind=kind,
                singular=kind.lower(),
                namespaced=namespaced,
                verbs=set(ALL_VERBS),
                subresources=set(subresources),
            )
            resource = kmock.resource(key)
            self._kinds[resource] = kind
            if "status" in subresources:
                self._status_subresource.add(resource)
        self.resources["ftjob.dev/v1alpha1/finetunejobs"].shortnames = {"ftj"}

    # -- test controls (thread-safe) ------------------------------------------------------------------
    def fail(
        self,
        match: Callable[[rendering.Request], bool],
        status: int,
        *,
        times: int = 1,
        reason: str = "",
        message: str = "injected by the test",
        headers: dict[str, str] | None = None,
    ) -> Fault:
        fault = Fault(match, status, reason or f"Injected{status}", message, dict(headers or {}), times)
        with self._guard:
            self._faults.append(fault)
        return fault

    def hold(self, match: Callable[[rendering.Request], bool], *, apply_first: bool) -> Hold:
        """Hold the next matching request: with `apply_first` the change is made (and watchers see it) but
        the response never comes back until released, as if the client died waiting for it."""
        hold = Hold(match, apply_first)
        with self._guard:
            self._holds.append(hold)
        return hold

    def release_all(self) -> None:
        with self._guard:
            for hold in self._holds:
                hold.release()

    def set_pod_log(self, namespace: str, pod: str, text: str) -> None:
        self.pod_logs[namespace, pod] = text

    # -- request handling -----------------------------------------------------------------------------
    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        resource = request.resource
        if resource is None or resource.plural is None:
            return await apps.RawHandler._handle(self, request)  # discovery: served by the scaffold
        fault = self._take_fault(request)
        if fault is not None:
            body = {
                "apiVersion": "v1",
                "kind": "Status",
                "metadata": {},
                "status": "Failure",
                "code": fault.status,
                "reason": fault.reason,
                "message": fault.message,
            }
            return aiohttp.web.json_response(body, status=fault.status, headers=fault.headers)
        if request.action == enums.action.FETCH and request.subresource == "log":
            return self._serve_log(request)
        hold = self._take_hold(request)
        if hold is not None and not hold.apply_first:
            hold.arrived.set()
            await self._wait_released(hold)
        if request.action in (enums.action.CREATE, enums.action.UPDATE, enums.action.DELETE):
            async with self._lock:
                status, obj = await self._mutate(request)
            if hold is not None and hold.apply_first:
                hold.arrived.set()
                await self._wait_released(hold)
            return aiohttp.web.json_response(obj, status=status)
        return await apps.RawHandler._handle(self, request)

    def _take_fault(self, request: rendering.Request) -> Fault | None:
        with self._guard:
            for fault in self._faults:
                if fault.hits < fault.times and fault.match(request):
                    fault.hits += 1
                    return fault
        return None

    def _take_hold(self, request: rendering.Request) -> Hold | None:
        with self._guard:
            for hold in self._holds:
                if not hold.taken and hold.match(request):
                    hold.taken = True
                    return hold
        return None

    @staticmethod
    async def _wait_released(hold: Hold) -> None:
        while not hold.released.is_set():
            await asyncio.sleep(0.05)

    def _serve_log(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        key = (request.namespace or "", request.name or "")
        if key not in self.pod_logs:
            pod = self.__object(request.resource, request.namespace, request.name)
            if pod is None:
                raise kmock.KubernetesError(404, "NotFound", f'pods "{request.name}" not found')
        text = self.pod_logs.get(key, "")
        tail = request.params.get("tailLines")
        if tail is not None:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(tail) :]) if int(tail) > 0 else ""
        return aiohttp.web.Response(text=text, content_type="text/plain")

    # -- state changes (called with self._lock held) --------------------------------------------------
    def __object(self, resource: Any, namespace: str | None, name: str | None) -> JsonDict | None:
        if name is None:
            return None
        key = (resource, namespace, name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        return copy.deepcopy(self._objects[key].raw)

    def _next_rv(self) -> str:
        self._last_rv = next(self._rv)
        return str(self._last_rv)

    async def _publish(self, resource: Any, type_: str, obj: JsonDict) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        self._journal.setdefault(resource, []).append((rv, {"type": type_, "object": obj}))
        await self._buses[resource].put({"type": type_, "object": obj})

    async def _mutate(self, request: rendering.Request) -> tuple[int, JsonDict]:
        resource = request.resource
        if request.action == enums.action.CREATE:
            return 201, await self._create(resource, request.namespace, copy.deepcopy(request.data or {}))
        if request.action == enums.action.UPDATE:
            content_type = str(
                request.headers.get("Content-Type") or request.headers.get("content-type") or ""
            )
            return 200, await self._patch(
                resource, request.namespace, request.name, request.data, request.subresource, content_type
            )
        options = request.data if isinstance(request.data, dict) else {}
        propagation = (
            options.get("propagationPolicy") or request.params.get("propagationPolicy") or "Background"
        )
        return 200, await self._delete(resource, request.namespace, request.name, str(propagation))

    async def _create(self, resource: Any, namespace: str | None, obj: JsonDict) -> JsonDict:
        meta = obj.setdefault("metadata", {})
        namespace = namespace or meta.get("namespace")
        name = meta.get("name") or (meta.get("generateName", "") + secrets.token_hex(3)[:5])
        if namespace is not None:
            meta["namespace"] = namespace
        meta["name"] = name
        key = (resource, namespace, name)
        if key in self._objects and not self._objects[key].deleted:
            raise kmock.KubernetesError(409, "AlreadyExists", f'{resource.plural} "{name}" already exists')
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        meta["resourceVersion"] = self._next_rv()
        meta.pop("deletionTimestamp", None)
        if resource in self._status_subresource:
            obj.pop("status", None)
        obj.setdefault("kind", self._kinds.get(resource, ""))
        obj.setdefault("apiVersion", f"{resource.group}/{resource.version}".lstrip("/"))
        if key in self._objects:
            self._objects[key].create(obj)
        else:
            self._objects[key] = obj
        await self._publish(resource, "ADDED", copy.deepcopy(obj))
        return obj

    async def _patch(
        self,
        resource: Any,
        namespace: str | None,
        name: str | None,
        patch: Any,
        subresource: str | None,
        ctype: str,
    ) -> JsonDict:
        old = self.__object(resource, namespace, name)
        if old is None:
            raise kmock.KubernetesError(404, "NotFound", f'{resource.plural} "{name}" not found')
        if "json-patch" in ctype:
            patched = jsonpatch.apply_patch(old, patch, in_place=False)
        elif isinstance(patch, dict):
            wanted_rv = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted_rv is not None and str(wanted_rv) != old["metadata"]["resourceVersion"]:
                raise kmock.KubernetesError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource.plural} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                )
            patched = _merge(old, patch)
        else:
            raise kmock.KubernetesError(400, "BadRequest", "a merge patch must be a JSON object")
        if subresource == "status":
            new = copy.deepcopy(old)
            if patched.get("status") is None:
                new.pop("status", None)
            else:
                new["status"] = patched["status"]
        elif subresource:
            raise kmock.KubernetesError(
                405, "MethodNotAllowed", f"cannot patch {resource.plural}/{subresource}"
            )
        else:
            new = patched
            if resource in self._status_subresource:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = old["status"]
        for field in ("uid", "creationTimestamp", "name", "namespace", "generation", "resourceVersion"):
            if field in old["metadata"]:
                new["metadata"][field] = old["metadata"][field]
            else:
                new["metadata"].pop(field, None)
        if old["metadata"].get("deletionTimestamp"):
            new["metadata"]["deletionTimestamp"] = old["metadata"]["deletionTimestamp"]
        if new == old:
            return old
        spec_of = {k: v for k, v in old.items() if k not in ("metadata", "status")}
        if {k: v for k, v in new.items() if k not in ("metadata", "status")} != spec_of:
            new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1
        new["metadata"]["resourceVersion"] = self._next_rv()
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            await self._remove(resource, namespace, str(name), new)
            return new
        self._objects[resource, namespace, str(name)].history.append(new)
        await self._publish(resource, "MODIFIED", copy.deepcopy(new))
        return new

    async def _delete(
        self, resource: Any, namespace: str | None, name: str | None, propagation: str
    ) -> JsonDict:
        obj = self.__object(resource, namespace, name)
        if obj is None:
            raise kmock.KubernetesError(404, "NotFound", f'{resource.plural} "{name}" not found')
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = _now()
                obj["metadata"]["resourceVersion"] = self._next_rv()
                self._objects[resource, namespace, str(name)].history.append(obj)
                await self._publish(resource, "MODIFIED", copy.deepcopy(obj))
            return obj
        if propagation == "Foreground":
            await self._collect(obj["metadata"]["uid"], "Foreground")
        obj["metadata"]["deletionTimestamp"] = obj["metadata"].get("deletionTimestamp") or _now()
        obj["metadata"]["resourceVersion"] = self._next_rv()
        await self._remove(resource, namespace, str(name), obj)
        if propagation == "Background":
            await self._collect(obj["metadata"]["uid"], "Background")
        elif propagation == "Orphan":
            await self._orphan(obj["metadata"]["uid"])
        return obj

    async def _remove(self, resource: Any, namespace: str | None, name: str, last: JsonDict) -> None:
        self._objects[resource, namespace, name].history.append(last)
        self._objects[resource, namespace, name].delete()
        await self._publish(resource, "DELETED", copy.deepcopy(last))

    def _dependents(self, uid: str) -> Iterator[tuple[Any, str | None, str]]:
        for (resource, namespace, name), stored in list(self._objects.items()):
            if stored.deleted:
                continue
            refs = (stored.raw.get("metadata") or {}).get("ownerReferences") or []
            if any(ref.get("uid") == uid for ref in refs):
                yield resource, namespace, name

    async def _collect(self, uid: str, propagation: str) -> None:
        """The garbage collector, done at once: dependents of a deleted owner are deleted too."""
        for resource, namespace, name in list(self._dependents(uid)):
            if self.__object(resource, namespace, name) is not None:
                await self._delete(resource, namespace, name, propagation)

    async def _orphan(self, uid: str) -> None:
        for resource, namespace, name in list(self._dependents(uid)):
            obj = self.__object(resource, namespace, name)
            assert obj is not None
            refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            obj["metadata"]["ownerReferences"] = refs
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self._objects[resource, namespace, name].history.append(obj)
            await self._publish(resource, "MODIFIED", copy.deepcopy(obj))

    # -- reads ----------------------------------------------------------------------------------------
    def _visible(self, request: rendering.Request, obj: JsonDict) -> bool:
        meta = obj.get("metadata") or {}
        if request.namespace is not None and meta.get("namespace") != request.namespace:
            return False
        if request.name is not None and meta.get("name") != request.name:
            return False
        labels = request.params.get("labelSelector")
        if labels and not _selector_matches(labels, meta.get("labels") or {}):
            return False
        fields = request.params.get("fieldSelector")
        return not (fields and not _field_matches(fields, obj))

    def _current(self, request: rendering.Request) -> list[JsonDict]:
        return [
            copy.deepcopy(stored.raw)
            for (resource, _, _), stored in self._objects.items()
            if resource == request.resource and not stored.deleted and self._visible(request, stored.raw)
        ]

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        if request.resource not in set(self._get_resources()):
            raise kmock.KubernetesResourceNotFoundError()
        async with self._lock:
            items = self._current(request)
            rv = str(self._last_rv)
        kind = self._kinds.get(request.resource, "")
        return {
            "apiVersion": f"{request.resource.group}/{request.resource.version}".lstrip("/"),
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": rv},
            "items": items,
        }

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        yield b""
        since = request.params.get("resourceVersion")
        assert request.resource is not None  # routed here only for resource requests
        bus = self._buses[request.resource]
        async with self._lock:
            if since and since != "0" and since.isdigit():
                first = [e for rv, e in self._journal.get(request.resource, []) if rv > int(since)]
            else:
                first = [{"type": "ADDED", "object": obj} for obj in self._current(request)]
            # Marked under the lock: no event can slip between the replay and the live stream.
            mark = await bus.mark()
        try:
            for event in first:
                if self._visible(request, event["object"]):
                    yield event
            async for event in bus.stream(since=mark):
                if self._visible(request, event.get("object") or {}):
                    yield event
        finally:
            await bus.unmark(mark)


class EmulatorServer:
    """Serves a KubeEmulator on 127.0.0.1 from its own thread and event loop, so that synchronous tests,
    the operator process and other helpers can all use it over HTTP at the same time."""

    def __init__(self, emulator: KubeEmulator | None = None) -> None:
        self.emulator = emulator or KubeEmulator()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self.url = ""

    def __enter__(self) -> EmulatorServer:
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._failure is not None:
            raise RuntimeError(f"the emulator did not start: {self._failure!r}")
        return self

    def __exit__(self, *_: object) -> None:
        self.emulator.release_all()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.emulator, kmock.Server(self.emulator) as server:
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` in the emulator's loop (the only safe place to read its state)."""
        assert self._loop is not None

        async def wrapper() -> T:
            async with self.emulator._lock:
                return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(30)

    def history(self, key: str, namespace: str | None, name: str) -> list[JsonDict | None]:
        """Every stored version of an object (None where it was deleted), oldest first."""
        resource = kmock.resource(key)

        def read() -> list[JsonDict | None]:
            if (resource, namespace, name) not in self.emulator.objects:
                return []
            return [
                None if version is None else copy.deepcopy(dict(version.raw))
                for version in self.emulator.objects[resource, namespace, name].history
            ]

        return self.call(read)

    def count_requests(self, match: Callable[[rendering.Request], bool]) -> int:
        """How many requests matching `match` the emulator has received (faulted ones included)."""
        return self.call(lambda: sum(1 for request in self.emulator._requests if match(request)))

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "not-a-real-token"}}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "tester", "namespace": namespace},
                }
            ],
            "current-context": "emulator",
        }
        path.write_text(json.dumps(config, indent=2))
        return path


@contextmanager
def running_emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer() as server:
        yield server
