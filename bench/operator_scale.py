"""The operator at fleet scale, on the real control plane (`../shared/k8s`): burst, steady state, memory and
backpressure, the project's operator side by side with a minimal kopf operator (bench/minimal_kopf_operator.py).

    python bench/operator_scale.py burst --jobs 500 --repeats 2 --results bench/results/operator-scale
    python bench/operator_scale.py steady --jobs 500 --minutes 4 --results bench/results/operator-scale
    python bench/operator_scale.py memory --jobs 1000 --results bench/results/operator-scale
    python bench/operator_scale.py backpressure --jobs 200 --results bench/results/operator-scale

Every scenario starts a fresh control plane (etcd, kube-apiserver, kube-controller-manager with its real Job
controller), so one operator's leftovers never load the other's run. Times are taken by this process: a
FineTuneJob's creation is the moment its POST answered, its Job's existence the moment a watch on Jobs
delivered it. The API server's own `apiserver_request_total` is read before and after each run; the
operators' own requests are counted by the fault-injecting proxy where a scenario routes them through it
(steady state, backpressure), never in the burst (the proxy would add its own latency).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.control_plane import ControlPlane, start_control_plane  # noqa: E402
from tests.support.kube_client import BATCH, CORE, FTJ, ApiError, JsonDict, KubeClient, path  # noqa: E402
from tests.support.kube_fixtures import install_crd  # noqa: E402
from tests.support.operator_process import free_port, operator_command  # noqa: E402

SPEC: JsonDict = {
    "baseModel": {"uri": "s3://models/mistral-7b/"},
    "data": {"trainUri": "s3://datasets/orders/train.jsonl"},
    "output": {"uri": "s3://results/run/"},
    "resources": {"gpus": 1, "memory": "24Gi"},
}
CREATORS = 10
"""Lists of 50 created side by side: how `kubectl apply -f` of ten files, or a GitOps sync, arrives."""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# -- the cluster ------------------------------------------------------------------------------------------
@contextmanager
def fresh_cluster() -> Iterator[ControlPlane]:
    plane = start_control_plane()
    try:
        install_crd(plane.client())
        yield plane
    finally:
        plane.stop()


def make_namespace(api: KubeClient, name: str) -> None:
    api.create(f"{CORE}/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    deadline = time.monotonic() + 60
    while api.get(f"{CORE}/namespaces/{name}/serviceaccounts/default") is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no default ServiceAccount in {name}")
        time.sleep(0.2)


METRIC = re.compile(r"^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$")


def apiserver_requests(api: KubeClient) -> Counter[tuple[str, str, str]]:
    """(verb, resource, subresource) -> requests the API server has answered since it started."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for line in api.text("/metrics").splitlines():
        match = METRIC.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        counts[(labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))] += int(
            float(match.group(2))
        )
    return counts


def request_delta(
    before: Counter[tuple[str, str, str]], after: Counter[tuple[str, str, str]]
) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in after.items():
        delta = value - before.get(key, 0)
        if delta > 0 and key[1] in (
            "finetunejobs",
            "jobs",
            "pods",
            "events",
            "services",
            "finetunejobpolicies",
        ):
            out[" ".join(k for k in key if k)] = delta
    return dict(sorted(out.items()))


# -- the operator process -------------------------------------------------------------------------------
@dataclass
class OperatorRun:
    """One operator process, its peak RSS (VmHWM) and CPU seconds read from /proc while it runs."""

    command: list[str]
    kubeconfig: Path
    log_path: Path
    liveness_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "FTJOB_"))}
        env.update(KUBECONFIG=str(self.kubeconfig), PYTHONUNBUFFERED="1")
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*self.command, "--liveness-port", str(self.liveness_port)],
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        import urllib3

        http = urllib3.PoolManager()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited: {self.log_path.read_text()[-3000:]}")
            try:
                if (
                    http.request(
                        "GET", f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1.0, retries=False
                    ).status
                    == 200
                ):
                    return
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("operator not live after 60 s")

    def _status(self, key: str) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def peak_rss(self) -> int:
        return self._status("VmHWM")

    def rss(self) -> int:
        return self._status("VmRSS")

    def cpu_seconds(self) -> float:
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            if PROFILE:
                self.process.send_signal(signal.SIGINT)  # py-spy writes its samples on SIGINT
                self.process.wait(30)
                os.killpg(self.process.pid, signal.SIGTERM)  # the operator under it
            else:
                self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


