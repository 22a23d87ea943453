"""A two-node FineTuneJob end to end on the real control plane: the operator renders an Indexed Job and its
headless Service; the real Job controller makes one pod per index and replaces a failed one; the pod runner
runs each pod as a real `ftjob-train launch` (torchrun, one trainer process per pod, gloo on the CPU), in
namespaces of its own with its own hostname, address and /etc/hosts (tests/support/kubelet_network.py), so
the pods meet through the c10d rendezvous at `<job>-0.<service>:29400` by name, as on a cluster.

Every pod shares this machine's network, and with it the rendezvous port 29400: these tests run one after
the other, in the end-to-end tests' xdist group.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_end_to_end import Cluster, e2e, log_allowances, runner_env, tiny_inputs, tiny_spec
from tests.support.kube_client import JsonDict, KubeClient, condition
from tests.support.kubelet import TestKubelet
from tests.support.kubelet_network import require_pod_network
from tests.support.pod_runner import Attempt, PodRunner
from tests.support.trainer_runs import HOOKS

pytestmark = pytest.mark.e2e
__all__ = ["e2e", "log_allowances", "runner_env", "tiny_inputs"]  # the end-to-end tests' fixtures, used here

SLOW = pytest.mark.skipif(
    not os.environ.get("FTJOB_SLOW_TESTS"),
    reason="a third trainer run (about a minute on a CPU), beyond CI's time budget: set FTJOB_SLOW_TESTS=1",
)
"""The plain run: everything it checks, the run with a killed worker checks too, after its retry."""

IMAGE_ENV = {
    # The trainer image's own settings: one thread per trainer process, since both pods share the cores.
    "OMP_NUM_THREADS": "1",
    # torchrun's agents log each rendezvous: the round, the node's group rank and the workers' MASTER_ADDR.
    "LOGLEVEL": "INFO",
    # Every micro-batch a little slower (test hook): the kill lands between the first checkpoint and the
    # end of training, however fast this machine is.
    "PYTHONPATH": str(HOOKS),
    "FTJOB_TEST_MICROBATCH_SECONDS": "0.3",
}


@pytest.fixture
def pod_runner(
    api: KubeClient, kubelet: TestKubelet, namespace: str, tmp_path: Path, runner_env: dict[str, str]
) -> Iterator[PodRunner]:
    require_pod_network()
    with PodRunner(
        api, kubelet, namespace, tmp_path / "pods", local_env=runner_env, image_env=IMAGE_ENV
    ) as runner:
        yield runner
    assert not runner.errors, runner.errors


def two_node_spec(bucket: str, endpoint: str, max_steps: int, checkpoint_every: int) -> JsonDict:
    """The smallest run that trains on both nodes: the tiny model, a few steps, one generated answer."""
    spec: JsonDict = tiny_spec(
        bucket,
        endpoint,
        resources={"gpus": 0, "cpu": "1", "memory": "4Gi", "nodes": 2},
        training={"maxSteps": max_steps, "perDeviceBatchSize": 2, "loggingSteps": 1, "maxSeqLength": 96},
        checkpointing={"everySteps": checkpoint_every},
        evaluation={"maxSamples": 1, "maxNewTokens": 4, "compareWithBase": False},
    )
    return spec


def succeeded(e2e: Cluster, name: str, timeout: float) -> JsonDict:
    """The FineTuneJob's status once Succeeded; otherwise a failure that shows what the pods did."""
    job = f"{name}-train"
    try:
        return e2e.wait_phase(name, "Succeeded", timeout=timeout)
    except AssertionError as exc:
        status = (e2e.api.job(e2e.namespace, job) or {}).get("status")
        logs = "".join(
            f"\n--- {a.pod} (index {a.index}, exit {a.exit_code}):\n{a.output()[-3000:]}"
            for a in e2e.runner.attempts_of(job)
        )
        raise AssertionError(
            f"{exc}\nJob status: {status}\nrunner errors: {e2e.runner.errors}{logs}"
        ) from None


def rendezvous(attempt: Attempt) -> list[dict[str, str]]:
    """What the pod's torchrun agent logged of each rendezvous it completed (restart_count, master_addr,
    group_rank, ...), in order."""
    rounds: list[dict[str, str]] = []
    for line in attempt.output().splitlines():
        if "Rendezvous complete for workers" in line:
            rounds.append({})
        elif rounds and (found := re.search(r"\]\s+(\w+)=(\S+)$", line)):
            rounds[-1].setdefault(found.group(1), found.group(2))
    return rounds


def rank_0_starts(attempt: Attempt) -> list[str]:
    """Rank 0's line at each start of its process (the other ranks log warnings only)."""
    return re.findall(r"process \d+ of \d+ \(node \d+, local rank \d+\)", attempt.output())


WORKER_FINISHED = "exit 0 (WorkerFinished): process 1 of 2 (node 1) finished"


def checkpoints_saved(text: str) -> list[int]:
    return [int(step) for step in re.findall(r"checkpoint at step (\d+) saved", text)]


def manifest(e2e: Cluster, bucket: str) -> JsonDict:
    body = e2e.s3.client().get_object(Bucket=bucket, Key="runs/job/manifest.json")["Body"].read()
    doc: JsonDict = json.loads(body)
    return doc


