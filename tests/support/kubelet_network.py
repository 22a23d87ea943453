"""Pod networking for the test pod runner: each pod of a headless Service gets what a node and the cluster DNS
give it, so the pods of an Indexed Job find each other by name (`<hostname>.<subdomain>`) as on a cluster.

A pod with `spec.subdomain` runs in namespaces of its own (`unshare`: user, mount, UTS and PID; no root):

- UTS: its hostname is `spec.hostname` (else the pod's name), as the kubelet sets it;
- mount: `/etc/hosts` is a file of its own, bind-mounted, listing the pod's own address under its FQDN
  `<hostname>.<subdomain>.<namespace>.svc.cluster.local` and its hostname (the kubelet's hosts file), and
  every running pod that a headless Service of the same name selects, under the names the cluster DNS
  and the pod's search path resolve (`<hostname>.<subdomain>` with and without
  `.<namespace>.svc.cluster.local`). The runner rewrites it in place as those pods come and go (the cluster
  DNS updates its records too);
- PID: the container's processes die with it. torchrun starts its workers in sessions of their own, so a
  SIGKILL to the container's process group alone would leave them running, where a node failure kills
  every process of the pod. As in a container, the command is PID 1 there: SIGTERM reaches it only if it
  handles SIGTERM (torchrun and the trainer do), and the runner sends it there, since `unshare --fork`
  does not pass it on.

The network stays the host's (every pod listens on the same loopback), but each pod has an address of its
own in 127.0.0.0/8, all of which is loopback on Linux. One shared address would not do: torchrun's c10d
rendezvous decides which node hosts its store by whether the endpoint's name resolves to one of the node's
own addresses, and every node would think it was the host.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.kube_client import JsonDict

CLUSTER_DOMAIN = "svc.cluster.local"
HOSTS_FILE = "etc-hosts"
"""In the pod's run directory: what the pod sees as /etc/hosts."""
FIRST_ADDRESS = ipaddress.IPv4Address("127.1.0.1")
KUBELET_HOSTS_HEADER = """# Kubernetes-managed hosts file (test pod runner).
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
"""

# The container's first process inside the namespaces: the kubelet's part of the sandbox (hosts file and
# hostname), then the container's command, which takes its place as PID 1.
_SETUP = (
    "import os, socket, subprocess, sys\n"
    "subprocess.run([sys.argv[1], '--bind', sys.argv[2], '/etc/hosts'], check=True)\n"
    "socket.sethostname(sys.argv[3])\n"
    "os.execv(sys.argv[4], sys.argv[4:])\n"
)
UNSHARE_FLAGS = (
    "--user",
    "--map-root-user",
    "--mount",
    "--uts",
    "--pid",
    "--fork",
    "--kill-child",
    "--mount-proc",
)


def wrap(command: Sequence[str], hosts_file: Path, hostname: str) -> list[str]:
    """`command` (an absolute executable first) as the container of a pod in namespaces of its own."""
    unshare, mount = shutil.which("unshare"), shutil.which("mount")
    assert unshare is not None and mount is not None, unavailable_reason()
    return [unshare, *UNSHARE_FLAGS, sys.executable, "-c", _SETUP, mount, str(hosts_file), hostname, *command]


@functools.cache
def unavailable_reason() -> str | None:
    """Why pods cannot get namespaces of their own on this machine (None: they can)."""
    for tool in ("unshare", "mount"):
        if shutil.which(tool) is None:
            return f"`{tool}` (util-linux) is not installed"
    with tempfile.TemporaryDirectory() as folder:
        hosts = Path(folder) / "hosts"
        hosts.write_text(f"{KUBELET_HOSTS_HEADER}127.1.0.1\tprobe.sub probe\n")
        check = (
            "import socket; assert socket.gethostname() == 'probe'; print(socket.gethostbyname('probe.sub'))"
        )
        try:
            done = subprocess.run(
                wrap([sys.executable, "-c", check], hosts, "probe"),
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unshare failed: {exc}"
    if done.returncode != 0 or done.stdout.strip() != "127.1.0.1":
        return f"unshare {' '.join(UNSHARE_FLAGS)} does not work here: {(done.stderr or done.stdout).strip()[-500:]}"
    return None


def require_pod_network() -> None:
    """Skip a test that needs pods in namespaces of their own where unprivileged namespaces are refused;
    under CI=true that is a failure, as a missing control plane is (tests/support/kube_fixtures.py)."""
    why = unavailable_reason()
    if why is None:
        return
    why = f"pods cannot get namespaces of their own (user, mount, UTS, PID): {why}"
    if os.environ.get("CI") == "true":
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


def hostname_of(pod: JsonDict) -> str:
    return str(pod["spec"].get("hostname") or pod["metadata"]["name"])[:63]


def is_networked(pod: JsonDict) -> bool:
    """The pods that get their own hostname and hosts file: those with a subdomain, which only a headless
    Service gives a meaning; every other pod runs as a plain process, as before."""
    return bool(pod["spec"].get("subdomain"))


@dataclass(frozen=True)
class Peer:
    """A running pod as the cluster DNS publishes it."""

    address: str
    hostname: str
    subdomain: str
    namespace: str

    @property
    def fqdn(self) -> str:
        return f"{self.hostname}.{self.subdomain}.{self.namespace}.{CLUSTER_DOMAIN}"


class Addresses:
    """One loopback address per pod (by uid), never reused within a runner."""

    def __init__(self) -> None:
        self._by_uid: dict[str, str] = {}

    def of(self, uid: str) -> str:
        if uid not in self._by_uid:
            self._by_uid[uid] = str(FIRST_ADDRESS + len(self._by_uid))
        return self._by_uid[uid]


def service_selects(service: JsonDict | None, labels: dict[str, str]) -> bool:
    """Whether a Service named as a pod's subdomain makes DNS records for the pod (by its labels): a
    headless Service that selects it. Readiness does not count: the runner's pods are Ready as they run."""
    if service is None or service["spec"].get("clusterIP") != "None":
        return False
    selector: dict[str, str] = service["spec"].get("selector") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def hosts_file(own: Peer, peers: Iterable[Peer]) -> str:
    """The pod's /etc/hosts: the kubelet's lines, then what the cluster DNS would answer for its peers."""
    lines = [KUBELET_HOSTS_HEADER, f"{own.address}\t{own.fqdn}\t{own.hostname}\n"]
    # The pod itself too, when published: `<job>-0.<service>` is how index 0 finds itself as the host.
    for peer in sorted(peers, key=lambda p: (p.subdomain, p.hostname, p.address)):
        lines.append(f"{peer.address}\t{peer.fqdn}\t{peer.hostname}.{peer.subdomain}\n")
    return "".join(lines)


def rewrite_in_place(file: Path, text: str) -> None:
    """A bind mount holds the file's inode: a rename would leave the pod with the old file."""
    with file.open("r+" if file.exists() else "w") as handle:
        handle.write(text)
        handle.truncate()


def namespace_init_pid(pid: int) -> int | None:
    """The first process inside the namespaces (`unshare --fork`'s child): signals for the container go to
    it, since unshare itself does not pass SIGTERM on."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None
