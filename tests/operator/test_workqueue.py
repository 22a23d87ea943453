"""The reconcile queue: one entry per FineTuneJob, never two workers on one, urgent first, delayed retries."""

from __future__ import annotations

import threading
import time

from ftjob_operator.workqueue import WorkQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_key_named_by_many_events_is_reconciled_once() -> None:
    queue = WorkQueue()
    for _ in range(5):
        queue.add(("ns", "a"))
    queue.add(("ns", "b"))
    assert len(queue) == 2
    first = queue.get(timeout=0)
    assert first is not None and first.key == ("ns", "a")
    queue.done(first)
    second = queue.get(timeout=0)
    assert second is not None and second.key == ("ns", "b")
    queue.done(second)
    assert queue.get(timeout=0) is None


def test_a_key_changed_while_held_comes_back_after_done_never_to_a_second_worker() -> None:
    queue = WorkQueue()
    queue.add(("ns", "a"))
    held = queue.get(timeout=0)
    assert held is not None
    queue.add(("ns", "a"), progress=True)
    assert queue.get(timeout=0) is None  # not handed out while a worker holds it
    queue.done(held)
    again = queue.get(timeout=0)
    assert again is not None and again.key == ("ns", "a") and again.progress


def test_urgent_keys_go_first_and_a_queued_key_can_become_urgent() -> None:
    queue = WorkQueue()
    queue.add(("ns", "old"))
    queue.add(("ns", "other"))
    queue.add(("ns", "new"), urgent=True)
    queue.add(("ns", "other"), urgent=True)
    assert queue.urgent_waiting()
    order = []
    while (item := queue.get(timeout=0)) is not None:
        order.append(item.key[1])
        queue.done(item)
    assert order == ["new", "other", "old"]
    assert not queue.urgent_waiting()


def test_progress_sticks_to_a_queued_key() -> None:
    queue = WorkQueue()
    queue.add(("ns", "a"), progress=True)
    queue.add(("ns", "a"))
    item = queue.get(timeout=0)
    assert item is not None and item.progress


def test_a_delayed_key_waits_in_the_timer_heap_not_in_a_worker() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add(("ns", "later"), after=30)
    queue.add(("ns", "sooner"), after=5)
    assert queue.get(timeout=0) is None
    clock.now = 6
    item = queue.get(timeout=0)
    assert item is not None and item.key == ("ns", "sooner")
    queue.done(item)
    assert queue.get(timeout=0) is None
    clock.now = 31
    item = queue.get(timeout=0)
    assert item is not None and item.key == ("ns", "later")


def test_get_wakes_up_for_an_added_key_and_close_releases_every_worker() -> None:
    queue = WorkQueue()
    got: list[object] = []
    workers = [threading.Thread(target=lambda: got.append(queue.get())) for _ in range(3)]
    for worker in workers:
        worker.start()
    queue.add(("ns", "a"))
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    queue.close()
    for worker in workers:
        worker.join(5)
        assert not worker.is_alive()
    keys = [getattr(item, "key", None) for item in got]
    assert keys.count(("ns", "a")) == 1 and keys.count(None) == 2
