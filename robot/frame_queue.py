"""A bounded hand-over between a sensor callback and a slower worker thread.

When the worker falls behind, the oldest items go: a reward or a policy wants the newest
frames, and a queue that blocked the callback would stall every other subscription of the
node. What was dropped is counted, for /diagnostics.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueClosed(Exception):
    """get() on a closed queue that has nothing left."""


class DropOldestQueue(Generic[T]):
    """Thread-safe FIFO of at most `capacity` items; put never blocks, it drops the oldest."""

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"DropOldestQueue capacity must be an int >= 1, got {capacity!r}")
        self.capacity = capacity
        self._items: deque[T] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._dropped = 0
        self._accepted = 0

    def put(self, item: T) -> T | None:
        """Add an item; returns the oldest one if it had to go to make room (None otherwise).
        Items put after close() are dropped (and returned) as well."""
        with self._ready:
            if self._closed:
                self._dropped += 1
                return item
            dropped = None
            if len(self._items) >= self.capacity:
                dropped = self._items.popleft()
                self._dropped += 1
            self._items.append(item)
            self._accepted += 1
            self._ready.notify()
            return dropped

    def get(self, timeout_s: float | None = None) -> T | None:
        """The oldest item; None if none came within the timeout. Raises QueueClosed once the
        queue is closed and empty, so a worker loop ends by itself."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._items or self._closed, timeout=timeout_s):
                return None
            if self._items:
                return self._items.popleft()
            raise QueueClosed("the queue is closed")

    def get_all(self, timeout_s: float | None = None) -> list[T]:
        """Every queued item, oldest first, once there is at least one; [] if none came within the
        timeout. Raises QueueClosed like get(). A consumer that batches its work takes all at once."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._items or self._closed, timeout=timeout_s):
                return []
            if self._items:
                items = list(self._items)
                self._items.clear()
                return items
            raise QueueClosed("the queue is closed")

    def close(self) -> None:
        """Wake every waiting get(); items still queued can be taken, new ones are dropped."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def clear(self) -> int:
        """Drop everything queued (counted as dropped); returns how many."""
        with self._ready:
            count = len(self._items)
            self._items.clear()
            self._dropped += count
            return count

    @property
    def dropped(self) -> int:
        """Items dropped since the queue was made."""
        with self._ready:
            return self._dropped

    @property
    def accepted(self) -> int:
        """Items put while open (including those dropped later to make room)."""
        with self._ready:
            return self._accepted

    def __len__(self) -> int:
        with self._ready:
            return len(self._items)
