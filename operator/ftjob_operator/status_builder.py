"""The status being derived: the previous one, its conditions, the fields carried over, and how it ends.

Every policy writes through it, so phase, conditions and messages come out the same shape whoever decided.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from ftjob.api.conditions import ADMITTED, FAILED, RUNNING, SUSPENDED, TERMINAL_PHASES, VALIDATED
from ftjob.contract import TerminationSummary

from .conditions import ConditionSet, timestamp
from .names import JsonDict
from .observe import Pods, job_counts
from .redact import redact

# Status fields that describe the whole run and survive from one derivation to the next.
CARRIED: Final = ("jobName", "startTime", "attempts", "progress", "dataset", "metrics", "artifacts")


def is_terminal(status: JsonDict | None) -> bool:
    return (status or {}).get("phase") in TERMINAL_PHASES


class StatusBuilder:
    def __init__(self, ftj: JsonDict, now: datetime) -> None:
        self.old: JsonDict = dict(ftj.get("status") or {})
        self.generation: int | None = (ftj.get("metadata") or {}).get("generation")
        self.now = now
        self.conditions = ConditionSet(self.old.get("conditions") or [], self.generation, now)
        self.out: JsonDict = {key: self.old[key] for key in CARRIED if self.old.get(key) is not None}

    def finish(self, phase: str, message: str) -> JsonDict:
        out: JsonDict = {}
        if self.generation is not None:
            out["observedGeneration"] = self.generation
        out["phase"] = phase
        out["conditions"] = [
            {**c, "message": redact(str(c.get("message") or ""))} for c in self.conditions.as_list()
        ]
        out.update(self.out)
        out["message"] = redact(message)
        if phase in TERMINAL_PHASES:
            out.setdefault("completionTime", timestamp(self.now))
        return out

    def fail(self, reason: str, message: str) -> JsonDict:
        self.conditions.keep(VALIDATED)
        self.conditions.keep(ADMITTED)
        self.conditions.keep(SUSPENDED)
        if self.conditions.previous(RUNNING) is not None or self.out.get("jobName"):
            self.conditions.set(RUNNING, "False", reason, message)
        self.conditions.set(FAILED, "True", reason, message)
        return self.finish("Failed", message)

    def record_job(self, job: JsonDict, p: Pods, nodes: int) -> None:
        """Note the Job, how many attempts it made so far, and when its first pod started."""
        self.out["jobName"] = job["metadata"]["name"]
        # Pods started (or counted by the Job controller) per node: a multi-node run starts one pod per node
        # for each attempt.
        per_node = -(-max(p.started, job_counts(job)) // nodes)
        attempts = max(int(self.out.get("attempts") or 0), per_node)
        if attempts:
            self.out["attempts"] = attempts
        if "startTime" not in self.out and p.first_start:
            self.out["startTime"] = p.first_start

    def copy_summary(self, summary: TerminationSummary | None) -> None:
        if summary is None:
            return
        for key, value in (
            ("metrics", summary.metrics),
            ("dataset", summary.dataset),
            ("artifacts", summary.artifacts),
        ):
            if value is not None:
                self.out[key] = value.model_dump(mode="json", by_alias=True, exclude_none=True)
