"""A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager.

The binaries come from the folder named by `FTJOB_K8S_BIN` (default: `../shared/k8s/bin` beside the
repository, when it exists). They are started once per test session on free loopback ports, with
certificates made here, and stopped at the end. There is no kubelet and no scheduler: tests that need
pods to run play the kubelet (tests/support/kubelet.py).

Under `CI=true` a missing binary fails the session with a message naming what is missing; elsewhere
the tests that need the control plane are skipped with the same message.
"""

from __future__ import annotations

import base64
import ctypes
import datetime
import ipaddress
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import urllib3
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.kube_client import KubeClient
from tests.support.operator_process import free_port

BIN_ENV = "FTJOB_K8S_BIN"
DEFAULT_BIN = Path(__file__).resolve().parents[3] / "shared" / "k8s" / "bin"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
HOST = "127.0.0.1"


def binaries_folder() -> Path:
    return Path(os.environ.get(BIN_ENV) or DEFAULT_BIN)


def missing_binaries(folder: Path) -> list[str]:
    """What is missing from `folder` (etcd may also come from PATH, as Debian's etcd-server installs it)."""
    missing = []
    for name in BINARIES:
        if os.access(folder / name, os.X_OK):
            continue
        if name == "etcd" and shutil.which("etcd"):
            continue
        missing.append(str(folder / name))
    return missing