PROFILE = os.environ.get("FTJOB_BENCH_PROFILE")
"""A path: run the project's operator under py-spy and write its samples there (folded stacks)."""


def project_command(namespace: str, *extra: str) -> list[str]:
    spy = str(Path(sys.executable).parent / "py-spy")
    prefix = (
        [spy, "record", "--nonblocking", "--gil", "-r", "50", "-f", "raw", "-o", PROFILE, "--"]
        if PROFILE
        else []
    )
    return [
        *prefix,
        *operator_command(),
        "--namespace",
        namespace,
        "--metrics-port",
        "0",
        "--log-level",
        os.environ.get("FTJOB_BENCH_LOG_LEVEL", "WARNING"),
        *extra,
    ]


def baseline_command(namespace: str) -> list[str]:
    return [sys.executable, str(ROOT / "bench" / "minimal_kopf_operator.py"), "--namespace", namespace]


# -- watching -------------------------------------------------------------------------------------------
class Watcher:
    """A watch on one resource of a namespace; calls `seen(type, object, monotonic time)` per event."""

    def __init__(self, api: KubeClient, url_path: str, seen: Callable[[str, JsonDict, float], None]) -> None:
        self.api, self.url_path, self.seen = api, url_path, seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()

    def _run(self) -> None:
        version = ""
        while not self._stop.is_set():
            query = f"?watch=1&allowWatchBookmarks=false&timeoutSeconds=60&resourceVersion={version}"
            response = self.api._http.request(
                "GET", self.api.base_url + self.url_path + query, preload_content=False, timeout=None
            )
            buffer = b""
            for chunk in response.stream(65536):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    version = (obj.get("metadata") or {}).get("resourceVersion", version)
                    if event.get("type") != "ERROR":
                        self.seen(event["type"], obj, time.monotonic())
                if self._stop.is_set():
                    break
            response.release_conn()


def ftj_body(name: str, spec: JsonDict = SPEC) -> JsonDict:
    return {
        "apiVersion": "ftjob.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": spec,
    }


def create_all(api: KubeClient, namespace: str, names: list[str], created: dict[str, float]) -> None:
    """`CREATORS` lists created side by side, each item by its own POST (as kubectl apply does)."""
    lists = [names[i::CREATORS] for i in range(CREATORS)]

    def create_list(items: list[str]) -> None:
        for name in items:
            for _ in range(20):
                try:
                    api.create(path(FTJ, "finetunejobs", namespace), ftj_body(name))
                    break
                except ApiError as err:
                    if err.status != 429:
                        raise
                    time.sleep(1)
            created[name] = time.monotonic()

    with ThreadPoolExecutor(CREATORS) as pool:
        list(pool.map(create_list, lists))