def assert_published_once(e2e: Cluster, bucket: str, status: JsonDict, max_steps: int) -> JsonDict:
    """One adapter and one evaluation report, from rank 0, whose summary the status shows."""
    assert condition(status, "Succeeded") == ("True", "TrainingSucceeded")
    assert status["progress"]["percent"] == 100 and status["progress"]["step"] == max_steps
    assert status["metrics"]["evalLoss"] is not None  # index 0's termination message, not a worker's
    keys = e2e.keys(bucket, "runs/job/")
    published = [k for k in keys if not k.startswith("runs/job/checkpoints/")]
    assert [k for k in published if k.endswith("adapter_model.safetensors")] == [
        "runs/job/adapter/adapter_model.safetensors"
    ]
    assert "runs/job/eval/report.md" in published and not [k for k in published if "/rejected/" in k]
    doc = manifest(e2e, bucket)
    assert doc["resolved"]["distributed"]["worldSize"] == 2 and doc["resolved"]["distributed"]["nodes"] == 2
    assert doc["resolved"]["stepsDone"] == max_steps
    return doc


def assert_met_by_name(agent_round: dict[str, str], e2e: Cluster, job: str, group_rank: int) -> None:
    """Index i is torchrun's node i, and the workers' MASTER_ADDR is index 0's name under the Service."""
    assert agent_round["group_rank"] == str(group_rank) and agent_round["group_world_size"] == "2", (
        agent_round
    )
    assert agent_round["master_addr"] == f"{job}-0.{job}.{e2e.namespace}.svc.cluster.local", agent_round


@SLOW
def test_two_worker_pods_meet_by_name_train_and_succeed(e2e: Cluster, tiny_inputs: str) -> None:
    e2e.create("duo", two_node_spec(tiny_inputs, e2e.s3.url, max_steps=2, checkpoint_every=2))
    status = succeeded(e2e, "duo", timeout=300)

    assert_published_once(e2e, tiny_inputs, status, max_steps=2)
    assert e2e.job_condition("duo-train", "SuccessCriteriaMet") is not None  # index 0 succeeded
    pods = {
        p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p
        for p in e2e.pods("duo-train")
    }
    assert {i: p["spec"]["hostname"] for i, p in pods.items()} == {"0": "duo-train-0", "1": "duo-train-1"}
    for index in (0, 1):
        (attempt,) = e2e.runner.attempts_of("duo-train", index=index)
        (agent_round,) = rendezvous(attempt)
        assert_met_by_name(agent_round, e2e, "duo-train", group_rank=index)
    # Rank 0 on index 0 saved the checkpoint and published; rank 1 on index 1 trained beside it.
    first, second = e2e.runner.pod_log("duo-train", index=0), e2e.runner.pod_log("duo-train", index=1)
    assert rank_0_starts(e2e.runner.attempts_of("duo-train", index=0)[0]) == [
        "process 0 of 2 (node 0, local rank 0)"
    ]
    assert checkpoints_saved(first) == [2] and not checkpoints_saved(second)
    assert WORKER_FINISHED in second


def test_a_killed_worker_pod_is_replaced_and_the_retry_resumes_from_the_checkpoint(
    e2e: Cluster, tiny_inputs: str
) -> None:
    # backoffLimit 1: torchrun's --max-restarts=1, and the Job controller replaces one failed pod.
    e2e.create("pair", two_node_spec(tiny_inputs, e2e.s3.url, max_steps=4, checkpoint_every=1))
    e2e.runner.wait_for_log("pair-train", "checkpoint at step 1 saved", timeout=300, index=0)
    # A lost node: every process of index 1's pod dies at once, the pod ends Failed (137).
    killed = e2e.runner.kill_pod("pair-train", index=1)
    status = succeeded(e2e, "pair", timeout=400)

    doc = assert_published_once(e2e, tiny_inputs, status, max_steps=4)
    # The Job controller counted one failure and replaced index 1's pod; index 0's pod lived on.
    assert e2e.job("pair-train")["status"]["failed"] == 1
    first, second = e2e.runner.attempts_of("pair-train", index=1)
    assert first is killed and first.exit_code == 137 and second.exit_code == 0
    (node0,) = e2e.runner.attempts_of("pair-train", index=0)
    assert node0.exit_code == 0
    # Node 0's torchrun restarted its worker in place when the peer was gone, then waited for the new pod:
    # a second rendezvous round, where the new pod is node 1 again and finds node 0 by name.
    rounds = rendezvous(node0)
    assert [r["restart_count"] for r in rounds] == ["0", "1"], rounds
    for agent_round in rounds:
        assert_met_by_name(agent_round, e2e, "pair-train", group_rank=0)
    (replacement_round,) = rendezvous(second)
    assert_met_by_name(replacement_round, e2e, "pair-train", group_rank=1)
    assert rank_0_starts(node0) == ["process 0 of 2 (node 0, local rank 0)"] * 2
    assert WORKER_FINISHED in second.output() and WORKER_FINISHED not in first.output()
    # The retry resumed at the newest checkpoint saved before the kill, not at step 0.
    before, _, after = node0.output().partition("Worker group FAILED")
    assert after, "node 0's torchrun never saw its worker fail"
    saved = checkpoints_saved(before)
    assert saved and saved[-1] < 4, saved
    assert f"resuming from checkpoint at step {saved[-1]}" in after
    assert doc["resumedFromStep"] == saved[-1]
