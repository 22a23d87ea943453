"""A fault-injecting HTTP proxy between a client under test (the operator) and the real API server.

It listens on plain HTTP on a free loopback port and forwards every request to the API server over TLS
with the admin's client certificate (a kubeconfig pointing at it needs no credentials:
`ControlPlane.write_kubeconfig(path, server=proxy.url)`). Responses are streamed chunk by chunk, so
watches work through it.

Faults are rules: a `Match` (method, path regex, query values) and an action, taken by the first `times`
matching requests: `Reply` (an error Status, e.g. 429 with Retry-After, 500, 503), `Drop` (close the
connection without an answer), `Delay`, `Reset` (reset the connection in the middle of the response),
`Cut` (end a watch stream after some events or seconds) and `Hold` (keep the request in flight until the
test releases it, before or after the API server has served it: the moment to kill the client).

Every request is recorded (`records`, `count(match)`): method, path, query, the action taken, and the
status: the API server's (also when a `Reset` kept it from the client) or the injected one; 0 when the
request was never answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

# Not forwarded either way: hop-by-hop headers, and what aiohttp sets itself. No Accept-Encoding
# upstream, so that bodies pass uncompressed and watch events can be counted.
_SKIP_REQUEST = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "accept-encoding"}
_SKIP_RESPONSE = {"content-length", "transfer-encoding", "connection", "keep-alive"}


def resource_path(
    plural: str, name: str | None = None, sub: str | None = None, namespace: str = "[^/]+"
) -> str:
    """A path regex for `Match`: a namespaced resource of any API group (`name=None`: the collection)."""
    out = rf"/(?:api|apis/[^/]+)/[^/]+/namespaces/{namespace}/{plural}"
    if name is not None:
        out += f"/{re.escape(name)}"
        if sub is not None:
            out += f"/{sub}"
    return out


@dataclass(frozen=True)
class Match:
    """Which requests a rule takes: `path` is a regex the whole path must match; every `query` item must be
    present with that value (`None`: with any value)."""

    method: str | None = None
    path: str | None = None
    query: Mapping[str, str | None] = field(default_factory=dict)
    without: tuple[str, ...] = ()
    """Query parameters that must be absent (`("watch",)`: every request but watches)."""

    def __call__(self, method: str, path: str, query: Mapping[str, str]) -> bool:
        return (
            not any(key in query for key in self.without)
            and (self.method is None or self.method.upper() == method.upper())
            and (self.path is None or re.fullmatch(self.path, path) is not None)
            and all(k in query and (v is None or query[k] == v) for k, v in self.query.items())
        )


@dataclass(frozen=True)
class Reply:
    """Answer with an error Status instead of forwarding."""

    status: int
    reason: str = ""
    message: str = "injected by the fault proxy"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Drop:
    """Close the connection without an answer (the request never reaches the API server)."""


@dataclass(frozen=True)
class Delay:
    seconds: float


@dataclass(frozen=True)
class Reset:
    """Forward, send the status line and `after_bytes` of the body, then reset the connection (TCP RST)."""

    after_bytes: int = 0


@dataclass(frozen=True)
class Cut:
    """Forward a (watch) stream and end it cleanly after `events` lines or `seconds`, whichever first."""

    events: int | None = None
    seconds: float | None = None


@dataclass(eq=False)
class Hold:
    """Keep the request in flight until `release()`: with `forward_first` the API server serves it (the
    change is made) but the answer waits; without, it waits before being forwarded, and is not forwarded
    at all if the client has gone meanwhile."""

    forward_first: bool = False
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


Action = Reply | Drop | Delay | Reset | Cut | Hold


@dataclass
class Rule:
    match: Match
    action: Action
    times: int | None = 1
    """How many requests it takes; None: all of them."""
    every: int = 1
    """Takes only every `every`-th matching request (4: a quarter of them); the others pass it by."""
    hits: int = 0
    seen: int = 0


@dataclass
class Record:
    method: str
    path: str
    query: dict[str, str]
    action: str | None
    status: int = 0


class FaultProxy:
    """Start with `with FaultProxy(api_url, ca, cert, key) as proxy:`; point the client at `proxy.url`."""

    def __init__(self, upstream: str, ca_file: Path, cert_file: Path, key_file: Path) -> None:
        self.upstream = upstream.rstrip("/")
        self.records: list[Record] = []
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._ssl = ssl.create_default_context(cafile=str(ca_file))
        self._ssl.load_cert_chain(str(cert_file), str(key_file))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = False
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- test controls (any thread) -------------------------------------------------------------------
    def add(self, match: Match, action: Action, times: int | None = 1, every: int = 1) -> Rule:
        rule = Rule(match, action, times, every)
        with self._lock:
            self._rules.append(rule)
        return rule

    def hold(self, match: Match, *, forward_first: bool) -> Hold:
        hold = Hold(forward_first)
        self.add(match, hold)
        return hold

    def clear(self) -> None:
        """Remove every rule and release every held request."""
        with self._lock:
            rules, self._rules = self._rules, []
        for rule in rules:
            if isinstance(rule.action, Hold):
                rule.action.release()

    def count(self, match: Match, status: int | None = None) -> int:
        """Requests matching `match` (and answered with `status`, if given)."""
        with self._lock:
            records = list(self.records)
        return sum(
            1 for r in records if match(r.method, r.path, r.query) and (status is None or r.status == status)
        )

    # -- lifecycle ------------------------------------------------------------------------------------
    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._run(self._start())
        return self

    def __exit__(self, *_: object) -> None:
        self._closing = True
        self.clear()
        self._run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=30)

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )

    async def _stop(self) -> None:
        # Upstream first: open watch streams end, and with them the handlers that relay them.
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # -- serving --------------------------------------------------------------------------------------
    def _take(self, record: Record) -> Action | None:
        with self._lock:
            self.records.append(record)
            for rule in self._rules:
                if (rule.times is None or rule.hits < rule.times) and rule.match(
                    record.method, record.path, record.query
                ):
                    rule.seen += 1
                    if (rule.seen - 1) % rule.every:
                        continue
                    rule.hits += 1
                    record.action = type(rule.action).__name__
                    return rule.action
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        record = Record(request.method, request.path, dict(request.query), None)
        action = self._take(record)
        body = await request.read()
        if isinstance(action, Reply):
            record.status = action.status
            return web.json_response(_status_body(action), status=action.status, headers=dict(action.headers))
        if isinstance(action, Drop):
            _abort(request)
            return web.Response()  # never written: the connection is gone
        if isinstance(action, Delay):
            await asyncio.sleep(action.seconds)
        if isinstance(action, Hold) and not action.forward_first:
            await self._wait_released(action)
            if _client_gone(request):
                return web.Response()
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP_REQUEST}
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            record.status = upstream.status
            if isinstance(action, Hold):  # forward_first: served upstream, the answer waits
                content = await upstream.read()
                await self._wait_released(action)
                return web.Response(body=content, status=upstream.status, headers=_response_headers(upstream))
            response = web.StreamResponse(status=upstream.status, headers=_response_headers(upstream))
            try:
                await response.prepare(request)
                if isinstance(action, Reset):
                    await self._reset(request, response, upstream, action)
                    return response
                await self._stream(response, upstream, action if isinstance(action, Cut) else None)
                await response.write_eof()
            except (ConnectionError, aiohttp.ClientError, RuntimeError):
                pass  # the client went away, or the proxy is closing
            return response

    async def _stream(
        self, response: web.StreamResponse, upstream: aiohttp.ClientResponse, cut: Cut | None
    ) -> None:
        deadline = time.monotonic() + cut.seconds if cut and cut.seconds is not None else None
        events = 0
        while not self._closing:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                return
            try:
                chunk = await asyncio.wait_for(upstream.content.readany(), timeout)
            except TimeoutError:
                return
            if not chunk:
                return
            if cut is not None and cut.events is not None:
                lines = chunk.split(b"\n")
                if events + len(lines) - 1 >= cut.events:
                    keep = cut.events - events
                    await response.write(b"\n".join(lines[:keep]) + b"\n")
                    return
                events += len(lines) - 1
            await response.write(chunk)

    async def _reset(
        self,
        request: web.Request,
        response: web.StreamResponse,
        upstream: aiohttp.ClientResponse,
        reset: Reset,
    ) -> None:
        sent = 0
        while sent < reset.after_bytes:
            chunk = await upstream.content.readany()
            if not chunk:
                break
            chunk = chunk[: reset.after_bytes - sent]
            await response.write(chunk)
            sent += len(chunk)
        _abort(request)

    async def _wait_released(self, hold: Hold) -> None:
        hold.arrived.set()
        while not hold.released.is_set() and not self._closing:
            await asyncio.sleep(0.05)


def _status_body(reply: Reply) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "code": reply.status,
        "reason": reply.reason or f"Injected{reply.status}",
        "message": reply.message,
    }


def _response_headers(upstream: aiohttp.ClientResponse) -> dict[str, str]:
    return {k: v for k, v in upstream.headers.items() if k.lower() not in _SKIP_RESPONSE}


def _client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def _abort(request: web.Request) -> None:
    """Reset the client's connection: SO_LINGER 0 makes the close send a TCP RST."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