# -- certificates ----------------------------------------------------------------------------------------
@dataclass
class Pki:
    """A CA and the leaf certificates the control plane and its clients need, as PEM files in `root`."""

    root: Path
    _ca_key: Any = None
    _ca_cert: Any = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._ca_key, self._ca_cert = self._make_ca("ftjob-test-ca", "ca")
        front_key, front_cert = self._make_ca("ftjob-test-front-proxy-ca", "front-proxy-ca")
        self.leaf("apiserver", "kube-apiserver", server=True)
        self.leaf("admin", "ftjob-test-admin", groups=("system:masters",))
        self.leaf("kcm", "system:kube-controller-manager")
        self.leaf("front-proxy-client", "front-proxy-client", ca=(front_key, front_cert))
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._write_key("sa.key", sa_key)
        (self.root / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def path(self, name: str) -> Path:
        return self.root / name

    def _write_key(self, name: str, key: Any) -> None:
        target = self.root / name
        target.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        target.chmod(0o600)

    def _make_ca(self, common_name: str, stem: str) -> tuple[Any, Any]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(key, hashes.SHA256())
        )
        self._write_key(f"{stem}.key", key)
        (self.root / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return key, cert

    def leaf(
        self,
        stem: str,
        common_name: str,
        *,
        groups: tuple[str, ...] = (),
        server: bool = False,
        ca: tuple[Any, Any] | None = None,
    ) -> tuple[Path, Path]:
        """Write `stem.crt`/`stem.key`: a client certificate (CN = user, O = groups) or a serving one."""
        ca_key, ca_cert = ca or (self._ca_key, self._ca_cert)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName("kubernetes.default.svc"),
                        x509.IPAddress(ipaddress.ip_address(HOST)),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        self._write_key(f"{stem}.key", key)
        (self.root / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return self.root / f"{stem}.crt", self.root / f"{stem}.key"


# -- the control plane -----------------------------------------------------------------------------------
@dataclass
class Component:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class ControlPlane:
    """One etcd + kube-apiserver + kube-controller-manager, all on loopback, in `root`."""

    bin_dir: Path
    root: Path
    api_port: int = field(default_factory=free_port)
    components: list[Component] = field(default_factory=list)
    _pki: Pki = field(init=False)
    admin_kubeconfig: Path = field(init=False)

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.api_port}"

    @property
    def pki(self) -> Pki:
        return self._pki

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self, timeout: float = 90.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        self._pki = Pki(self.root / "pki")
        etcd_port, peer_port, kcm_port = free_port(), free_port(), free_port()
        etcd = str(self.bin_dir / "etcd") if os.access(self.bin_dir / "etcd", os.X_OK) else "etcd"
        self._start(
            "etcd",
            [
                etcd,
                "--name=ftjob-test",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls=http://{HOST}:{etcd_port}",
                f"--advertise-client-urls=http://{HOST}:{etcd_port}",
                f"--listen-peer-urls=http://{HOST}:{peer_port}",
                f"--initial-advertise-peer-urls=http://{HOST}:{peer_port}",
                f"--initial-cluster=ftjob-test=http://{HOST}:{peer_port}",
                "--initial-cluster-state=new",
                # Test data is thrown away: no fsync per write (the 2-core CI disk is the bottleneck).
                "--unsafe-no-fsync",
                "--logger=zap",
            ],
        )
        self._wait_http("etcd", f"http://{HOST}:{etcd_port}/health", timeout, verify=None)
        pki = self._pki
        self._start(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://{HOST}:{etcd_port}",
                f"--bind-address={HOST}",
                f"--advertise-address={HOST}",
                f"--secure-port={self.api_port}",
                f"--cert-dir={self.root / 'apiserver-certs'}",
                f"--tls-cert-file={pki.path('apiserver.crt')}",
                f"--tls-private-key-file={pki.path('apiserver.key')}",
                f"--client-ca-file={pki.path('ca.crt')}",
                f"--requestheader-client-ca-file={pki.path('front-proxy-ca.crt')}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.path('front-proxy-client.crt')}",
                f"--proxy-client-key-file={pki.path('front-proxy-client.key')}",
                "--authorization-mode=RBAC",
                # On in most clusters: setting blockOwnerDeletion needs `update` on the owner's finalizers.
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.path('sa.pub')}",
                f"--service-account-signing-key-file={pki.path('sa.key')}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--endpoint-reconciler-type=none",
                # The test kubelet registers its Node with a loopback InternalIP only.
                "--kubelet-preferred-address-types=InternalIP",
                "--profiling=false",
            ],
        )
        self._wait_http("kube-apiserver", f"{self.url}/readyz", timeout, verify=pki.path("ca.crt"))
        self._write_kubeconfig(self.root / "kcm.kubeconfig", pki.path("kcm.crt"), pki.path("kcm.key"))
        kcm_config = self.root / "kcm.kubeconfig"
        self._start(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kcm_config}",
                f"--authentication-kubeconfig={kcm_config}",
                f"--authorization-kubeconfig={kcm_config}",
                f"--bind-address={HOST}",
                f"--secure-port={kcm_port}",
                f"--cert-dir={self.root / 'kcm-certs'}",
                "--controllers=*",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.path('sa.key')}",
                f"--root-ca-file={pki.path('ca.crt')}",
                f"--cluster-signing-cert-file={pki.path('ca.crt')}",
                f"--cluster-signing-key-file={pki.path('ca.key')}",
                "--cluster-name=ftjob-test",
                "--leader-elect=false",
                f"--flex-volume-plugin-dir={self.root / 'flexvolume'}",
                "--profiling=false",
            ],
        )
        self._wait_http(
            "kube-controller-manager", f"https://{HOST}:{kcm_port}/healthz", timeout, verify=False
        )
        self.admin_kubeconfig = self.write_kubeconfig(self.root / "admin.kubeconfig")

    def stop(self) -> None:
        for component in reversed(self.components):
            if component.process.poll() is None:
                component.process.send_signal(signal.SIGTERM)
                try:
                    component.process.wait(15)
                except subprocess.TimeoutExpired:
                    component.process.kill()
                    component.process.wait(10)
            component.log_file.close()
        self.components.clear()

    def _start(self, name: str, command: list[str]) -> None:
        log_path = self.root / "logs" / f"{name}.log"
        log_file = log_path.open("wb")
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.components.append(Component(name, process, log_path, log_file))

    def _wait_http(self, name: str, url: str, timeout: float, verify: Path | bool | None) -> None:
        component = self.components[-1]
        if isinstance(verify, Path):
            http = urllib3.PoolManager(
                ca_certs=str(verify),
                cert_file=str(self._pki.path("admin.crt")),
                key_file=str(self._pki.path("admin.key")),
            )
        else:
            # Only the controller manager's self-signed health endpoint is read unverified.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            http = urllib3.PoolManager(cert_reqs=ssl.CERT_NONE if verify is False else None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if component.process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {component.process.returncode}:\n{component.log_tail()}"
                )
            try:
                response = http.request("GET", url, timeout=3.0, retries=False)
                if response.status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} was not ready after {timeout} s ({url}):\n{component.log_tail()}")

    # -- clients -----------------------------------------------------------------------------------------
    def client(self, *, token: str | None = None, impersonate: str | None = None) -> KubeClient:
        """A test client: the admin's certificate, or a bearer token (e.g. a ServiceAccount's)."""
        if token is not None:
            return KubeClient(self.url, ca_file=self._pki.path("ca.crt"), token=token)
        return KubeClient(
            self.url,
            ca_file=self._pki.path("ca.crt"),
            cert_file=self._pki.path("admin.crt"),
            key_file=self._pki.path("admin.key"),
            impersonate=impersonate,
        )

    def write_kubeconfig(self, target: Path, *, token: str | None = None, server: str | None = None) -> Path:
        """A kubeconfig for the admin (system:masters) or for a bearer token; `server` overrides the URL
        (a fault-injecting proxy, which speaks plain HTTP and authenticates upstream itself)."""
        if token is not None:
            user: dict[str, Any] = {"token": token}
        else:
            user = {
                "client-certificate-data": _b64(self._pki.path("admin.crt")),
                "client-key-data": _b64(self._pki.path("admin.key")),
            }
        cluster: dict[str, Any] = {"server": server or self.url}
        if cluster["server"].startswith("https:"):
            cluster["certificate-authority-data"] = _b64(self._pki.path("ca.crt"))
        elif server is not None:
            user = {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": cluster}],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user"}}],
            "current-context": "test",
        }
        target.write_text(yaml.safe_dump(config))
        target.chmod(0o600)
        return target

    def _write_kubeconfig(self, target: Path, cert: Path, key: Path) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": _b64(self._pki.path("ca.crt")),
                    },
                }
            ],
            "users": [{"name": "user", "user": {"client-certificate": str(cert), "client-key": str(key)}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user"}}],
            "current-context": "test",
        }
        target.write_text(yaml.safe_dump(config))

    def component_logs(self) -> dict[str, str]:
        return {c.name: c.log_tail(200) for c in self.components}


def _die_with_parent() -> None:
    """A killed test run (SIGKILL, a timeout) must not leave an API server and etcd behind: Linux kills
    the component when the process that started it dies. SIGKILL, since an API server whose etcd is
    already gone hangs in its graceful shutdown, and the data is thrown away anyway."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def start_control_plane() -> ControlPlane:
    plane = ControlPlane(binaries_folder(), Path(tempfile.mkdtemp(prefix="ftjob-k8s-")))
    try:
        plane.start()
    except BaseException:
        plane.stop()
        raise
    return plane
