"""The README's `ftjob` cluster session, captured from a real control plane (a script, not a test).

    .venv/bin/python -m tests.cli.readme_capture [.ftjob/demo [crds/finetunejobs.ftjob.dev.yaml]]

Starts the test control plane (kube-apiserver, kube-controller-manager, etcd), the test kubelet (it
serves pod logs), a moto S3 server holding the outputs `make demo` produced, and the operator. It applies
examples/quickstart.yaml (pointed at that S3 server); the real Job controller creates the pod; the script
plays the kubelet with the demo's real trainer log and termination message (`.ftjob/demo/run/`), and the
real operator derives the status from them. Then it runs the `ftjob` commands as a user would and prints
the session.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support import kube_actors as actors
from tests.support.control_plane import start_control_plane
from tests.support.kube_client import BATCH, CORE, FTJ, path, wait_for
from tests.support.kube_fixtures import CRD_PATH, _established
from tests.support.kubelet import TestKubelet
from tests.support.operator_process import OperatorProcess
from tests.support.s3_server import DUMMY_CREDENTIALS, REGION, S3Endpoint, start_s3_server

NAMESPACE = "ml-team"
NAME = "quickstart"


def run(kubeconfig: Path, *args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        **DUMMY_CREDENTIALS,
        "AWS_DEFAULT_REGION": REGION,
        "COLUMNS": "110",
    }
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ftjob"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
    )
    shown = " ".join(a for a in args)
    out = f"$ ftjob {shown}\n{done.stdout}{done.stderr}"
    if args[0] == "watch":
        out += f"$ echo $?\n{done.returncode}\n"
    return out


def main() -> int:
    demo = Path(sys.argv[1] if len(sys.argv) > 1 else ".ftjob/demo").resolve()
    crd_file = Path(sys.argv[2] if len(sys.argv) > 2 else "crds/finetunejobs.ftjob.dev.yaml")
    log_text = (demo / "run" / "trainer.log").read_text()
    termination = (demo / "run" / "termination-log").read_text()
    work = Path(tempfile.mkdtemp(prefix="ftjob-capture-"))
    plane = start_control_plane()
    url, stop_s3 = start_s3_server()
    operator = None
    try:
        api = plane.client()
        # The CRD as `kubectl apply -f crds/` installs it (the README's first command on a cluster).
        crd = yaml.safe_load(crd_file.read_text())
        api.apply(f"{CRD_PATH}/{crd['metadata']['name']}", crd, field_manager="kubectl")
        wait_for(lambda: _established(api), timeout=30, what="CRD Established")
        kubeconfig = plane.write_kubeconfig(work / "kubeconfig")
        config = yaml.safe_load(kubeconfig.read_text())
        config["contexts"][0]["context"]["namespace"] = NAMESPACE
        kubeconfig.write_text(yaml.safe_dump(config))
        cert, key = plane.pki.leaf("kubelet", f"system:node:{actors.NODE}", server=True)
        kubelet = TestKubelet(api, cert, key, actors.NODE).__enter__()

        # The demo's outputs, where the quickstart's output URI points.
        s3 = S3Endpoint(url).client()
        s3.create_bucket(Bucket="ftjob-quickstart")
        results = demo / "results"
        for file in sorted(p for p in results.rglob("*") if p.is_file()):
            s3.upload_file(
                str(file), "ftjob-quickstart", f"runs/quickstart/{file.relative_to(results).as_posix()}"
            )

        # The S3 server is on loopback, reachable from the pods this script plays.
        operator = OperatorProcess(
            kubeconfig, work / "operator.log", args=["--progress-interval", "2", "--allow-loopback-endpoints"]
        )
        operator.start()
        api.create(
            f"{CORE}/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
        wait_for(lambda: api.get(f"{CORE}/namespaces/{NAMESPACE}/serviceaccounts/default"), timeout=30)
        manifest = yaml.safe_load(Path("examples/quickstart.yaml").read_text())
        manifest["spec"]["storage"] = {"endpointUrl": url, "region": REGION, "pathStyle": True}
        api.create(path(FTJ, "finetunejobs", NAMESPACE), manifest)

        def trainer_pod() -> dict[str, Any] | None:
            pods = api.pods(NAMESPACE, f"ftjob.dev/finetunejob={NAME}")
            return pods[0] if pods else None

        pod = wait_for(trainer_pod, timeout=60, what="pod")
        actors.bind_pod(api, pod)
        actors.pod_running(api, pod)
        # Halfway through training, as the pod's log had it then.
        lines = log_text.splitlines(keepends=True)
        halfway = next(i for i, line in enumerate(lines) if '"step":20,' in line and "FTJOB_PROGRESS" in line)
        kubelet.set_log(NAMESPACE, pod["metadata"]["name"], "".join(lines[: halfway + 2]))
        wait_for(
            lambda: (
                ((api.finetunejob(NAMESPACE, NAME) or {}).get("status") or {}).get("progress", {}).get("step")
            ),
            timeout=60,
            what="progress",
        )
        session = [
            run(kubeconfig, "get", cwd=work),
            run(kubeconfig, "watch", NAME, "--timeout", "3", cwd=work),
        ]
        session.append(run(kubeconfig, "logs", NAME, cwd=work))

        kubelet.set_log(NAMESPACE, pod["metadata"]["name"], log_text)
        actors.pod_terminated(api, pod, 0, termination)
        wait_for(
            lambda: (
                ((api.finetunejob(NAMESPACE, NAME) or {}).get("status") or {}).get("phase") == "Succeeded"
            ),
            timeout=90,
            what="Succeeded",
        )
        wait_for(lambda: api.get(path(BATCH, "jobs", NAMESPACE, f"{NAME}-train")), timeout=5)
        session += [
            run(kubeconfig, "get", "-A", cwd=work),
            run(kubeconfig, "watch", NAME, cwd=work),
            run(kubeconfig, "describe", NAME, cwd=work),
            run(kubeconfig, "results", NAME, "--to", "results", cwd=work),
        ]
        print("\n".join(session))
        kubelet.__exit__()
        return 0
    finally:
        if operator is not None:
            operator.stop()
        stop_s3()
        plane.stop()
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
