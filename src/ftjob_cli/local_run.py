"""`ftjob local`: run a FineTuneJob without a cluster, through the same path as in the cluster.

The Job is rendered by the operator's own `render_job`; its trainer container's command then runs as a
local process with the container's environment. Three things differ from a pod, each explicitly:

- paths inside the container's volumes (`/workspace`, `/tmp`, `/dev/shm`) and the termination message
  path map to folders under a local run directory;
- `secretKeyRef` values come from `--secret NAME/KEY=VALUE` flags, else from the local environment
  variable the pod would have had (e.g. `AWS_ACCESS_KEY_ID`); a missing one is an error naming it;
- your own identity plays the pod's: the standard `AWS_*` and `HF_*` variables of your shell pass
  through when the Job does not set them (as IRSA or workload identity would provide them in a pod).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ftjob.api import FineTuneJob
from ftjob.contract import TerminationSummary

JsonDict = dict[str, Any]

PASSTHROUGH_PREFIXES = ("AWS_", "HF_")
PASSTHROUGH_NAMES = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


class LocalRunError(Exception):
    """The Job cannot be run locally as rendered (a missing secret, an unsupported env source)."""


@dataclass(frozen=True)
class LocalPlan:
    job: JsonDict
    command: list[str]
    env: dict[str, str]
    run_dir: Path
    termination_log: Path

    @property
    def trainer_log(self) -> Path:
        """The trainer's whole output, records included, as a pod log would hold it."""
        return self.run_dir / "trainer.log"


def as_object(job: FineTuneJob, namespace: str | None = None) -> JsonDict:
    """The FineTuneJob as the API server would hand it to the operator (uid and namespace filled in; the uid
    is derived from the namespace and name)."""
    doc = job.model_dump(mode="json", by_alias=True, exclude_none=True)
    meta = doc.setdefault("metadata", {})
    meta["namespace"] = namespace or meta.get("namespace") or "default"
    # Stable for one name and namespace, as a FineTuneJob's uid is for its lifetime: running the same file
    # again is a retry of the same job (it resumes its checkpoints), not a new job refused by its own output.
    identity = f"ftjob-local:{meta['namespace']}/{meta.get('name', '')}"
    meta.setdefault("uid", f"local-{uuid.uuid5(uuid.NAMESPACE_URL, identity)}")
    return doc


def trainer_container(job: JsonDict) -> JsonDict:
    containers: list[JsonDict] = job["spec"]["template"]["spec"]["containers"]
    return containers[0]


def _local_path(container_path: str, mounts: dict[str, Path]) -> str | None:
    for mount_path, local in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        if container_path == mount_path or container_path.startswith(mount_path.rstrip("/") + "/"):
            return str(local / container_path[len(mount_path) :].lstrip("/"))
    return None


def resolve_env(
    container: JsonDict,
    *,
    secrets: Mapping[tuple[str, str], str],
    local_env: Mapping[str, str],
    mounts: dict[str, Path],
    termination_log: Path,
) -> dict[str, str]:
    """The environment of the local process (pure). Raises LocalRunError naming every missing secret."""
    env = {k: v for k, v in local_env.items() if k in PASSTHROUGH_NAMES or k.startswith(PASSTHROUGH_PREFIXES)}
    missing: list[str] = []
    for entry in container.get("env", []):
        name = entry["name"]
        if "value" in entry:
            value = str(entry["value"])
            if value == container.get("terminationMessagePath"):
                # Already a local path: mapping it again would move it if the run dir sits under /tmp.
                env[name] = str(termination_log)
            else:
                env[name] = _local_path(value, mounts) or value
            continue
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if ref is None:
            raise LocalRunError(f"env {name}: only plain values and secretKeyRef can be resolved locally")
        key = (ref["name"], ref["key"])
        if key in secrets:
            env[name] = secrets[key]
        elif name in local_env:
            env[name] = local_env[name]
        else:
            missing.append(
                f"env {name} of the trainer reads key {ref['key']!r} of Secret {ref['name']!r}: "
                f"pass --secret {ref['name']}/{ref['key']}=VALUE or export {name}"
            )
    if missing:
        raise LocalRunError("missing secrets:\n  " + "\n  ".join(missing))
    return env


def parse_secret_flags(flags: list[str]) -> dict[tuple[str, str], str]:
    secrets = {}
    for flag in flags:
        ref, sep, value = flag.partition("=")
        name, slash, key = ref.partition("/")
        if not (sep and slash and name and key):
            raise LocalRunError(f"--secret {flag.split('=')[0]}=...: expected NAME/KEY=VALUE")
        secrets[(name, key)] = value
    return secrets


