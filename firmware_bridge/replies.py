"""Replies to the device written off the consumer's thread, through a bounded queue.

A board that never reads its replies fills the serial driver's output buffer; from then
on every write waits for the port's write timeout. ``ReplyWriter`` takes that wait off
the thread that hands the replies in: ``put`` never blocks, one writer thread sends the
queued replies in order, and a reply that finds the queue full (``maxsize``) is dropped
and counted. Samples keep being read and stepped at full speed; only replies are lost.
"""
from __future__ import annotations

import collections
import logging
import threading
from typing import Callable, Optional

from runtime.ratelimit import RateLimitedLog

log = logging.getLogger("firmware_bridge.link")


class ReplyWriter(threading.Thread):
    """Sends queued replies with ``send(data)``, which may block or raise ``errors``.

    ``count(key)`` is told ``writes`` per reply sent, ``write_errors`` per failed send and
    ``replies_dropped`` per reply that found no room.
    """

    def __init__(self, send: Callable[[bytes], None], errors: tuple[type[BaseException], ...],
                 count: Callable[[str], None], limiter: RateLimitedLog, label: str, maxsize: int = 256):
        super().__init__(name=f"replies {label}", daemon=True)
        if maxsize < 1:
            raise ValueError(f"the reply queue needs room for at least 1 reply, got {maxsize}")
        self.send, self.errors, self.count = send, errors, count
        self.limiter, self.label, self.maxsize = limiter, label, maxsize
        self._queue: collections.deque[bytes] = collections.deque()
        self._ready = threading.Condition()
        self._stopping = False

    def put(self, data: bytes) -> bool:
        """Queue one reply; ``False`` (counted, logged) when the queue is full."""
        with self._ready:
            if len(self._queue) < self.maxsize:
                self._queue.append(data)
                self._ready.notify()
                return True
        self.count("replies_dropped")
        self.limiter.warning("replies_dropped", "reply queue to %s full (%d): the device is not reading "
                             "its replies; replies dropped", self.label, self.maxsize)
        return False

    @property
    def pending(self) -> int:
        with self._ready:
            return len(self._queue)

    def stop(self, timeout: float = 2.0) -> None:
        """End the thread; replies still queued are dropped (and counted)."""
        with self._ready:
            self._stopping = True
            left = len(self._queue)
            self._queue.clear()
            self._ready.notify()
        for _ in range(left):
            self.count("replies_dropped")
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        while (data := self._next()) is not None:
            try:
                self.send(data)
            except self.errors as e:
                self.count("write_errors")
                self.limiter.warning("write", "cannot write to %s: %s", self.label, e)
            else:
                self.count("writes")

    def _next(self) -> Optional[bytes]:
        with self._ready:
            while not self._queue and not self._stopping:
                self._ready.wait()
            return None if self._stopping else self._queue.popleft()
