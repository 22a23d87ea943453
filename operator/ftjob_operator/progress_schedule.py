"""When a running trainer's log is worth reading (pure): right after its next progress record is due.

A trainer prints a record at every logging step and a heartbeat at least every 30 s in between, so its
records come at a steady pace. Reading its log every poll interval regardless would cost a request per job
and interval for nothing whenever the pace is slower than the interval; reading at the first poll after
the next record is due finds a new record (and then writes the status) almost every time:

- no record seen yet, or the last read found nothing new: read at the next poll;
- else: not before the last record's time plus the pace measured between the last two records (at least
  one interval, at most four, so a trainer that speeds up is followed within four intervals).

With a record every 30 s and a 15 s poll that is one read and one status write per 30 s per job: one
request per job and poll interval, and the status trails the trainer by at most about one interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_INTERVALS: Final = 4.0
EARLY: Final = 0.25
"""A read is due this fraction of an interval early: polls do not land exactly on a record's time."""


@dataclass
class LogReads:
    """What the reads of one trainer's log found: times in seconds since the epoch."""

    last_record: float | None = None
    pace: float | None = None
    last_read_found_nothing: bool = True

    def read(self, record_time: float | None) -> None:
        """Remember what a read found: the newest record's time (None: no record in the log)."""
        if record_time is None or (self.last_record is not None and record_time <= self.last_record):
            self.last_read_found_nothing = True
            return
        if self.last_record is not None:
            self.pace = record_time - self.last_record
        self.last_record = record_time
        self.last_read_found_nothing = False

    def due(self, now: float, interval: float) -> bool:
        if self.last_record is None or self.last_read_found_nothing:
            return True
        pace = min(max(self.pace or interval, interval), MAX_INTERVALS * interval)
        return now >= self.last_record + pace - EARLY * interval
