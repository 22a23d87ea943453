"""metav1.Condition bookkeeping: lastTransitionTime moves only when the status of a type changes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from ftjob.api.conditions import CONDITION_TYPES

from .names import JsonDict

ConditionStatus = Literal["True", "False", "Unknown"]

MAX_MESSAGE = 4096


def timestamp(when: datetime) -> str:
    """RFC 3339 in UTC with second precision, as the API server writes metav1.Time."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def find(conditions: Sequence[JsonDict], type_: str) -> JsonDict | None:
    for condition in conditions:
        if condition.get("type") == type_:
            return condition
    return None


def is_true(conditions: Sequence[JsonDict], type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.get("status") == "True"


def reason_of(conditions: Sequence[JsonDict], type_: str) -> str | None:
    found = find(conditions, type_)
    return None if found is None else found.get("reason")


class ConditionSet:
    """The conditions of one status being derived, starting from the previously written ones.

    Only types set during this derivation are kept (`set`), unless `keep` carries an old one forward.
    """

    def __init__(self, previous: Sequence[JsonDict], generation: int | None, now: datetime) -> None:
        self._previous = [dict(c) for c in previous if isinstance(c, dict)]
        self._generation = generation
        self._now = timestamp(now)
        self._current: dict[str, JsonDict] = {}

    def set(self, type_: str, status: ConditionStatus, reason: str, message: str = "") -> None:
        old = find(self._previous, type_)
        transitioned = old is None or old.get("status") != status or not old.get("lastTransitionTime")
        condition: JsonDict = {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message[:MAX_MESSAGE],
            "lastTransitionTime": self._now if transitioned or old is None else old["lastTransitionTime"],
        }
        if self._generation is not None:
            condition["observedGeneration"] = self._generation
        self._current[type_] = condition

    def keep(self, type_: str) -> None:
        """Carry the previous condition of this type forward unchanged (if there is one)."""
        old = find(self._previous, type_)
        if old is not None and type_ not in self._current:
            self._current[type_] = old

    def previous(self, type_: str) -> JsonDict | None:
        return find(self._previous, type_)

    def as_list(self) -> list[JsonDict]:
        """Known types in their documented order, then any others."""
        order = {t: i for i, t in enumerate(CONDITION_TYPES)}
        return sorted(self._current.values(), key=lambda c: (order.get(c["type"], len(order)), c["type"]))