def plan_local_run(
    job: FineTuneJob, run_dir: Path, *, secrets: Mapping[tuple[str, str], str], local_env: Mapping[str, str]
) -> LocalPlan:
    from ftjob_operator.render import render_job
    from ftjob_operator.settings import OperatorSettings

    rendered = render_job(as_object(job), OperatorSettings())
    container = trainer_container(rendered)
    volumes = {v["name"] for v in rendered["spec"]["template"]["spec"].get("volumes", [])}
    mounts = {
        m["mountPath"]: run_dir / m["name"] for m in container.get("volumeMounts", []) if m["name"] in volumes
    }
    termination_log = run_dir / "termination-log"
    env = resolve_env(
        container, secrets=secrets, local_env=local_env, mounts=mounts, termination_log=termination_log
    )
    command = [*container.get("command", []), *container.get("args", [])]
    # The same installation as this CLI, whatever the PATH says.
    local_bin = Path(sys.executable).parent
    env["PATH"] = os.pathsep.join([str(local_bin), env.get("PATH", "")])
    resolved = shutil.which(command[0], path=env["PATH"])
    if resolved is None:
        raise LocalRunError(
            f"{command[0]}: not found; install the trainer extra: pip install 'ftjob[trainer]'"
        )
    return LocalPlan(rendered, [resolved, *command[1:]], env, run_dir, termination_log)


@dataclass(frozen=True)
class LocalResult:
    exit_code: int
    summary: TerminationSummary | None


def execute(plan: LocalPlan, stdout: TextIO | None = None, *, verbose: bool = False) -> LocalResult:
    """Run the trainer; its output goes to `stdout` (default: this process's) as a person would read it:
    human lines and progress bars (see ftjob_cli.live), or every line unchanged with `verbose`."""
    from ftjob_cli.live import TrainerOutput, make_sink

    for folder in {Path(v) for k, v in plan.env.items() if k in ("FTJOB_WORKDIR", "HF_HOME")}:
        folder.mkdir(parents=True, exist_ok=True)
    plan.termination_log.unlink(missing_ok=True)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    out = stdout if stdout is not None else sys.stdout
    view, sink = TrainerOutput(verbose=verbose), make_sink(out, verbose=verbose)
    # Line-buffered text, so a bar moves as soon as the trainer writes a record.
    with subprocess.Popen(
        plan.command,
        env={**plan.env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        try:
            # Every line as the trainer wrote it, records included: what `kubectl logs` shows of a pod.
            with plan.trainer_log.open("w") as raw:
                for line in proc.stdout:
                    raw.write(line)
                    for item in view.feed(line):
                        sink.show(item)
            for item in view.flush():
                sink.show(item)
        finally:
            sink.close()
        code = proc.wait()
    text = plan.termination_log.read_text() if plan.termination_log.exists() else None
    return LocalResult(code, TerminationSummary.parse(text))


def describe(result: LocalResult) -> str:
    """The closing table: what the data checks kept, the losses, base against tuned, and where things are."""
    summary = result.summary
    if summary is None:
        return f"trainer exited with {result.exit_code} without a summary (see its log above)"
    lines = [f"outcome: {summary.outcome} ({summary.reason}), exit code {result.exit_code}"]
    if summary.outcome != "Succeeded":
        lines.append(f"message: {summary.message}")
    if summary.dataset is not None:
        d = summary.dataset
        dropped = ", ".join(f"{k} {v}" for k, v in d.dropped_by_reason.items()) or "none"
        lines.append(
            f"data: {d.total_lines} lines, {d.train_examples} train / {d.validation_examples} validation kept, {d.dropped} dropped ({dropped})"
        )
    if summary.metrics is not None:
        m = summary.metrics
        lines.append(
            f"loss: train {_num(m.train_loss)}, validation {_num(m.eval_loss)} (base model {_num(m.base_eval_loss)})"
        )
        if m.tuned:
            lines.append(f"{'metric':<12} {'base':>8} {'tuned':>8} {'change':>8}")
            for name, tuned in m.tuned.items():
                base = m.base.get(name)
                change = "" if base is None else f"{tuned - base:+.3f}"
                lines.append(f"{name:<12} {_num(base, 3):>8} {tuned:>8.3f} {change:>8}")
    if summary.artifacts is not None:
        for label, uri in summary.artifacts.model_dump(by_alias=True, exclude_none=True).items():
            lines.append(f"{label + ':':<14} {uri}")
    return "\n".join(lines)


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
