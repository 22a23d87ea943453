"""From the trainer's log to what a person reads: records out, one line per training log step. Pure.

The trainer's stdout carries machine records (`FTJOB_PROGRESS`, read by the operator; `FTJOB_TASK`, drawn
as bars) between its human lines. A person following a run wants the human lines only, and one line per
logging step: the trainer may print a step twice (a heartbeat line with the previous step's loss, then the
logged one), and the later line holds the current numbers, so a step line is held back until the next
line shows it was the last one for that step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from ftjob.contract import PROGRESS_PREFIX
from ftjob.task_progress import TASK_PREFIX

RECORD_PREFIXES: Final = (PROGRESS_PREFIX, TASK_PREFIX)
_STEP: Final = re.compile(r"\bstep (\d+)/(\d+)\b")


def is_record(line: str) -> bool:
    return any(prefix in line for prefix in RECORD_PREFIXES)


def step_of(line: str) -> str | None:
    match = _STEP.search(line)
    return match.group(0) if match else None


@dataclass
class HumanLines:
    """Feed log lines one at a time; get back the lines a person should see, in order."""

    raw: bool = False
    """Everything, records included (`--verbose`)."""
    _pending: str | None = None

    def feed(self, line: str) -> list[str]:
        line = line.rstrip("\n")
        if self.raw:
            return [line]
        if is_record(line):
            return []
        out: list[str] = []
        step = step_of(line)
        if self._pending is not None and (step is None or step != step_of(self._pending)):
            out.append(self._pending)
        self._pending = None
        if step is not None:
            self._pending = line  # the next line may be the same step with newer numbers
        else:
            out.append(line)
        return out

    def flush(self) -> list[str]:
        """The line held back, once no more lines are coming for now."""
        out = [] if self._pending is None else [self._pending]
        self._pending = None
        return out


def human_text(text: str, *, raw: bool = False) -> list[str]:
    lines = HumanLines(raw=raw)
    out = [kept for line in text.splitlines() for kept in lines.feed(line)]
    return out + lines.flush()
