"""A test-only pod runner: the scheduler's and the kubelet's part, for real processes on the test Node.

The real Job controller (kube-controller-manager) creates the pods, counts their failures and applies
`podFailurePolicy` and `backoffLimit`; this runner never writes a Job. For the pods of one namespace it:

- binds every unbound pod to the test Node (`pods/binding`: the scheduler's job);
- runs each bound pod's container (`command` + `args`) as a local process: the environment is the pod's,
  `secretKeyRef`/`configMapKeyRef` read from the real Secrets and ConfigMaps through the API (a missing
  one leaves the pod waiting with `CreateContainerConfigError`, as the kubelet does), `fieldRef` for the
  pod's own metadata; volume mount paths and the `terminationMessagePath` map to folders of a run
  directory per pod (the same mapping as `ftjob local`: `ftjob_cli.local_run.resolve_env`);
- serves the process's output as the container log (`TestKubelet.set_log`), so `pods/log` through the API
  server reads it;
- writes the pod status as the kubelet does (`pods/status`): Running, then Terminated with the exit code,
  the reason (Completed, Error, or OOMKilled when a test says so) and the termination message
  (`FallbackToLogsOnError`: the log's tail when the file is empty and the container failed);
- stops a pod that gets a `deletionTimestamp` (a suspended or deleted Job, an active deadline): SIGTERM,
  SIGKILL after the grace period, the terminated status, then the final delete with
  `gracePeriodSeconds=0`;
- gives a pod with `spec.subdomain` (a headless Service's pod: an Indexed Job's worker) its own hostname,
  loopback address and /etc/hosts in namespaces of its own, so its peers resolve as through the cluster
  DNS (tests/support/kubelet_network.py).

Not modelled: init containers, more than one container, restarts (`restartPolicy: Never` only), probes,
`$(VAR)` expansion in the command, resource limits.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ftjob_cli.local_run import LocalRunError, resolve_env
from tests.support import kube_actors as actors
from tests.support import kubelet_network as network
from tests.support.kube_client import CORE, ApiError, JsonDict, KubeClient, path
from tests.support.kubelet import TestKubelet

# What the kubelet keeps of a termination message, and of the log when it falls back to it.
MESSAGE_LIMIT = 4096
FALLBACK_LINES = 80
FALLBACK_BYTES = 2048
DEFAULT_GRACE_SECONDS = 30


class ContainerConfigError(Exception):
    """What the kubelet reports as `CreateContainerConfigError` (a missing Secret, ConfigMap or key)."""


@dataclass
class Attempt:
    """One pod the runner started: its process, its run directory and how it ended."""

    namespace: str
    pod: str
    uid: str
    job: str | None
    run_dir: Path
    process: subprocess.Popen[bytes]
    log_file: IO[bytes]
    started_at: str
    index: int | None = None
    """The completion index of an Indexed Job's pod."""
    labels: dict[str, str] = field(default_factory=dict)
    peer: network.Peer | None = None
    """A pod in namespaces of its own: its hostname and address as its peers resolve them."""
    hosts_text: str = ""
    exit_code: int | None = None
    reason: str | None = None
    """Set by a test (e.g. OOMKilled) for the terminated status."""
    term_deadline: float | None = None
    status_written: bool = False
    finalized: bool = False

    @property
    def log_path(self) -> Path:
        return self.run_dir / "stdout.log"

    @property
    def termination_log(self) -> Path:
        return self.run_dir / "termination-log"

    @property
    def hosts_path(self) -> Path:
        return self.run_dir / network.HOSTS_FILE

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        """SIGTERM to the container's process (inside its namespaces, the first one there)."""
        pid = network.namespace_init_pid(self.process.pid) if self.peer is not None else None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid or self.process.pid, signal.SIGTERM)


def _owner_job(pod: JsonDict) -> str | None:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == "Job" and ref.get("controller"):
            return str(ref["name"])
    labels = pod["metadata"].get("labels") or {}
    return labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")


def _completion_index(pod: JsonDict) -> int | None:
    value = (pod["metadata"].get("annotations") or {}).get("batch.kubernetes.io/job-completion-index")
    return int(value) if value is not None else None


