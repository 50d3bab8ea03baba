"""The bounded queue between the serial reader thread and the consumer.

The reader thread parses everything one read returned and hands the events over in one
``put_many``; the consumer takes everything waiting (up to a limit) in one ``get_many``.
At tens of thousands of samples per second that is one lock round trip per batch, not
per sample. The bound is in events, whatever the batches.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Generic, Optional, Sequence, TypeVar

T = TypeVar("T")


class EventQueue(Generic[T]):
    """A FIFO holding at most ``maxsize`` items, for one producer and one consumer thread."""

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self._items: collections.deque[T] = collections.deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def put_many(self, items: Sequence[T], timeout: float = 0.0) -> int:
        """Append ``items`` in order while there is room, waiting at most ``timeout``
        seconds in all for room; returns how many were taken (the first ones)."""
        taken, n = 0, len(items)
        deadline = None
        with self._lock:
            while taken < n:
                room = self.maxsize - len(self._items)
                if room > 0:
                    self._items.extend(items[taken:taken + room])
                    taken += min(room, n - taken)
                    self._not_empty.notify()
                    continue
                if deadline is None:
                    deadline = time.monotonic() + timeout
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._not_full.wait(remaining)
        return taken

    def get_many(self, limit: int, timeout: Optional[float] = None) -> list[T]:
        """Up to ``limit`` items, oldest first, waiting at most ``timeout`` seconds (None:
        forever) for the first one; an empty list when none came."""
        with self._lock:
            if not self._items:
                if timeout is not None and timeout <= 0:
                    return []
                self._not_empty.wait_for(lambda: self._items, timeout)
            items = self._items
            if len(items) <= limit:
                out = list(items)
                items.clear()
            else:
                out = [items.popleft() for _ in range(limit)]
            if out:
                self._not_full.notify()
            return out
