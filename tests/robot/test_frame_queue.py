"""robot.frame_queue: the bounded drop-oldest hand-over between a callback and a worker."""

import threading

import pytest

from robot.frame_queue import DropOldestQueue, QueueClosed


def test_a_full_queue_drops_the_oldest_and_counts_it():
    queue = DropOldestQueue(3)
    assert [queue.put(i) for i in range(5)] == [None, None, None, 0, 1]
    assert queue.dropped == 2 and queue.accepted == 5 and len(queue) == 3
    assert [queue.get(0) for _ in range(3)] == [2, 3, 4]  # the newest survive, in order
    assert queue.get(timeout_s=0.01) is None


def test_close_wakes_a_waiting_worker_after_it_drains_the_queue():
    queue = DropOldestQueue(2)
    queue.put("a")
    got = []

    def worker():
        try:
            while True:
                got.append(queue.get())
        except QueueClosed:
            got.append("closed")

    thread = threading.Thread(target=worker)
    thread.start()
    queue.close()
    thread.join(timeout=2)
    assert not thread.is_alive() and got == ["a", "closed"]
    assert queue.put("late") == "late" and queue.dropped == 1


def test_get_all_takes_every_queued_item_oldest_first():
    queue = DropOldestQueue(3)
    assert queue.get_all(timeout_s=0.01) == []
    for i in range(4):
        queue.put(i)
    assert queue.get_all() == [1, 2, 3] and len(queue) == 0 and queue.dropped == 1
    queue.close()
    with pytest.raises(QueueClosed):
        queue.get_all()


def test_clear_counts_what_it_drops():
    queue = DropOldestQueue(4)
    for i in range(3):
        queue.put(i)
    assert queue.clear() == 3 and queue.dropped == 3 and len(queue) == 0


@pytest.mark.parametrize("capacity", [0, -1, 1.5, True])
def test_capacity_must_be_a_positive_int(capacity):
    with pytest.raises(ValueError, match="capacity must be an int >= 1"):
        DropOldestQueue(capacity)