def _is_terminal(pod: JsonDict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _exit_code(returncode: int) -> int:
    """A process killed by a signal exits, as a container, with 128 + the signal number."""
    return 128 - returncode if returncode < 0 else returncode


def termination_message(container: JsonDict, exit_code: int, file: Path, log: str) -> str:
    text = file.read_bytes()[:MESSAGE_LIMIT].decode(errors="replace") if file.exists() else ""
    if not text and exit_code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
        tail = "".join(log.splitlines(keepends=True)[-FALLBACK_LINES:])
        text = tail.encode()[-FALLBACK_BYTES:].decode(errors="ignore")
    return text


class PodRunner:
    """Runs the pods of `namespace` on `kubelet`'s Node; `errors` collects what went wrong in its thread."""

    def __init__(
        self,
        api: KubeClient,
        kubelet: TestKubelet,
        namespace: str,
        run_root: Path,
        *,
        local_env: dict[str, str],
        image_env: dict[str, str] | None = None,
        interval: float = 0.2,
    ) -> None:
        self.api = api
        self.kubelet = kubelet
        self.namespace = namespace
        self.run_root = run_root
        self.local_env = local_env
        self.image_env = dict(image_env or {})
        """The image's own environment (its ENV lines): under the pod's, and not filtered as the node's is."""
        self.interval = interval
        self._addresses = network.Addresses()
        self.attempts: dict[str, Attempt] = {}  # by pod uid, in start order
        self.errors: list[str] = []
        self._config_errors: dict[str, str] = {}
        self._finished: set[str] = set()  # pods finished without ever running here
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._thread = threading.Thread(target=self._loop, name=f"pod-runner-{namespace}", daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------------------
    def __enter__(self) -> PodRunner:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        with self._lock:
            for attempt in self.attempts.values():
                if attempt.alive:
                    _kill_group(attempt.process)
                    attempt.process.wait(10)
                attempt.log_file.close()

    # -- what tests ask -------------------------------------------------------------------------------------
    def attempts_of(self, job: str, index: int | None = None) -> list[Attempt]:
        """The pods of `job` (of one completion index of an Indexed Job) the runner started, oldest first."""
        with self._lock:
            return [a for a in self.attempts.values() if a.job == job and index in (None, a.index)]

    def running(self, job: str, index: int | None = None) -> Attempt | None:
        found = [a for a in self.attempts_of(job, index) if a.alive]
        return found[-1] if found else None

    def kill_pod(self, job: str, reason: str | None = None, index: int | None = None) -> Attempt:
        """SIGKILL the job's running container (every process of it), like an OOM kill or a lost node;
        `reason="OOMKilled"` makes the terminated status say so."""
        with self._lock:
            attempt = self.running(job, index)
            assert attempt is not None, f"{job} has no running pod" + (
                f" of index {index}" if index is not None else ""
            )
            attempt.reason = reason
            _kill_group(attempt.process)
            return attempt

    def pod_log(self, job: str, attempt: int = -1, index: int | None = None) -> str:
        """The output of one attempt of the job's container (default: the latest)."""
        attempts = self.attempts_of(job, index)
        assert attempts, f"no pod of {job} was started"
        return attempts[attempt].output()

    def wait_for_log(self, job: str, text: str, timeout: float = 300, index: int | None = None) -> Attempt:
        """Wait until `text` appears in the output of the job's latest attempt; returns that attempt."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            attempts = self.attempts_of(job, index)
            if attempts and text in attempts[-1].output():
                return attempts[-1]
            time.sleep(0.2)
        tail = self.pod_log(job, index=index)[-3000:] if self.attempts_of(job, index) else "(no pod started)"
        raise AssertionError(f"{text!r} never appeared in the log of {job}:\n{tail}")

    def check(self) -> None:
        assert not self.errors, self.errors

    # -- the loop -------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    self._sync()
            except Exception as exc:  # a broken runner must fail the test, not hang it
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.interval)

    def _sync(self) -> None:
        seen = set()
        for pod in self.api.pods(self.namespace):
            seen.add(pod["metadata"]["uid"])
            try:
                self._step(pod)
            except ApiError as err:
                if err.status not in (404, 409):  # deleted meanwhile, or a write that raced another one
                    raise
        for uid, attempt in self.attempts.items():
            if uid not in seen and attempt.alive:
                # Force-deleted from the API: the kubelet kills what no longer exists.
                _kill_group(attempt.process)
                attempt.finalized = True
        self._publish_hosts()

    def _step(self, pod: JsonDict) -> None:
        node = pod["spec"].get("nodeName")
        if not node:
            if not pod["metadata"].get("deletionTimestamp"):
                actors.bind_pod(self.api, pod, self.kubelet.node)
            return
        if node != self.kubelet.node:
            return
        attempt = self.attempts.get(pod["metadata"]["uid"])
        if attempt is None:
            self._admit(pod)
        else:
            self._tend(pod, attempt)

    def _admit(self, pod: JsonDict) -> None:
        """A pod of this Node the runner has not started: start it, or finish it if it must not run."""
        meta = pod["metadata"]
        if meta["uid"] in self._finished:
            return
        if meta.get("deletionTimestamp"):
            # Deleted before its container ever started (or after someone else wrote its end).
            if not _is_terminal(pod):
                actors.pod_terminated(
                    self.api,
                    pod,
                    137,
                    "The container could not be located when the pod was deleted.",
                    "ContainerStatusUnknown",
                )
            actors.delete_pod(self.api, pod, grace_period_seconds=0)
            self._finished.add(meta["uid"])
            return
        if _is_terminal(pod):
            return
        try:
            attempt = self._start(pod)
        except ContainerConfigError as err:
            message = str(err)
            if self._config_errors.get(meta["uid"]) != message:
                self._config_errors[meta["uid"]] = message
                actors.pod_waiting(self.api, pod, "CreateContainerConfigError", message)
            return
        self.attempts[meta["uid"]] = attempt
        self.kubelet.set_log(meta["namespace"], meta["name"], attempt.log_path, _container(pod)["name"])
        actors.pod_running(self.api, pod, started_at=attempt.started_at)

    def _tend(self, pod: JsonDict, attempt: Attempt) -> None:
        if attempt.finalized:
            return
        deleting = bool(pod["metadata"].get("deletionTimestamp"))
        if attempt.alive and deleting:
            if attempt.term_deadline is None:
                grace = pod["metadata"].get("deletionGracePeriodSeconds")
                if grace is None:
                    grace = pod["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
                attempt.term_deadline = time.monotonic() + float(grace)
                attempt.terminate()
            elif time.monotonic() >= attempt.term_deadline:
                _kill_group(attempt.process)
                attempt.process.wait(10)
        if attempt.alive:
            return
        if not attempt.status_written:
            self._write_terminated(pod, attempt)
        if deleting:
            # The container has stopped: the kubelet finishes the graceful deletion.
            actors.delete_pod(self.api, pod, grace_period_seconds=0)
            attempt.finalized = True

    def _write_terminated(self, pod: JsonDict, attempt: Attempt) -> None:
        attempt.log_file.flush()
        returncode = attempt.process.returncode
        assert returncode is not None
        attempt.exit_code = _exit_code(returncode)
        container = _container(pod)
        message = termination_message(container, attempt.exit_code, attempt.termination_log, attempt.output())
        actors.pod_terminated(
            self.api, pod, attempt.exit_code, message, attempt.reason, started_at=attempt.started_at
        )
        attempt.status_written = True

    # -- starting a container -------------------------------------------------------------------------------
    def _start(self, pod: JsonDict) -> Attempt:
        meta = pod["metadata"]
        container = _container(pod)
        run_dir = self.run_root / meta["name"]
        volumes = {v["name"] for v in pod["spec"].get("volumes") or []}
        mounts = {
            m["mountPath"]: run_dir / m["name"]
            for m in container.get("volumeMounts") or []
            if m["name"] in volumes
        }
        resolved, secrets = self._resolve_refs(pod, container)
        try:
            env = resolve_env(
                resolved,
                secrets=secrets,
                local_env=self.local_env,
                mounts=mounts,
                termination_log=run_dir / "termination-log",
            )
        except LocalRunError as err:
            raise ContainerConfigError(str(err)) from err
        env = {**self.image_env, **env}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        for folder in mounts.values():
            folder.mkdir(parents=True, exist_ok=True)
        command = [*container.get("command", []), *container.get("args", [])]
        executable = shutil.which(command[0], path=env["PATH"])
        if executable is None:
            raise ContainerConfigError(f'exec: "{command[0]}": executable file not found in $PATH')
        argv = [executable, *command[1:]]
        peer, hosts_text = (
            self._sandbox(pod, run_dir / network.HOSTS_FILE) if network.is_networked(pod) else (None, "")
        )
        if peer is not None:
            argv = network.wrap(argv, run_dir / network.HOSTS_FILE, peer.hostname)
        log_file = (run_dir / "stdout.log").open("wb")
        process = subprocess.Popen(
            argv,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=run_dir,
            start_new_session=True,  # its own process group: a SIGKILL takes every process of the container
        )
        return Attempt(
            namespace=meta["namespace"],
            pod=meta["name"],
            uid=meta["uid"],
            job=_owner_job(pod),
            run_dir=run_dir,
            process=process,
            log_file=log_file,
            started_at=actors.now(),
            index=_completion_index(pod),
            labels=dict(meta.get("labels") or {}),
            peer=peer,
            hosts_text=hosts_text,
        )

    # -- pod networking (pods of a headless Service) --------------------------------------------------------
    def _sandbox(self, pod: JsonDict, hosts_path: Path) -> tuple[network.Peer, str]:
        """The pod's address and its hosts file (written before its container starts, and returned)."""
        why = network.unavailable_reason()
        if why is not None:
            # Not a container config error: the test needs a runner that can do this, and fails loudly.
            raise RuntimeError(f"pod {pod['metadata']['name']} needs a namespace of its own: {why}")
        meta = pod["metadata"]
        peer = network.Peer(
            address=self._addresses.of(meta["uid"]),
            hostname=network.hostname_of(pod),
            subdomain=str(pod["spec"]["subdomain"]),
            namespace=meta["namespace"],
        )
        published = self._published_peers()
        if network.service_selects(self._service(peer.subdomain), meta.get("labels") or {}):
            published.append(peer)
        text = network.hosts_file(peer, published)
        hosts_path.parent.mkdir(parents=True, exist_ok=True)
        network.rewrite_in_place(hosts_path, text)
        return peer, text

    def _service(self, name: str) -> JsonDict | None:
        return self.api.get(path(CORE, "services", self.namespace, name))

    def _published_peers(self) -> list[network.Peer]:
        """The running pods that a headless Service publishes, as the cluster DNS answers for them."""
        running = [a for a in self.attempts.values() if a.peer is not None and a.alive]
        services = {a.peer.subdomain: self._service(a.peer.subdomain) for a in running if a.peer is not None}
        return [
            a.peer
            for a in running
            if a.peer is not None and network.service_selects(services[a.peer.subdomain], a.labels)
        ]

    def _publish_hosts(self) -> None:
        """Each running networked pod's /etc/hosts follows its peers: a replaced pod has a new address."""
        running = [a for a in self.attempts.values() if a.peer is not None and a.alive]
        if not running:
            return
        published = self._published_peers()
        for attempt in running:
            assert attempt.peer is not None
            text = network.hosts_file(attempt.peer, published)
            if text != attempt.hosts_text:
                network.rewrite_in_place(attempt.hosts_path, text)
                attempt.hosts_text = text

    def _resolve_refs(
        self, pod: JsonDict, container: JsonDict
    ) -> tuple[JsonDict, dict[tuple[str, str], str]]:
        """The container with fieldRef and configMapKeyRef entries turned into values, and the values of
        the Secrets its secretKeyRefs name (read through the API, as the kubelet reads them)."""
        meta = pod["metadata"]
        fields = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": pod["spec"].get("nodeName", ""),
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
            "status.hostIP": "127.0.0.1",
            "status.podIP": "127.0.0.1",
        }
        env: list[JsonDict] = []
        secrets: dict[tuple[str, str], str] = {}
        for entry in container.get("env") or []:
            source = entry.get("valueFrom") or {}
            if "fieldRef" in source:
                field_path = source["fieldRef"]["fieldPath"]
                value = fields.get(field_path)
                if value is None:
                    value = _metadata_field(meta, field_path)
                if value is None:
                    raise ContainerConfigError(f"env {entry['name']}: fieldRef {field_path} is not supported")
                env.append({"name": entry["name"], "value": value})
            elif "configMapKeyRef" in source:
                value = self._key_of("configmaps", "ConfigMap", source["configMapKeyRef"])
                if value is not None:
                    env.append({"name": entry["name"], "value": value})
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                value = self._key_of("secrets", "Secret", ref)
                if value is not None:
                    secrets[(ref["name"], ref["key"])] = value
                    env.append(entry)
            else:
                env.append(entry)
        return {**container, "env": env}, secrets

    def _key_of(self, plural: str, kind: str, ref: JsonDict) -> str | None:
        """One key of a Secret or ConfigMap; None for a missing optional one. The kubelet's messages."""
        obj = self.api.get(path(CORE, plural, self.namespace, ref["name"]))
        optional = bool(ref.get("optional"))
        if obj is None:
            if optional:
                return None
            raise ContainerConfigError(f'{kind.lower()} "{ref["name"]}" not found')
        key = ref["key"]
        if kind == "Secret" and key in (obj.get("data") or {}):
            return base64.b64decode(obj["data"][key]).decode()
        if kind == "ConfigMap" and key in (obj.get("data") or {}):
            return str(obj["data"][key])
        if optional:
            return None
        raise ContainerConfigError(f"couldn't find key {key} in {kind} {self.namespace}/{ref['name']}")


def _metadata_field(meta: JsonDict, field_path: str) -> str | None:
    """`metadata.annotations['k']` and `metadata.labels['k']` (the Job controller gives an Indexed Job's pods
    JOB_COMPLETION_INDEX that way); a missing key is an empty value, as for the kubelet."""
    match = re.fullmatch(r"metadata\.(annotations|labels)\['([^']+)'\]", field_path)
    if match is None:
        return None
    return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))


def _container(pod: JsonDict) -> JsonDict:
    containers: list[JsonDict] = pod["spec"]["containers"]
    assert len(containers) == 1, "the pod runner runs single-container pods only"
    return containers[0]


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
