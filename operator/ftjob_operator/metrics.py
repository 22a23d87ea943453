"""Prometheus metrics: FineTuneJobs by phase, reconcile duration and errors, GPU-hours requested."""

from __future__ import annotations

import threading
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

PHASES = ("Pending", "Queued", "Running", "Suspended", "Succeeded", "Failed")


class Metrics:
    """One registry per operator (tests create several); thread-safe, as reconciles run in threads."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._lock = threading.Lock()
        self._phases: dict[tuple[str, str], str] = {}
        self._gpus: dict[tuple[str, str], tuple[int, datetime]] = {}
        self.finetunejobs = Gauge(
            "ftjob_finetunejobs", "FineTuneJobs by display phase.", ["phase"], registry=self.registry
        )
        self.reconcile_seconds = Histogram(
            "ftjob_reconcile_duration_seconds",
            "Time spent in one reconcile of a FineTuneJob.",
            ["trigger"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "ftjob_reconcile_errors_total",
            "Reconciles that ended in an error, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.gpu_hours = Counter(
            "ftjob_gpu_hours_requested_total",
            "GPU-hours requested by trainer pods (GPUs in their limits x time they were running).",
            ["namespace"],
            registry=self.registry,
        )
        self.gpus_requested = Gauge(
            "ftjob_gpus_requested",
            "GPUs requested by trainer pods running now.",
            ["namespace"],
            registry=self.registry,
        )
        self.quota_used = Gauge(
            "ftjob_namespace_gpu_hours_used",
            "GPU-hours used this calendar month (UTC), from the namespace's FineTuneJobPolicy ledger.",
            ["namespace"],
            registry=self.registry,
        )
        self.quota_budget = Gauge(
            "ftjob_namespace_gpu_hours_budget",
            "GPU-hours per month allowed by the namespace's FineTuneJobPolicy (absent: no budget).",
            ["namespace"],
            registry=self.registry,
        )
        self.api_requests = Counter(
            "ftjob_api_requests_total",
            "Requests the operator sent to the API server, by verb, resource and HTTP status (0: no answer).",
            ["verb", "resource", "code"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "ftjob_workqueue_depth",
            "FineTuneJobs waiting for a reconcile (sampled at each progress poll).",
            registry=self.registry,
        )
        self.cached_objects = Gauge(
            "ftjob_cached_objects",
            "Objects held in the operator's watch-fed cache, by resource.",
            ["resource"],
            registry=self.registry,
        )
        self._phase_counts: dict[str, int] = dict.fromkeys(PHASES, 0)
        for phase in PHASES:
            self.finetunejobs.labels(phase=phase).set(0)

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)

    def set_phase(self, namespace: str, name: str, phase: str | None) -> None:
        """Record the phase of one FineTuneJob (None: it is gone)."""
        with self._lock:
            key = (namespace, name)
            before = self._phases.pop(key, None) if phase is None else self._phases.get(key)
            if phase is not None:
                self._phases[key] = phase
            if before == phase:
                return
            for value, change in ((before, -1), (phase, 1)):
                if value is not None:
                    self._phase_counts[value] = self._phase_counts.get(value, 0) + change
                    self.finetunejobs.labels(phase=value).set(self._phase_counts[value])

    def count_request(self, verb: str, resource: str, code: int) -> None:
        self.api_requests.labels(verb=verb, resource=resource, code=str(code)).inc()

    def set_queue(self, depth: int, cached: dict[str, int]) -> None:
        self.queue_depth.set(depth)
        for resource, count in cached.items():
            self.cached_objects.labels(resource=resource).set(count)

    def set_quota(self, namespace: str, used: float, budget: float | None) -> None:
        self.quota_used.labels(namespace=namespace).set(used)
        if budget is not None:
            self.quota_budget.labels(namespace=namespace).set(budget)

    def account_gpus(self, namespace: str, name: str, gpus_running: int, now: datetime) -> None:
        """Accrue GPU-hours for the time since the previous observation of this job, at the GPU count then."""
        with self._lock:
            key = (namespace, name)
            previous = self._gpus.get(key)
            if previous is not None:
                gpus, since = previous
                elapsed = max(0.0, (now - since).total_seconds())
                if gpus and elapsed:
                    self.gpu_hours.labels(namespace=namespace).inc(gpus * elapsed / 3600)
            if gpus_running:
                self._gpus[key] = (gpus_running, now)
            else:
                self._gpus.pop(key, None)
            total = sum(g for (ns, _), (g, _) in self._gpus.items() if ns == namespace)
            self.gpus_requested.labels(namespace=namespace).set(total)
