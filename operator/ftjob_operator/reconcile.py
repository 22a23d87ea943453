"""One idempotent, level-triggered reconcile of a FineTuneJob: observe, derive, act, record.

Whatever triggered it (a FineTuneJob, Job or pod event, the progress poll, an operator restart), it reads
the current state and converges on it, so it may run any number of times, be killed at any point and run
again. Reconciles of the same object are serialised by a per-object lock.

With a `ClusterCache` (the running operator) the FineTuneJob, its Job and its pods are read from what the
watches delivered, and a reconcile that changes nothing sends no request. Two rules keep that safe:

- Every write that depends on a read carries a precondition: the status patch its resourceVersion, a Job
  its deterministic name. A stale read costs a 409 and a fresh read from the API, never a wrong write.
- Nothing that cannot be undone is decided from the cache: before a terminal status, deleting a Job or
  starting a collector, the Job and its pods are read from the API and the reconcile starts over on them.

Without a cache (tests that drive one reconcile at a time) every read goes to the API.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Final

from pydantic import ValidationError

from ftjob import contract
from ftjob.api.conditions import FAILED, RUNNING, SUCCEEDED, TERMINAL_PHASES
from ftjob.contract import ProgressRecord, parse_latest_progress

from .cache import ClusterCache
from .conditions import find, is_true, parse_time, reason_of
from .derive import DELETE_JOB_ON, JOB_REJECTED, derive_status, failed_status, is_terminal
from .event_recorder import EventRecorder
from .events import Event, derive_events, event_body
from .kube import ErrorKind, Kube, KubeError
from .metrics import Metrics
from .names import (
    LABEL_FINETUNEJOB,
    JsonDict,
    Ownership,
    collector_job_name,
    controller_of,
    job_name,
    ownership,
)
from .observe import CollectorRun, Pods, is_deleting, job_outcome, needs_collector
from .patches import merge_patch
from .plan import CreateCollector, CreateJob, DeleteCollector, DeleteJob, SetJobSuspend, plan_actions
from .progress_schedule import LogReads
from .quota import POLICY_NAME, Quota, gpu_hours, ledger_due
from .render import render_job, validated_spec
from .render_collector import render_collector_job
from .render_distributed import is_multi_node, render_service
from .settings import OperatorSettings

logger = logging.getLogger(__name__)

LOG_LIMIT_BYTES: Final = 256 * 1024
POLICY_TTL_SECONDS: Final = 30.0
"""How long a namespace's FineTuneJobPolicy is reused before it is read again."""
MAX_CONFLICT_RETRIES: Final = 5


