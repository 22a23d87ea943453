"""The pod runner against the real control plane: the real Job controller creates the pods and decides the
Jobs' outcome; the runner binds the pods, runs their command as local processes, and writes what the kubelet
writes. Small Python commands stand in for the trainer, so each test takes seconds."""

from __future__ import annotations

import base64
import sys
import textwrap

from tests.support.kube_client import BATCH, CORE, JsonDict, KubeClient, path, wait_for
from tests.support.pod_runner import PodRunner

PREAMBLE = """
import os, signal, sys, time
def message(text):
    with open(os.environ["MESSAGE_FILE"], "w") as f:
        f.write(text)
"""


def job_body(
    name: str,
    script: str,
    *,
    env: list[JsonDict] | None = None,
    backoff_limit: int = 0,
    grace_seconds: int = 30,
) -> JsonDict:
    """A Job shaped like the operator's: one `trainer` container, podFailurePolicy, emptyDir volumes."""
    container = {
        "name": "trainer",
        "image": "ghcr.io/ftjob/trainer:test",
        "command": [sys.executable, "-u", "-c"],
        "args": [PREAMBLE + textwrap.dedent(script)],
        "env": [
            {"name": "MESSAGE_FILE", "value": "/dev/termination-log"},
            {"name": "WORK", "value": "/workspace/out"},
            *(env or []),
        ],
        "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "podReplacementPolicy": "Failed",
            "podFailurePolicy": {
                "rules": [
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                    {
                        "action": "FailJob",
                        "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [3]},
                    },
                ]
            },
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": grace_seconds,
                    "automountServiceAccountToken": False,
                    "containers": [container],
                    "volumes": [{"name": "workspace", "emptyDir": {}}],
                }
            },
        },
    }


def create_job(api: KubeClient, namespace: str, body: JsonDict) -> JsonDict:
    return api.create(path(BATCH, "jobs", namespace), body)


def job_condition(api: KubeClient, namespace: str, name: str, type_: str) -> JsonDict | None:
    job = api.job(namespace, name) or {}
    for c in (job.get("status") or {}).get("conditions") or []:
        if c["type"] == type_ and c["status"] == "True":
            return dict(c)
    return None


def wait_job(api: KubeClient, runner: PodRunner, namespace: str, name: str, type_: str) -> JsonDict:
    def probe() -> JsonDict | None:
        runner.check()
        return job_condition(api, namespace, name, type_)

    return wait_for(probe, timeout=60, interval=0.2, what=f"Job {name} {type_}")


def only_pod(api: KubeClient, namespace: str, job: str) -> JsonDict:
    pods = api.pods(namespace, f"batch.kubernetes.io/job-name={job}")
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def terminated(pod: JsonDict) -> JsonDict:
    state: JsonDict = pod["status"]["containerStatuses"][0]["state"]
    assert set(state) == {"terminated"}, state
    result: JsonDict = state["terminated"]
    return result


def secret(api: KubeClient, namespace: str, name: str, data: dict[str, str]) -> None:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    api.create(
        path(CORE, "secrets", namespace),
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded},
    )


def test_a_pod_runs_with_its_env_volumes_and_message_and_its_log_reads_through_the_api(
    api: KubeClient, namespace: str, pod_runner: PodRunner
) -> None:
    secret(api, namespace, "creds", {"token": "s3cr3t"})
    api.create(
        path(CORE, "configmaps", namespace),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"mode": "fast"}},
    )
    env = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    script = """
        print(f"token={os.environ['TOKEN']} mode={os.environ['MODE']} pod={os.environ['POD']} ns={os.environ['NS']}")
        os.makedirs(os.path.dirname(os.environ["WORK"]), exist_ok=True)
        open(os.environ["WORK"], "w").write("result")
        message("all done")
    """
    create_job(api, namespace, job_body("ok", script, env=env))
    wait_job(api, pod_runner, namespace, "ok", "Complete")

    pod = only_pod(api, namespace, "ok")
    name = pod["metadata"]["name"]
    assert pod["status"]["phase"] == "Succeeded" and pod["spec"]["nodeName"] == pod_runner.kubelet.node
    end = terminated(pod)
    assert (end["exitCode"], end["reason"], end["message"]) == (0, "Completed", "all done")
    log = api.text(path(CORE, "pods", namespace, name, "log"), query={"container": "trainer"})
    assert log == f"token=s3cr3t mode=fast pod={name} ns={namespace}\n"
    (attempt,) = pod_runner.attempts_of("ok")
    assert (attempt.run_dir / "workspace" / "out").read_text() == "result"
    job = api.job(namespace, "ok") or {}
    assert job["status"]["succeeded"] == 1