# -- the node: binds the pods, marks them running, serves trainer logs that advance with time --------------
class TrainerLogs:
    """What each running trainer has printed by now: a progress record every `cadence` seconds, as the
    trainer does (a record at every logging step, and a heartbeat at least every 20 s in between)."""

    def __init__(self, cadence: float, total_steps: int = 100_000, step_seconds: float = 4.0) -> None:
        self.cadence, self.total_steps, self.step_seconds = cadence, total_steps, step_seconds
        self.started: dict[tuple[str, str], float] = {}  # (namespace, pod) -> epoch seconds

    def newest(self, key: tuple[str, str], now: float) -> int:
        """Index of the newest record the trainer has printed (0: the first, at its start)."""
        return int((now - self.started[key]) // self.cadence)

    def record_time(self, key: tuple[str, str], index: int) -> float:
        return self.started[key] + index * self.cadence

    def text(self, namespace: str, pod: str) -> str | None:
        key = (namespace, pod)
        if key not in self.started:
            return None
        from ftjob.contract import ProgressRecord, format_progress_line  # the trainer's own format

        lines = []
        for index in range(self.newest(key, time.time()) + 1):
            at = self.record_time(key, index)
            step = int(index * self.cadence / self.step_seconds)
            record = ProgressRecord(
                stage="training",
                step=step,
                total_steps=self.total_steps,
                epoch=round(step / self.total_steps, 4),
                loss=round(2.0 - index * 0.001, 4),
                eta_seconds=int((self.total_steps - step) * self.step_seconds),
                time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
            )
            lines.append(f"{{'loss': {record.loss}}}")
            lines.append(format_progress_line(record))
        return "\n".join(lines) + "\n"


@contextmanager
def node_agent(plane: ControlPlane, logs: TrainerLogs) -> Iterator[Any]:
    from tests.support.kube_actors import NODE
    from tests.support.kubelet import TestKubelet

    class Kubelet(TestKubelet):
        def _read_log(self, namespace: str, pod: str, container: str) -> str | None:
            return logs.text(namespace, pod)

    cert, key = plane.pki.leaf("kubelet", f"system:node:{NODE}", server=True)
    with Kubelet(plane.client(), cert, key, NODE) as kubelet:
        yield kubelet


def start_pods(
    api: KubeClient,
    namespace: str,
    logs: TrainerLogs,
    expected: int,
    jobs: set[str] | None = None,
    timeout: float = 600,
) -> None:
    """Bind the namespace's pods (of the Jobs named in `jobs`, else all) to the node and mark them running
    (4 threads), until `expected` run."""
    from tests.support.kube_actors import bind_pod, pod_running

    deadline = time.monotonic() + timeout

    def start(pod: JsonDict) -> None:
        if not (pod.get("spec") or {}).get("nodeName"):
            bind_pod(api, pod)
        pod_running(api, pod)
        logs.started[(namespace, pod["metadata"]["name"])] = time.time()

    def wanted(pod: JsonDict) -> bool:
        job = (pod["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name")
        return (namespace, pod["metadata"]["name"]) not in logs.started and (jobs is None or job in jobs)

    while len(logs.started) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(logs.started)} of {expected} pods started")
        pods = [p for p in api.list_items(path(CORE, "pods", namespace)) if wanted(p)]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(start, pods))
        if len(logs.started) < expected:
            time.sleep(1)


def operator_requests(port: int) -> Counter[str]:
    import urllib3

    text = urllib3.PoolManager().request("GET", f"http://127.0.0.1:{port}/metrics").data.decode()
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("ftjob_api_requests_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            counts[f"{labels['verb']} {labels['resource']} {labels['code']}"] += int(
                float(line.rsplit(" ", 1)[1])
            )
    return counts


