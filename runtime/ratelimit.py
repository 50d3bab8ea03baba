"""At most one log line per key per interval, the rest counted (floods of one problem).

Used wherever untrusted input or a failing resource can repeat the same problem many
times a second: rejected lines, a full disk, a port that will not open.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable


class RateLimitedLog:
    """At most one log line per ``key`` per ``interval`` seconds; the rest are counted.

    The next line for a key says how many were suppressed since the previous one.
    Thread-safe; ``clock`` is injectable for tests.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, key: str, message: str, *args) -> bool:
        """Log ``message % args`` unless ``key`` was logged less than ``interval`` ago."""
        with self._lock:
            now = self.clock()
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            suppressed = self._suppressed.pop(key, 0)
            self._last[key] = now
        if suppressed:
            message += " (%d more suppressed in the last %.0f s)"
            args = (*args, suppressed, now - last)
        self.logger.log(level, message, *args)
        return True

    def warning(self, key: str, message: str, *args) -> bool:
        return self.log(logging.WARNING, key, message, *args)

    def error(self, key: str, message: str, *args) -> bool:
        return self.log(logging.ERROR, key, message, *args)
