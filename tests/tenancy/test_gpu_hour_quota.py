"""GPU-hours per namespace on the real API server: the ledger in the FineTuneJobPolicy's status, a job held
Queued (QuotaExceeded) while the month's budget is used, and released when the budget is raised.

The reconciler runs in-process as in tests/operator/test_reconcile.py; the FineTuneJobPolicy CRD is the
chart's (installed by the `tenancy` fixture). The namespace is not guarded: the quota needs no admission
policy, only a FineTuneJobPolicy.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from ftjob_operator.kube import Kube, load_api_client
from ftjob_operator.metrics import Metrics
from ftjob_operator.quota import period_of, period_start
from ftjob_operator.reconcile import Reconciler
from ftjob_operator.settings import OperatorSettings
from tests.support import kube_actors as actors
from tests.support.kube_client import BATCH, FTJ, KubeClient, condition, path, wait_for
from tests.support.kubelet import TestKubelet

from .conftest import Tenancy

POLICIES = "finetunejobpolicies"
SPEC = {
    "baseModel": {"uri": "s3://models/smollm2-135m-instruct/"},
    "data": {"trainUri": "s3://datasets/orders/train.jsonl"},
    "output": {"uri": "s3://results/quota/"},
    "resources": {"gpus": 1, "memory": "24Gi"},
}


def reconciler(kubeconfig: Path, metrics: Metrics, clock: datetime) -> Reconciler:
    """A fresh one reads the policy afresh (each caches it for half a minute)."""
    kube = Kube(load_api_client(str(kubeconfig)), sleep=lambda _: None)
    return Reconciler(kube, OperatorSettings(), metrics, clock=lambda: clock)


def next_period_start(period: str) -> datetime:
    return period_start(period_of(period_start(period) + timedelta(days=32)))


def test_a_namespace_over_its_gpu_hours_holds_new_jobs_and_the_ledger_counts_running_ones(
    tenancy: Tenancy, api: KubeClient, namespace: str, kubeconfig: Path, kubelet: TestKubelet
) -> None:
    policy_path = path(FTJ, POLICIES, namespace)
    api.create(
        policy_path,
        {
            "apiVersion": "ftjob.dev/v1alpha1",
            "kind": "FineTuneJobPolicy",
            "metadata": {"name": "default"},
            "spec": {"gpuHoursPerMonth": 2},
        },
    )
    # The reconciler's clock is fixed and the trainer's start is chosen so that its two hours lie in one
    # month whatever the date (a run on the last evening of a month once crossed into the next).
    now = datetime.now(UTC).replace(microsecond=0)
    period = period_of(now)
    month_end = next_period_start(period)
    started = min(now, month_end - timedelta(hours=2, minutes=1))
    later = started + timedelta(hours=2)
    # Earlier jobs of this month used the whole budget (the ledger is keyed by FineTuneJob uid).
    api.patch(
        f"{policy_path}/default/status",
        {"status": {"period": period, "gpuHoursUsed": 2.0, "jobs": {"earlier-run": 2.0}}},
    )
    ftj = api.create(
        path(FTJ, "finetunejobs", namespace),
        {
            "apiVersion": "ftjob.dev/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": "next"},
            "spec": SPEC,
        },
    )
    metrics = Metrics()
    assert reconciler(kubeconfig, metrics, now).reconcile(namespace, "next", trigger="test") == "Queued"
    status = (api.get(path(FTJ, "finetunejobs", namespace, "next")) or {})["status"]
    assert condition(status, "Admitted") == ("False", "QuotaExceeded")
    assert f"used 2.00 of its 2 GPU-hours for {period}" in status["message"]
    assert api.get(path(BATCH, "jobs", namespace, "next-train")) is None  # no Job, no GPU held
    assert ("Warning", "QuotaExceeded") in [
        (e["type"], e["reason"]) for e in api.events(namespace, involved="next")
    ]

    # The platform team raises the budget: the next reconcile creates the Job.
    api.patch(f"{policy_path}/default", {"spec": {"gpuHoursPerMonth": 10}})
    assert reconciler(kubeconfig, metrics, now).reconcile(namespace, "next", trigger="test") == "Pending"
    assert api.get(path(BATCH, "jobs", namespace, "next-train")) is not None

    # Its trainer runs; two hours later (the reconciler's clock) the ledger holds its 2 GPU-hours.
    pod = wait_for(
        lambda: next(iter(api.pods(namespace, "ftjob.dev/finetunejob=next")), None), what="the pod"
    )
    actors.bind_pod(api, pod, kubelet.node)
    actors.pod_running(api, pod, started_at=started.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert reconciler(kubeconfig, metrics, now).reconcile(namespace, "next", trigger="test") == "Running"
    reconciler(kubeconfig, metrics, clock=later).reconcile(namespace, "next", trigger="test")
    ledger = (api.get(f"{policy_path}/default") or {})["status"]
    uid = ftj["metadata"]["uid"]
    assert ledger["period"] == period
    assert ledger["jobs"][uid] == 2.0 and ledger["jobs"]["earlier-run"] == 2.0
    assert ledger["gpuHoursUsed"] == round(ledger["jobs"][uid] + 2.0, 4)
    used = metrics.registry.get_sample_value("ftjob_namespace_gpu_hours_used", {"namespace": namespace})
    budget = metrics.registry.get_sample_value("ftjob_namespace_gpu_hours_budget", {"namespace": namespace})
    assert used == ledger["gpuHoursUsed"] and budget == 10
    # Writing the same hours again changes nothing: no double counting on a restart.
    before = (api.get(f"{policy_path}/default") or {})["metadata"]["resourceVersion"]
    reconciler(kubeconfig, metrics, clock=later).reconcile(namespace, "next", trigger="test")
    assert (api.get(f"{policy_path}/default") or {})["metadata"]["resourceVersion"] == before

    # Still running half an hour into the next month: the new month's ledger holds only that half hour,
    # and the earlier month's entries are gone (a merge patch's nulls remove them on the real server).
    reconciler(kubeconfig, metrics, clock=month_end + timedelta(minutes=30)).reconcile(
        namespace, "next", trigger="test"
    )
    ledger = (api.get(f"{policy_path}/default") or {})["status"]
    assert ledger["period"] == period_of(month_end) != period
    assert ledger["jobs"] == {uid: 0.5} and ledger["gpuHoursUsed"] == 0.5
    actors.delete_pod(api, pod, grace_period_seconds=0)
