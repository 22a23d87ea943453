"""A test kubelet for the real control plane: one Ready Node whose container logs the API server can read.

`TestKubelet` registers the Node (loopback InternalIP, the port of its `KubeletLogServer`), keeps it
Ready as the kubelet does (Node status and a Lease in `kube-node-lease`, renewed every few seconds, so the
node lifecycle controller never taints it), and serves container logs from what tests or the pod runner
put in `logs`. Binding pods to the Node and writing their status are in tests/support/kube_actors.py.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tests.support import kube_actors as actors
from tests.support.kube_client import ApiError, KubeClient
from tests.support.kubelet_server import KubeletLogServer

HEARTBEAT_SECONDS = 5.0
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"


class TestKubelet:
    """The Node and its log endpoint; `logs[(namespace, pod, container)]` is a str or a file to read."""

    __test__ = False  # not a pytest test class

    def __init__(self, api: KubeClient, cert_file: Path, key_file: Path, node: str = actors.NODE) -> None:
        self.api = api
        self.node = node
        self.logs: dict[tuple[str, str, str], str | Path] = {}
        self.errors: list[str] = []
        self.server = KubeletLogServer(self._read_log, cert_file, key_file)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat_loop, name="kubelet-heartbeat", daemon=True)

    def set_log(self, namespace: str, pod: str, text: str | Path, container: str = actors.TRAINER) -> None:
        self.logs[(namespace, pod, container)] = text

    def _read_log(self, namespace: str, pod: str, container: str) -> str | None:
        source = self.logs.get((namespace, pod, container))
        if isinstance(source, Path):
            return source.read_text(errors="replace") if source.exists() else ""
        return source

    def __enter__(self) -> TestKubelet:
        self.server.__enter__()
        actors.register_node(self.api, self.node, self.server.port)
        self._renew_lease()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.server.__exit__()

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                actors.node_heartbeat(self.api, self.node, self.server.port)
                self._renew_lease()
            except Exception as exc:  # reported by the fixture, never silently lost
                self.errors.append(f"heartbeat: {type(exc).__name__}: {exc}")

    def _renew_lease(self) -> None:
        spec = {"holderIdentity": self.node, "leaseDurationSeconds": 40, "renewTime": actors.now_micro()}
        try:
            self.api.patch(f"{LEASES}/{self.node}", {"spec": spec})
        except ApiError as err:
            if err.status != 404:
                raise
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": self.node}}
            self.api.create(LEASES, {**body, "spec": spec})