def steady(args: argparse.Namespace) -> dict[str, Any]:
    """`jobs` running trainers, plus `idle` queued, `idle` suspended and `idle` finished FineTuneJobs, for
    `minutes` after all run: staleness of status.progress, the operator's requests per running job per
    poll interval, its CPU, and what the idle ones cost (nothing, it should be)."""
    interval = args.interval
    logs = TrainerLogs(cadence=args.cadence)
    with fresh_cluster() as plane, node_agent(plane, logs):
        api = plane.client()
        namespace = "steady"
        make_namespace(api, namespace)
        metrics_port = free_port()
        kubeconfig = plane.write_kubeconfig(args.workdir / "kubeconfig-steady")
        command = [
            *project_command(namespace, "--progress-interval", str(interval)),
            "--metrics-port",
            str(metrics_port),
        ]
        operator = OperatorRun(command, kubeconfig, args.workdir / "operator-steady.log")
        operator.start()
        try:
            running = [f"run-{i:04d}" for i in range(args.jobs)]
            create_all(api, namespace, running, {})
            queued = {**SPEC, "scheduling": {"queueName": "team-gpus"}}
            suspended = {**SPEC, "suspend": True}
            for i in range(args.idle):
                api.create(path(FTJ, "finetunejobs", namespace), ftj_body(f"queued-{i:03d}", queued))
                api.create(path(FTJ, "finetunejobs", namespace), ftj_body(f"suspended-{i:03d}", suspended))
                # Finished: a storage endpoint on loopback fails at once (a terminal status, no Job).
                bad = {**SPEC, "storage": {"endpointUrl": "http://127.0.0.1:9000"}}
                api.create(path(FTJ, "finetunejobs", namespace), ftj_body(f"finished-{i:03d}", bad))
            start_pods(api, namespace, logs, args.jobs)
            # Wait until every running job shows progress once, then measure.
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                items = api.list_items(path(FTJ, "finetunejobs", namespace))
                shown = sum(
                    1 for i in items if ((i.get("status") or {}).get("progress") or {}).get("updatedAt")
                )
                if shown >= args.jobs:
                    break
                time.sleep(2)
            requests_before = operator_requests(metrics_port)
            server_before = apiserver_requests(api)
            cpu_before = operator.cpu_seconds()
            window_start = time.monotonic()
            samples: list[float] = []
            while time.monotonic() - window_start < args.minutes * 60:
                time.sleep(5)
                now = time.time()
                for item in api.list_items(path(FTJ, "finetunejobs", namespace)):
                    name = item["metadata"]["name"]
                    if not name.startswith("run-"):
                        continue
                    pods = [k for k in logs.started if k[1].startswith(f"{name}-train-")]
                    if not pods:
                        continue
                    key = pods[0]
                    shown_at = ((item.get("status") or {}).get("progress") or {}).get("updatedAt")
                    newest = logs.newest(key, now)
                    if shown_at is None:
                        samples.append(now - logs.record_time(key, 0))
                        continue
                    shown_epoch = time.mktime(time.strptime(shown_at, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
                    shown_index = round((shown_epoch - logs.started[key]) / logs.cadence)
                    samples.append(
                        0.0 if shown_index >= newest else now - logs.record_time(key, shown_index + 1)
                    )
            window = time.monotonic() - window_start
            cpu = operator.cpu_seconds() - cpu_before
            requests = operator_requests(metrics_port) - requests_before
            server = request_delta(server_before, apiserver_requests(api))
            intervals = window / interval
            total = sum(requests.values())
            return {
                "scenario": "steady",
                "runningJobs": args.jobs,
                "idleJobs": {"queued": args.idle, "suspended": args.idle, "finished": args.idle},
                "pollIntervalSeconds": interval,
                "trainerRecordEverySeconds": args.cadence,
                "windowSeconds": round(window, 1),
                "stalenessP50": percentile(samples, 50),
                "stalenessP99": percentile(samples, 99),
                "stalenessMax": max(samples) if samples else None,
                "samples": len(samples),
                "operatorRequests": dict(sorted(requests.items())),
                "requestsPerRunningJobPerInterval": round(total / (args.jobs * intervals), 3),
                "operatorCpuCores": round(cpu / window, 3),
                "peakRssMiB": round(operator.peak_rss() / 2**20, 1),
                "apiserverRequests": server,
            }
        finally:
            operator.stop()


def summarize_steady(result: dict[str, Any]) -> str:
    rows = [
        "| running jobs | idle jobs (queued/suspended/finished) | poll interval s | trainer record every s | "
        "staleness p50 s | staleness p99 s | requests per running job per interval | operator CPU cores | peak RSS MiB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| {result['runningJobs']} | {'/'.join(str(v) for v in result['idleJobs'].values())} | "
        f"{result['pollIntervalSeconds']} | {result['trainerRecordEverySeconds']} | {result['stalenessP50']:.1f} | "
        f"{result['stalenessP99']:.1f} | {result['requestsPerRunningJobPerInterval']} | {result['operatorCpuCores']} | "
        f"{result['peakRssMiB']} |",
        "",
        "Operator requests in the window (verb, resource, HTTP status): "
        + ", ".join(f"{k}: {v}" for k, v in result["operatorRequests"].items()),
    ]
    return "\n".join(rows)


# -- scenario: memory ------------------------------------------------------------------------------------
def wait_statuses(
    api: KubeClient, namespace: str, count: int, timeout: float = 900, prefix: str = ""
) -> float:
    """Seconds until `count` FineTuneJobs (named `prefix...`) have a phase."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        items = api.list_items(path(FTJ, "finetunejobs", namespace))
        named = [i for i in items if i["metadata"]["name"].startswith(prefix)]
        if sum(1 for i in named if (i.get("status") or {}).get("phase")) >= count:
            return time.monotonic() - started
        time.sleep(1)
    raise RuntimeError(f"not every FineTuneJob of {namespace} got a status in {timeout} s")


def memory(args: argparse.Namespace) -> dict[str, Any]:
    """`jobs` FineTuneJobs with their Jobs and pods (half of the pods running and printing progress): peak
    RSS while they arrive and are polled, and of a restarted operator that lists them all at start-up."""
    logs = TrainerLogs(cadence=args.cadence)
    with fresh_cluster() as plane, node_agent(plane, logs):
        api = plane.client()
        namespace = "memory"
        make_namespace(api, namespace)
        kubeconfig = plane.write_kubeconfig(args.workdir / "kubeconfig-memory")
        command = project_command(namespace)
        first = OperatorRun(command, kubeconfig, args.workdir / "operator-memory.log")
        first.start()
        idle_rss = first.rss()
        try:
            names = [f"mem-{i:04d}" for i in range(args.jobs)]
            create_all(api, namespace, names, {})
            wait_statuses(api, namespace, args.jobs)
            # Half of them running, the others' pods Pending (no scheduler binds them).
            running = args.jobs // 2
            start_pods(api, namespace, logs, running, jobs={f"{n}-train" for n in names[:running]})
            time.sleep(3 * 15)  # three progress polls
            objects = {
                "finetunejobs": len(api.list_items(path(FTJ, "finetunejobs", namespace))),
                "jobs": len(api.list_items(path(BATCH, "jobs", namespace))),
                "pods": len(api.list_items(path(CORE, "pods", namespace))),
            }
            first_peak = first.peak_rss()
            first_now = first.rss()
        finally:
            first.stop()
        second = OperatorRun(command, kubeconfig, args.workdir / "operator-memory.log")
        second.start()
        try:
            time.sleep(3 * 15)
            second_peak = second.peak_rss()
            second_now = second.rss()
        finally:
            second.stop()
        return {
            "scenario": "memory",
            "objects": objects,
            "runningPods": running,
            "idleRssMiB": round(idle_rss / 2**20, 1),
            "peakRssMiB": round(first_peak / 2**20, 1),
            "rssAfterMiB": round(first_now / 2**20, 1),
            "restartedPeakRssMiB": round(second_peak / 2**20, 1),
            "restartedRssMiB": round(second_now / 2**20, 1),
        }


def summarize_memory(result: dict[str, Any]) -> str:
    objects = result["objects"]
    return "\n".join(
        [
            "| FineTuneJobs / Jobs / pods | running pods | RSS idle MiB | peak RSS MiB | RSS after MiB | "
            "restarted: peak RSS MiB | restarted: RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| {objects['finetunejobs']} / {objects['jobs']} / {objects['pods']} | {result['runningPods']} | "
            f"{result['idleRssMiB']} | {result['peakRssMiB']} | {result['rssAfterMiB']} | "
            f"{result['restartedPeakRssMiB']} | {result['restartedRssMiB']} |",
        ]
    )


# -- scenario: backpressure ------------------------------------------------------------------------------
def backpressure(args: argparse.Namespace) -> dict[str, Any]:
    """The operator behind the fault proxy, which answers 429 (Retry-After: 1) to every fourth request that
    is not a watch while `jobs` FineTuneJobs arrive; then the 429s stop and `jobs` more arrive."""
    from tests.support.fault_proxy import FaultProxy, Match, Reply

    with fresh_cluster() as plane:
        api = plane.client()
        namespace = "backpressure"
        make_namespace(api, namespace)
        pki = plane.pki
        with FaultProxy(plane.url, pki.path("ca.crt"), pki.path("admin.crt"), pki.path("admin.key")) as proxy:
            kubeconfig = plane.write_kubeconfig(args.workdir / "kubeconfig-bp", server=proxy.url)
            metrics_port = free_port()
            command = project_command(namespace, "--metrics-port", str(metrics_port))
            operator = OperatorRun(command, kubeconfig, args.workdir / "operator-backpressure.log")
            operator.start()
            try:
                phases = []
                for phase, throttled in (("throttled", True), ("recovered", False)):
                    rule = None
                    if throttled:
                        rule = proxy.add(
                            Match(without=("watch",)),
                            Reply(429, "TooManyRequests", headers={"Retry-After": "1"}),
                            times=None,
                            every=4,
                        )
                    before = operator_requests(metrics_port)
                    names = [f"{phase}-{i:04d}" for i in range(args.jobs)]
                    created: dict[str, float] = {}
                    job_seen: dict[str, float] = {}

                    def on_job(
                        kind: str, obj: JsonDict, when: float, seen: dict[str, float] = job_seen
                    ) -> None:
                        if kind == "ADDED":
                            seen.setdefault(obj["metadata"]["name"].removesuffix("-train"), when)

                    with Watcher(api, path(BATCH, "jobs", namespace), on_job):
                        time.sleep(0.5)
                        start = time.monotonic()
                        create_all(api, namespace, names, created)
                        deadline = time.monotonic() + 600
                        while (
                            sum(1 for n in names if n in job_seen) < len(names)
                            and time.monotonic() < deadline
                        ):
                            time.sleep(0.2)
                        all_jobs = time.monotonic() - start
                        statuses = wait_statuses(api, namespace, len(names), prefix=f"{phase}-") + all_jobs
                    if rule is not None:
                        proxy.clear()
                    latencies = [job_seen[n] - created[n] for n in names if n in job_seen]
                    requests = operator_requests(metrics_port) - before
                    phases.append(
                        {
                            "phase": phase,
                            "jobs": len(names),
                            "jobsCreated": sum(1 for n in names if n in job_seen),
                            "p50": percentile(latencies, 50),
                            "p99": percentile(latencies, 99),
                            "allJobsAfter": round(all_jobs, 1),
                            "allStatusesAfter": round(statuses, 1),
                            "throttledAnswers": sum(v for k, v in requests.items() if k.endswith(" 429")),
                            "operatorRequests": dict(sorted(requests.items())),
                        }
                    )
                jobs_total = len(api.list_items(path(BATCH, "jobs", namespace)))
                log = (args.workdir / "operator-backpressure.log").read_text(errors="replace")
                return {
                    "scenario": "backpressure",
                    "phases": phases,
                    "jobsInNamespace": jobs_total,
                    "finetunejobs": 2 * args.jobs,
                    "tracebacks": log.count("Traceback"),
                }
            finally:
                operator.stop()


def summarize_backpressure(result: dict[str, Any]) -> str:
    rows = [
        "| phase | FineTuneJobs | Jobs created | p50 s | p99 s | all Jobs after s | all statuses after s | 429s answered |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in result["phases"]:
        rows.append(
            f"| {p['phase']} | {p['jobs']} | {p['jobsCreated']} | {p['p50']:.2f} | {p['p99']:.2f} | "
            f"{p['allJobsAfter']} | {p['allStatusesAfter']} | {p['throttledAnswers']} |"
        )
    rows.append("")
    rows.append(
        f"Jobs in the namespace at the end: {result['jobsInNamespace']} for {result['finetunejobs']} FineTuneJobs; "
        f"tracebacks in the operator's log: {result['tracebacks']}."
    )
    return "\n".join(rows)


# -- scenario: burst ------------------------------------------------------------------------------------
def burst_once(variant: str, jobs: int, workdir: Path) -> dict[str, Any]:
    with fresh_cluster() as plane:
        api = plane.client()
        namespace = "burst"
        make_namespace(api, namespace)
        kubeconfig = plane.write_kubeconfig(workdir / f"kubeconfig-{variant}")
        command = project_command(namespace) if variant == "project" else baseline_command(namespace)
        operator = OperatorRun(command, kubeconfig, workdir / f"operator-{variant}.log")
        operator.start()
        try:
            time.sleep(2)
            names = [f"ftj-{i:04d}" for i in range(jobs)]
            created: dict[str, float] = {}
            job_seen: dict[str, float] = {}
            done = threading.Event()

            def on_job(kind: str, obj: JsonDict, when: float) -> None:
                owner = obj["metadata"]["name"].removesuffix("-train")
                if kind == "ADDED" and owner not in job_seen:
                    job_seen[owner] = when
                    if len(job_seen) >= jobs:
                        done.set()

            before = apiserver_requests(api)
            cpu_before = operator.cpu_seconds()
            with Watcher(api, path(BATCH, "jobs", namespace), on_job):
                time.sleep(0.5)
                start = time.monotonic()
                create_all(api, namespace, names, created)
                done.wait(600)
                end = time.monotonic()
                # The first status of each FineTuneJob (phase written): part of the real work (the
                # baseline writes none).
                status_deadline = time.monotonic() + (300 if variant == "project" else 0)
                with_status = 0
                while time.monotonic() < status_deadline:
                    items = api.list_items(path(FTJ, "finetunejobs", namespace))
                    with_status = sum(1 for i in items if (i.get("status") or {}).get("phase"))
                    if with_status >= jobs:
                        break
                    time.sleep(1)
                statuses_done = time.monotonic()
            after = apiserver_requests(api)
            latencies = [job_seen[n] - created[n] for n in names if n in job_seen and n in created]
            return {
                "variant": variant,
                "jobs": jobs,
                "jobsSeen": len(job_seen),
                "p50": percentile(latencies, 50),
                "p90": percentile(latencies, 90),
                "p99": percentile(latencies, 99),
                "max": max(latencies) if latencies else float("nan"),
                "creationSeconds": max(created.values()) - start,
                "allJobsAfter": end - start,
                "allStatusesAfter": statuses_done - start if variant == "project" else None,
                "withStatus": with_status,
                "operatorCpuSeconds": round(operator.cpu_seconds() - cpu_before, 2),
                "peakRssMiB": round(operator.peak_rss() / 2**20, 1),
                "apiserverRequests": request_delta(before, after),
            }
        finally:
            operator.stop()


def burst(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    for repeat in range(args.repeats):
        order = ["baseline", "project"] if repeat % 2 == 0 else ["project", "baseline"]
        for variant in [v for v in order if v in args.variants]:
            result = burst_once(variant, args.jobs, args.workdir)
            print(json.dumps({k: v for k, v in result.items() if k != "apiserverRequests"}), flush=True)
            runs.append(result)
    return {"scenario": "burst", "runs": runs}


def summarize_burst(result: dict[str, Any]) -> str:
    rows = [
        "| operator | repeat | p50 s | p99 s | all Jobs after s | first statuses after s | CPU s | peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    counts: dict[str, int] = Counter()
    for run in result["runs"]:
        counts[run["variant"]] += 1
        statuses = "" if run["allStatusesAfter"] is None else f"{run['allStatusesAfter']:.1f}"
        rows.append(
            f"| {run['variant']} | {counts[run['variant']]} | {run['p50']:.2f} | {run['p99']:.2f} | "
            f"{run['allJobsAfter']:.1f} | {statuses} | {run['operatorCpuSeconds']} | {run['peakRssMiB']} |"
        )
    p99 = {v: statistics.median(r["p99"] for r in result["runs"] if r["variant"] == v) for v in counts}
    rows.append("")
    rows.append(
        f"Median p99: project {p99.get('project', float('nan')):.2f} s, baseline "
        f"{p99.get('baseline', float('nan')):.2f} s, ratio {p99.get('project', 0) / p99.get('baseline', 1):.2f}"
    )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenario", choices=["burst", "steady", "memory", "backpressure"])
    parser.add_argument(
        "--idle", type=int, default=50, help="steady: queued, suspended and finished jobs, each"
    )
    parser.add_argument("--minutes", type=float, default=3.0, help="steady: the measured window")
    parser.add_argument(
        "--interval", type=float, default=15.0, help="steady: the operator's --progress-interval"
    )
    parser.add_argument("--cadence", type=float, default=20.0, help="steady: seconds between trainer records")
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--variants", nargs="+", default=["baseline", "project"], choices=["baseline", "project"]
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ftjob-operator-scale"))
    parser.add_argument("--results", type=Path)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    scenarios = {
        "burst": (burst, summarize_burst),
        "steady": (steady, summarize_steady),
        "memory": (memory, summarize_memory),
        "backpressure": (backpressure, summarize_backpressure),
    }
    run, summarize = scenarios[args.scenario]
    result = run(args)
    text = summarize(result)
    print(text)
    if args.results:
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / f"{args.scenario}.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.results / f"{args.scenario}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