def utcnow() -> datetime:
    return datetime.now(UTC)


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        settings: OperatorSettings,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = utcnow,
        *,
        cache: ClusterCache | None = None,
        events: EventRecorder | None = None,
    ) -> None:
        self._kube = kube
        self._cache = cache
        self._events = events
        self._defer_record: Callable[[tuple[str, str]], bool] | None = None
        self._settings = settings
        self._metrics = metrics or Metrics()
        self._clock = clock
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # Finished FineTuneJobs whose Job the operator still has to delete after the TTL: (namespace, name) ->
        # when. The poll keeps visiting them (see wants_poll).
        self._ttl_due: dict[tuple[str, str], datetime] = {}
        # FineTuneJobPolicy per namespace (or None), read at most every POLICY_TTL; and when each job's
        # GPU-hours were last written to its ledger (quota.py).
        self._policies: dict[str, tuple[JsonDict | None, float]] = {}
        self._ledger_written: dict[tuple[str, str], datetime] = {}
        self._ledger_final: set[tuple[str, str]] = set()
        self._log_reads: dict[tuple[str, str], LogReads] = {}

    def set_defer_record(self, defer: Callable[[tuple[str, str]], bool]) -> None:
        """Asked right after a Job was created: True when the status write should wait (the callee queues the
        FineTuneJob again), because more FineTuneJobs wait for their Jobs. Create before record holds."""
        self._defer_record = defer

    @contextmanager
    def _locked(self, namespace: str, name: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault((namespace, name), threading.Lock())
        with lock:
            yield

    def wants_poll(self, namespace: str, name: str, phase: str | None) -> bool:
        """Whether the poll must keep visiting this FineTuneJob: unfinished, or its Job awaits the TTL."""
        if phase is None:
            return False
        with self._locks_guard:
            pending = (namespace, name) in self._ttl_due
        return pending or phase not in TERMINAL_PHASES

    def progress_due(self, namespace: str, name: str, now: float, interval: float) -> bool:
        """Whether the trainer's log is worth reading at this poll (progress_schedule.py)."""
        with self._locks_guard:
            reads = self._log_reads.get((namespace, name))
        return reads is None or reads.due(now, interval)

    def forget(self, namespace: str, name: str) -> None:
        """Drop the bookkeeping of a deleted FineTuneJob."""
        with self._locks_guard:
            self._log_reads.pop((namespace, name), None)
            self._locks.pop((namespace, name), None)
            self._ttl_due.pop((namespace, name), None)
            self._ledger_written.pop((namespace, name), None)
            self._ledger_final.discard((namespace, name))
        self._metrics.set_phase(namespace, name, None)
        self._metrics.account_gpus(namespace, name, 0, self._clock())

    def reconcile(
        self, namespace: str, name: str, *, trigger: str, read_progress: bool = False
    ) -> str | None:
        """Converge one FineTuneJob; returns its phase (None when it is gone).

        Raises KubeError when the API keeps failing (after the transport's own retries).
        """
        started = time.monotonic()
        try:
            with self._locked(namespace, name):
                for attempt in range(MAX_CONFLICT_RETRIES):
                    try:
                        return self._reconcile_once(namespace, name, read_progress, fresh=attempt > 0)
                    except KubeError as err:
                        if err.kind not in (ErrorKind.CONFLICT, ErrorKind.NOT_FOUND):
                            raise
                        # Someone wrote (or deleted) the object or its Job since it was read: read it again
                        # and start over. A FineTuneJob deleted meanwhile is then simply gone.
                        logger.debug(
                            "%s/%s changed while reconciling (%s); reading it again", namespace, name, err
                        )
                raise KubeError(
                    ErrorKind.CONFLICT, 409, "Conflict", f"{MAX_CONFLICT_RETRIES} conflicts in a row"
                )
        except KubeError as err:
            self._metrics.reconcile_errors.labels(kind=err.kind.value).inc()
            raise
        finally:
            self._metrics.reconcile_seconds.labels(trigger=trigger).observe(time.monotonic() - started)

    def _reconcile_once(self, namespace: str, name: str, read_progress: bool, *, fresh: bool) -> str | None:
        ftj = self._read_finetunejob(namespace, name, fresh)
        if ftj is None or is_deleting(ftj):
            # The garbage collector removes the Job through its ownerReference; nothing else to clean.
            self.forget(namespace, name)
            return None
        old: JsonDict = dict(ftj.get("status") or {})
        if is_terminal(old):
            return self._settle_terminal(ftj, old, self._clock(), fresh)

        job = self._read_job(namespace, job_name(name), fresh)
        pods, listed = self._pods(ftj, job, fresh)
        collector = self._collector(ftj, listed, fresh) if needs_collector(job, pods) else None
        progress = self._progress(ftj, pods) if read_progress else None
        # The status is dated when what it describes was seen: a slow read must not date it (and the TTL
        # that runs from its final condition) in the past.
        now = self._clock()
        quota_block = self._quota_block(ftj, now) if job is None and not old.get("jobName") else None
        status = derive_status(ftj, job, pods, progress, now, self._settings, collector, quota_block)
        actions = plan_actions(ftj, status, job, collector.job if collector else None)
        if not fresh and self._cache is not None and _irreversible(old, status, actions):
            # Concluded from what the cache holds, perhaps from an absence (no pod left, no Job) the watch
            # has not reported yet: decide again on what the API says now.
            return self._reconcile_once(namespace, name, read_progress, fresh=True)

        for action in actions:
            if isinstance(action, CreateCollector):
                collector = self._create_collector(ftj)
                status = derive_status(ftj, job, pods, progress, now, self._settings, collector)
            elif isinstance(action, CreateJob):
                job, rejected = self._create_job(ftj)
                pods = []
                if (
                    rejected is None
                    and self._defer_record is not None
                    and self._defer_record((namespace, name))
                ):
                    return str(old.get("phase") or "Pending")
                status = rejected or derive_status(ftj, job, pods, progress, now, self._settings)
            elif isinstance(action, SetJobSuspend) and job is not None:
                job = self._remember_job(
                    self._kube.patch_job(
                        namespace, job["metadata"]["name"], {"spec": {"suspend": action.suspend}}
                    )
                )
                logger.info(
                    "%s/%s: set suspend=%s on Job %s",
                    namespace,
                    name,
                    action.suspend,
                    job["metadata"]["name"],
                )
                status = derive_status(ftj, job, pods, progress, now, self._settings)

        self._record(ftj, old, status, now)
        for action in actions:
            if isinstance(action, DeleteJob):
                self._delete_job(ftj, action)
            elif isinstance(action, DeleteCollector):
                self._delete_collector(ftj)
        if is_terminal(status):
            # The final status (with the summary's metrics and artifacts) is written: the TTL starts now.
            self._expire_job(ftj, status, job, now)
        self._account(ftj, status, now)
        self._record_gpu_hours(ftj, status, now)
        return str(status.get("phase"))

    def _settle_terminal(self, ftj: JsonDict, old: JsonDict, now: datetime, fresh: bool) -> str:
        """A finished FineTuneJob never gets a new Job; only a failed pod left behind is cleaned up."""
        namespace, name = ftj["metadata"]["namespace"], ftj["metadata"]["name"]
        status = derive_status(ftj, None, [], None, now, self._settings)
        self._record(ftj, old, status, now)
        job: JsonDict | None = None
        looked = False
        if reason_of(old.get("conditions") or [], FAILED) in DELETE_JOB_ON:
            job, looked = self._read_job(namespace, job_name(name), fresh), True
            for action in plan_actions(ftj, status, job):
                if isinstance(action, DeleteJob):
                    self._delete_job(ftj, action)
                    job = None
        if not looked and self._ttl_deadline(ftj, status) is not None:
            job = self._read_job(namespace, job_name(name), fresh)
        self._expire_job(ftj, status, job, now)
        self._account(ftj, status, now)
        self._record_gpu_hours(ftj, status, now)
        return str(status.get("phase"))

    # -- GPU-hour quota (quota.py) --------------------------------------------------------------------
    def _policy(self, namespace: str, *, fresh: bool = False) -> JsonDict | None:
        now = time.monotonic()
        with self._locks_guard:
            cached = self._policies.get(namespace)
        if cached is not None and not fresh and now - cached[1] < POLICY_TTL_SECONDS:
            return cached[0]
        try:
            policy = self._kube.get_policy(namespace, POLICY_NAME)
        except KubeError as err:
            if err.kind is not ErrorKind.REJECTED:
                raise
            # No permission to read policies (an older chart's RBAC): no quota, said once per namespace.
            if cached is None:
                logger.warning("%s: cannot read FineTuneJobPolicy %s: %s", namespace, POLICY_NAME, err)
            policy = None
        with self._locks_guard:
            self._policies[namespace] = (policy, now)
        return policy

    def _quota_block(self, ftj: JsonDict, now: datetime) -> str | None:
        meta = ftj["metadata"]
        policy = self._policy(meta["namespace"])
        if policy is None:
            return None
        return Quota.of(policy, now).exceeded(str(meta.get("uid") or ""))

    def _record_gpu_hours(self, ftj: JsonDict, status: JsonDict, now: datetime) -> None:
        """Write this job's GPU-hours into its namespace's ledger (when one exists), at most every
        LEDGER_INTERVAL while it runs, and once more when it finished."""
        meta = ftj["metadata"]
        key = (meta["namespace"], meta["name"])
        uid = str(meta.get("uid") or "")
        final = is_terminal(status)
        if not status.get("startTime") or key in self._ledger_final:
            return
        with self._locks_guard:
            last = self._ledger_written.get(key)
        if not ledger_due(last, now, final):
            return
        try:
            gpus = validated_spec(ftj).resources.gpus
        except ValidationError:
            return
        for attempt in range(3):
            policy = self._policy(key[0], fresh=attempt > 0)
            if policy is None:
                return
            quota = Quota.of(policy, now)
            patch = quota.entry_patch(uid, gpu_hours(gpus, status, now, quota.period))
            if patch is not None:
                try:
                    policy = self._kube.patch_policy_status(
                        key[0], POLICY_NAME, patch, policy["metadata"].get("resourceVersion")
                    )
                except KubeError as err:
                    if err.kind is ErrorKind.CONFLICT:
                        continue  # another job's entry was written meanwhile: read again, redo
                    raise
                with self._locks_guard:
                    self._policies[key[0]] = (policy, time.monotonic())
                quota = Quota.of(policy, now)
            self._metrics.set_quota(key[0], quota.used, quota.budget)
            with self._locks_guard:
                self._ledger_written[key] = now
                if final:
                    self._ledger_final.add(key)
            return

    def _expire_job(self, ftj: JsonDict, status: JsonDict, job: JsonDict | None, now: datetime) -> None:
        """spec.ttlSecondsAfterFinished after the final status was written, delete the finished Job (never
        before: its pods hold the termination summary the status is made from)."""
        key = (ftj["metadata"]["namespace"], ftj["metadata"]["name"])
        due = self._ttl_deadline(ftj, status)
        if (
            due is None
            or job is None
            or ownership(job, ftj) is not Ownership.OWNED
            or is_deleting(job)
            or job_outcome(job) is None
        ):
            with self._locks_guard:
                self._ttl_due.pop(key, None)
            return
        if now < due:
            with self._locks_guard:
                self._ttl_due[key] = due
            return
        self._delete_job(ftj, DeleteJob("Background", "spec.ttlSecondsAfterFinished after the final status"))
        with self._locks_guard:
            self._ttl_due.pop(key, None)

    @staticmethod
    def _ttl_deadline(ftj: JsonDict, status: JsonDict) -> datetime | None:
        try:
            ttl = validated_spec(ftj).ttl_seconds_after_finished
        except ValidationError:
            return None
        if ttl is None:
            return None
        conditions = status.get("conditions") or []
        final = find(conditions, SUCCEEDED) if is_true(conditions, SUCCEEDED) else find(conditions, FAILED)
        written = parse_time((final or {}).get("lastTransitionTime"))
        return None if written is None else written + timedelta(seconds=ttl)

    # -- reads: the cache, or the API when fresh (or without a cache) --------------------------------
    def _read_finetunejob(self, namespace: str, name: str, fresh: bool) -> JsonDict | None:
        if self._cache is not None and not fresh:
            cached = self._cache.finetunejobs.get(namespace, name)
            if cached is not None:
                return cached
        ftj = self._kube.get_finetunejob(namespace, name)
        if self._cache is not None and ftj is not None:
            ftj = self._cache.finetunejobs.put(ftj)
        return ftj

    def _read_job(self, namespace: str, name: str, fresh: bool) -> JsonDict | None:
        if self._cache is not None and not fresh:
            return self._cache.jobs.get(namespace, name)
        job = self._kube.get_job(namespace, name)
        if self._cache is not None:
            if job is not None:
                return self._cache.jobs.put(job)
            cached = self._cache.jobs.get(namespace, name)
            if cached is not None:
                self._cache.jobs.remove(cached)
        return job

    def _remember_job(self, job: JsonDict) -> JsonDict:
        """A Job this operator just wrote: newer than what the watch has delivered."""
        return self._cache.jobs.put(job) if self._cache is not None else job

    def _pods(
        self, ftj: JsonDict, job: JsonDict | None, fresh: bool
    ) -> tuple[list[JsonDict], list[JsonDict]]:
        """(the pods of this very Job, every pod labelled with the FineTuneJob's name)."""
        if job is None or ownership(job, ftj) is not Ownership.OWNED:
            return [], []
        meta = ftj["metadata"]
        if self._cache is not None and not fresh:
            listed = self._cache.pods.of_finetunejob(meta["namespace"], meta["name"])
        else:
            listed = self._kube.list_pods(meta["namespace"], f"{LABEL_FINETUNEJOB}={meta['name']}")
            if self._cache is not None:
                listed = self._cache.pods.sync_finetunejob(meta["namespace"], meta["name"], listed)
        # The label narrows the list; the controller reference proves the pod belongs to this very Job.
        return _controlled_by(listed, job), listed

    def _collector(self, ftj: JsonDict, listed: list[JsonDict], fresh: bool) -> CollectorRun:
        meta = ftj["metadata"]
        job = self._read_job(meta["namespace"], collector_job_name(meta["name"]), fresh)
        if job is None or ownership(job, ftj) is not Ownership.OWNED:
            return CollectorRun(job=None)
        return CollectorRun(job=job, pods=tuple(_controlled_by(listed, job)))

    def _create_collector(self, ftj: JsonDict) -> CollectorRun:
        meta = ftj["metadata"]
        body = render_collector_job(ftj, self._settings)
        name = body["metadata"]["name"]
        try:
            created = self._kube.create_job(meta["namespace"], body)
        except KubeError as err:
            if err.kind is ErrorKind.REJECTED:
                logger.warning("%s: the API server refused the collector Job %s: %s", _key(ftj), name, err)
                return CollectorRun(
                    job=None, rejected=f"the API server refused the Job {name}: {err.status} {err.reason}"
                )
            if err.kind is not ErrorKind.CONFLICT:
                raise
            # Created by an earlier reconcile that did not get the answer: observed from the next one on.
            return CollectorRun(job=self._read_job(meta["namespace"], name, True))
        created = self._remember_job(created)
        logger.info("%s: the trainer pod is gone; created Job %s to re-read the summary", _key(ftj), name)
        self._emit(
            ftj,
            [
                Event(
                    "Normal",
                    "CollectingResults",
                    f"Created Job {name} to re-read the run's summary from the output prefix.",
                )
            ],
        )
        return CollectorRun(job=created)

    def _delete_collector(self, ftj: JsonDict) -> None:
        namespace, name = ftj["metadata"]["namespace"], collector_job_name(ftj["metadata"]["name"])
        if self._kube.delete_job(namespace, name, "Background"):
            logger.info("%s: deleted Job %s (the final status is written)", _key(ftj), name)

    def _progress(self, ftj: JsonDict, pods: list[JsonDict]) -> ProgressRecord | None:
        pod = Pods.of(pods).running
        if pod is None:
            return None
        try:
            text = self._kube.read_pod_log(
                ftj["metadata"]["namespace"],
                pod["metadata"]["name"],
                contract.CONTAINER_NAME,
                self._settings.log_tail_lines,
                LOG_LIMIT_BYTES,
            )
        except KubeError as err:
            # Progress is a nicety: a missing permission or a kubelet hiccup must not stop the reconcile.
            logger.warning(
                "%s: cannot read the trainer log of pod %s: %s", _key(ftj), pod["metadata"]["name"], err
            )
            return None
        record = parse_latest_progress(text)
        key = (ftj["metadata"]["namespace"], ftj["metadata"]["name"])
        written = parse_time(record.time) if record is not None else None
        with self._locks_guard:
            self._log_reads.setdefault(key, LogReads()).read(written.timestamp() if written else None)
        return record

    def _create_job(self, ftj: JsonDict) -> tuple[JsonDict | None, JsonDict | None]:
        """(the Job now observed, a Failed status if the API server refused the Job or its Service)."""
        meta = ftj["metadata"]
        body = render_job(ftj, self._settings)
        name = body["metadata"]["name"]
        if is_multi_node(validated_spec(ftj)):
            refused = self._create_service(ftj)
            if refused is not None:
                return None, failed_status(ftj, JOB_REJECTED, refused, self._clock())
        try:
            created = self._kube.create_job(meta["namespace"], body)
        except KubeError as err:
            if err.kind is ErrorKind.REJECTED:
                logger.warning("%s: the API server refused Job %s: %s", _key(ftj), name, err)
                message = f"The API server refused to create the Job {name}: {err.status} {err.reason}: {err.message}"
                return None, failed_status(ftj, JOB_REJECTED, message, self._clock())
            if err.kind is not ErrorKind.CONFLICT:
                raise
            existing = self._read_job(meta["namespace"], name, True)
            if existing is None:
                # Deleted again between the two requests: the next reconcile starts from scratch.
                raise KubeError(
                    ErrorKind.CONFLICT, 409, "AlreadyExists", f"Job {name} vanished after a conflict"
                ) from err
            if ownership(existing, ftj) is Ownership.OWNED:
                logger.info("%s: adopted existing Job %s (controlled by this FineTuneJob)", _key(ftj), name)
                self._emit(
                    ftj,
                    [
                        Event(
                            "Normal",
                            "JobAdopted",
                            f"Adopted the existing Job {name}, which this FineTuneJob controls.",
                        )
                    ],
                )
            return existing, None
        created = self._remember_job(created)
        logger.info("%s: created Job %s", _key(ftj), name)
        self._emit(ftj, [Event("Normal", "JobCreated", f"Created Job {name}.")])
        return created, None

    def _create_service(self, ftj: JsonDict) -> str | None:
        """The headless Service the nodes of a multi-node run find each other through, before their Job (a
        crash in between leaves a Service that the next attempt finds: 409 is fine). Returns why the API
        server refused it, if it did."""
        body = render_service(ftj)
        try:
            self._kube.create_service(ftj["metadata"]["namespace"], body)
        except KubeError as err:
            if err.kind is ErrorKind.CONFLICT:
                return None
            if err.kind is ErrorKind.REJECTED:
                name = body["metadata"]["name"]
                logger.warning("%s: the API server refused Service %s: %s", _key(ftj), name, err)
                return f"The API server refused to create the Service {name}: {err.status} {err.reason}: {err.message}"
            raise
        logger.info("%s: created Service %s", _key(ftj), body["metadata"]["name"])
        return None

    def _delete_job(self, ftj: JsonDict, action: DeleteJob) -> None:
        namespace, name = ftj["metadata"]["namespace"], job_name(ftj["metadata"]["name"])
        if self._kube.delete_job(namespace, name, action.propagation):
            logger.info("%s: deleted Job %s (%s)", _key(ftj), name, action.why)

    def _record(self, ftj: JsonDict, old: JsonDict, new: JsonDict, now: datetime) -> None:
        """Write the status if it changed, then tell what changed in Events."""
        if new != old:
            meta = ftj["metadata"]
            written = self._kube.patch_finetunejob_status(
                meta["namespace"], meta["name"], merge_patch(old, new), meta.get("resourceVersion")
            )
            if self._cache is not None:
                self._cache.finetunejobs.put(written)
            if new.get("phase") != old.get("phase"):
                logger.info(
                    "%s: %s -> %s: %s",
                    _key(ftj),
                    old.get("phase") or "(new)",
                    new.get("phase"),
                    new.get("message"),
                )
            self._emit(ftj, derive_events(old, new), now)
        self._metrics.set_phase(ftj["metadata"]["namespace"], ftj["metadata"]["name"], str(new.get("phase")))

    def _emit(self, ftj: JsonDict, events: list[Event], now: datetime | None = None) -> None:
        when = now or self._clock()
        for index, event in enumerate(events):
            if self._events is not None:
                self._events.record(ftj["metadata"]["namespace"], event_body(ftj, event, when, index))
                continue
            try:
                self._kube.create_event(ftj["metadata"]["namespace"], event_body(ftj, event, when, index))
            except KubeError as err:
                # Events are best effort; the status already holds the same information.
                logger.warning("%s: could not record Event %s: %s", _key(ftj), event.reason, err)

    def _account(self, ftj: JsonDict, status: JsonDict, now: datetime) -> None:
        gpus = 0
        if is_true(status.get("conditions") or [], RUNNING):
            try:
                gpus = validated_spec(ftj).resources.gpus
            except ValidationError:
                gpus = 0
        self._metrics.account_gpus(ftj["metadata"]["namespace"], ftj["metadata"]["name"], gpus, now)


def _irreversible(old: JsonDict, new: JsonDict, actions: Sequence[object]) -> bool:
    """Whether this reconcile would decide something for good: a final status, a deleted Job, a collector."""
    if is_terminal(new) and not is_terminal(old):
        return True
    return any(isinstance(action, (DeleteJob, CreateCollector)) for action in actions)


def _controlled_by(pods: list[JsonDict], job: JsonDict) -> list[JsonDict]:
    uid = job["metadata"].get("uid")
    return [pod for pod in pods if (controller_of(pod) or {}).get("uid") == uid]


def _key(ftj: JsonDict) -> str:
    return f"{ftj['metadata']['namespace']}/{ftj['metadata']['name']}"