def test_a_missing_secret_keeps_the_pod_waiting_until_it_exists(
    api: KubeClient, namespace: str, pod_runner: PodRunner
) -> None:
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}]
    create_job(api, namespace, job_body("late", "print(os.environ['TOKEN'])", env=env))

    def waiting() -> JsonDict | None:
        pods = api.pods(namespace)
        statuses = (pods[0].get("status") or {}).get("containerStatuses") if pods else None
        return (statuses[0]["state"].get("waiting") or None) if statuses else None

    state = wait_for(waiting, timeout=30, what="CreateContainerConfigError")
    assert state == {"reason": "CreateContainerConfigError", "message": 'secret "late" not found'}
    secret(api, namespace, "late", {"token": "finally"})
    wait_job(api, pod_runner, namespace, "late", "Complete")
    assert pod_runner.pod_log("late") == "finally\n"


def test_a_user_error_exit_code_fails_the_job_by_its_pod_failure_policy(
    api: KubeClient, namespace: str, pod_runner: PodRunner
) -> None:
    script = """
        print("reading config")
        print("bad config: no such field")
        sys.exit(3)
    """
    create_job(api, namespace, job_body("bad", script, backoff_limit=3))
    failed = wait_job(api, pod_runner, namespace, "bad", "Failed")
    assert failed["reason"] == "PodFailurePolicy"
    end = terminated(only_pod(api, namespace, "bad"))
    # No termination message written: FallbackToLogsOnError puts the log's tail there.
    assert (end["exitCode"], end["reason"]) == (3, "Error")
    assert end["message"] == "reading config\nbad config: no such field\n"


def test_suspending_a_job_stops_its_pod_gracefully(
    api: KubeClient, namespace: str, pod_runner: PodRunner
) -> None:
    script = """
        def stop(*_):
            print("SIGTERM: saving a checkpoint")
            message("stopped")
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        print("working")
        time.sleep(120)
    """
    create_job(api, namespace, job_body("pause", script))
    attempt = pod_runner.wait_for_log("pause", "working", timeout=30)
    api.patch(path(BATCH, "jobs", namespace, "pause"), {"spec": {"suspend": True}})

    # The Job controller deletes the active pod; the kubelet stops it and finishes the deletion.
    wait_for(lambda: not api.pods(namespace), timeout=30, what="the pod deleted")
    assert attempt.exit_code == 0 and "SIGTERM: saving a checkpoint" in attempt.output()
    wait_job(api, pod_runner, namespace, "pause", "Suspended")
    assert not job_condition(api, namespace, "pause", "Failed")


def test_a_pod_ignoring_sigterm_is_killed_after_its_grace_period(
    api: KubeClient, namespace: str, pod_runner: PodRunner
) -> None:
    script = """
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("working")
        time.sleep(120)
    """
    create_job(api, namespace, job_body("stubborn", script, grace_seconds=1))
    attempt = pod_runner.wait_for_log("stubborn", "working", timeout=30)
    api.delete(path(BATCH, "jobs", namespace, "stubborn"), propagation="Background")
    wait_for(lambda: not api.pods(namespace), timeout=30, what="the pod deleted")
    assert attempt.exit_code == 137


def test_an_oom_kill_is_reported_and_counted_by_the_job_controller(
    api: KubeClient, namespace: str, pod_runner: PodRunner
) -> None:
    create_job(api, namespace, job_body("oom", "print('allocating'); time.sleep(120)"))
    pod_runner.wait_for_log("oom", "allocating", timeout=30)
    pod_runner.kill_pod("oom", reason="OOMKilled")
    failed = wait_job(api, pod_runner, namespace, "oom", "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    end = terminated(only_pod(api, namespace, "oom"))
    assert (end["exitCode"], end["reason"]) == (137, "OOMKilled")
    # FallbackToLogsOnError: killed before writing a summary, the log's tail is the message.
    assert end["message"] == "allocating\n"
