"""When the operator reads a running trainer's log: at the first poll after its next record is due."""

from __future__ import annotations

from ftjob_operator.progress_schedule import LogReads

INTERVAL = 15.0


def test_until_a_record_is_seen_every_poll_reads() -> None:
    reads = LogReads()
    assert reads.due(0, INTERVAL)
    reads.read(None)  # a trainer still downloading prints no record yet
    assert reads.due(15, INTERVAL)


def test_a_trainer_printing_every_30_s_is_read_every_other_poll() -> None:
    reads = LogReads()
    due_polls = []
    record = 0.0
    for poll in range(1, 13):  # three minutes of 15 s polls, a record every 30 s from t=0
        now = poll * INTERVAL
        if reads.due(now, INTERVAL):
            due_polls.append(now)
            newest = (now // 30) * 30
            reads.read(newest)
            record = newest
    assert record == 180
    assert due_polls == [15, 30, 60, 90, 120, 150, 180]  # after the pace is known: one read per record


def test_nothing_new_means_the_next_poll_reads_again_and_a_faster_trainer_is_followed() -> None:
    reads = LogReads()
    reads.read(0.0)
    reads.read(60.0)  # pace 60 s
    assert not reads.due(90, INTERVAL)
    assert reads.due(120, INTERVAL)
    reads.read(60.0)  # the record is late: nothing new
    assert reads.due(135, INTERVAL)
    reads.read(130.0)
    reads.read(400.0)  # a pace of 270 s is capped at four intervals
    assert reads.due(400 + 4 * INTERVAL, INTERVAL)
    assert not reads.due(400 + 2 * INTERVAL, INTERVAL)
