"""A test-only node agent: the Job controller and the kubelet, for real processes.

For every Job the operator creates, the agent creates the Pod from the Job's template, runs the Pod's
container command as a local process with the Pod's environment (secretKeyRefs resolved from a dict the
test provides, volumes mapped to local folders: the same mapping as `ftjob local`), serves the process's
output as the Pod's log, and writes what the kubelet and the Job controller would: the Pod's phase, exit
code and termination message, then the Job's conditions, with `podFailurePolicy` and `backoffLimit`
applied as the Job controller applies them.

It implements the parts of Job semantics the operator relies on, not all of them (no parallelism, no
indexed completions, no podReplacementPolicy timing).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ftjob.local_run import resolve_env
from tests.support import kube_actors as actors
from tests.support.kube_client import JsonDict, KubeClient
from tests.support.kube_emulator import EmulatorServer


@dataclass
class RunningPod:
    pod: JsonDict
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    termination_log: Path
    killed: bool = False


@dataclass
class JobRecord:
    """What the Job controller tracks per Job: its pods and their outcomes."""

    failed: int = 0
    running: RunningPod | None = None
    started: list[str] = field(default_factory=list)


def _condition(job: JsonDict, type_: str) -> bool:
    return any(
        c.get("type") == type_ and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def _fail_job_codes(job: JsonDict) -> set[int]:
    codes: set[int] = set()
    for rule in (job["spec"].get("podFailurePolicy") or {}).get("rules") or []:
        on_codes = rule.get("onExitCodes") or {}
        if rule.get("action") == "FailJob" and on_codes.get("operator") == "In":
            codes.update(int(v) for v in on_codes.get("values") or [])
    return codes


class NodeAgent:
    def __init__(
        self,
        api: KubeClient,
        cluster: EmulatorServer,
        namespace: str,
        run_root: Path,
        *,
        secrets: dict[tuple[str, str], str],
        local_env: dict[str, str],
        interval: float = 0.2,
    ) -> None:
        self.api = api
        self.cluster = cluster
        self.namespace = namespace
        self.run_root = run_root
        self.secrets = secrets
        self.local_env = local_env
        self.interval = interval
        self.jobs: dict[str, JobRecord] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="node-agent", daemon=True)

    # -- lifecycle --------------------------------------------------------------------------------------
    def __enter__(self) -> NodeAgent:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for record in self.jobs.values():
            if record.running is not None and record.running.process.poll() is None:
                record.running.process.kill()
                record.running.process.wait()
                record.running.log_file.close()

    # -- what tests do to pods ----------------------------------------------------------------------------
    def kill_pod(self, job_name: str) -> None:
        """SIGKILL the job's running trainer, like a node that disappears or an OOM kill."""
        with self._lock:
            running = self.jobs[job_name].running
            assert running is not None, f"{job_name} has no running pod"
            running.killed = True
            running.process.send_signal(signal.SIGKILL)

    def pod_log(self, job_name: str, attempt: int = -1) -> str:
        """The output of one attempt of the job's trainer (default: the latest)."""
        pod = self.jobs[job_name].started[attempt]
        return (self.run_root / pod / "stdout.log").read_text(errors="replace")

    def wait_for_log(self, job_name: str, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if job_name in self.jobs and self.jobs[job_name].started and text in self.pod_log(job_name):
                return
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared in the log of {job_name}")

    # -- the loop -------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    for job in self.api.jobs(self.namespace):
                        self._step(job)
            except Exception as exc:  # a broken agent must fail the test, not hang it
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.interval)

    def _step(self, job: JsonDict) -> None:
        name = job["metadata"]["name"]
        record = self.jobs.setdefault(name, JobRecord())
        running = record.running
        if running is not None:
            self._publish_log(running)
            if running.process.poll() is not None:
                self._finish(job, record, running)
            elif job["spec"].get("suspend"):
                # The Job controller deletes active pods of a suspended Job: the kubelet sends SIGTERM.
                running.process.send_signal(signal.SIGTERM)
            return
        if _condition(job, "Complete") or _condition(job, "Failed") or job["spec"].get("suspend"):
            return
        if job["metadata"].get("deletionTimestamp"):
            return
        self._start_pod(job, record)

    def _start_pod(self, job: JsonDict, record: JobRecord) -> None:
        pod = actors.create_pod(self.api, job)
        pod_name = pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]
        run_dir = self.run_root / pod_name
        volumes = {v["name"] for v in pod["spec"].get("volumes", [])}
        mounts = {
            m["mountPath"]: run_dir / m["name"]
            for m in container.get("volumeMounts", [])
            if m["name"] in volumes
        }
        termination_log = run_dir / "termination-log"
        env = resolve_env(
            container,
            secrets=self.secrets,
            local_env=self.local_env,
            mounts=mounts,
            termination_log=termination_log,
        )
        for folder in mounts.values():
            folder.mkdir(parents=True, exist_ok=True)
        command = [*container.get("command", []), *container.get("args", [])]
        log_path = run_dir / "stdout.log"
        log_file = log_path.open("wb")
        process = subprocess.Popen(
            _resolve(command, env), env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=run_dir
        )
        record.running = RunningPod(pod, process, log_path, log_file, termination_log)
        record.started.append(pod_name)
        actors.pod_running(self.api, pod)

    def _publish_log(self, running: RunningPod) -> None:
        meta = running.pod["metadata"]
        self.cluster.emulator.set_pod_log(
            meta["namespace"], meta["name"], running.log_path.read_text(errors="replace")
        )

    def _finish(self, job: JsonDict, record: JobRecord, running: RunningPod) -> None:
        running.log_file.close()
        self._publish_log(running)
        code = running.process.returncode
        exit_code = 128 - code if code < 0 else code  # killed by a signal: 128 + signal number
        message = running.termination_log.read_text() if running.termination_log.exists() else ""
        reason = "Error" if exit_code else "Completed"
        actors.pod_terminated(self.api, running.pod, exit_code, message, reason)
        record.running = None
        if job["spec"].get("suspend"):
            return  # stopped by suspend: the pod does not count as failed
        if exit_code == 0:
            actors.job_condition(self.api, job, "Complete", "", "", succeeded=1, failed=record.failed)
        elif exit_code in _fail_job_codes(job):
            record.failed += 1
            actors.job_condition(
                self.api,
                job,
                "Failed",
                "PodFailurePolicy",
                f"Container trainer for pod {job['metadata']['namespace']}/{running.pod['metadata']['name']} "
                f"failed with exit code {exit_code} matching FailJob rule at index 1",
                failed=record.failed,
            )
        else:
            record.failed += 1
            if record.failed > int(job["spec"].get("backoffLimit", 6)):
                actors.job_condition(
                    self.api,
                    job,
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                    failed=record.failed,
                )
            else:
                actors.set_job_status(self.api, job, active=0, failed=record.failed)


def _resolve(command: list[str], env: dict[str, str]) -> list[str]:
    import shutil
    import sys

    found = shutil.which(
        command[0], path=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    )
    if found is None:
        raise RuntimeError(f"{command[0]} is not installed")
    return [found, *command[1:]]
