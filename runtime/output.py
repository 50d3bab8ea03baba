"""Where the daemon's JSON lines go: a file (reopened on SIGHUP) or stdout, failing soft.

Nothing that happens to the output stops the daemon. A write that fails (a full disk,
a file-size limit, a reader that closed the pipe) loses that batch's lines: they are
counted (``lost``), the failure is counted (``errors``) and logged at most once per
``log_interval``, and the next batch tries again. A batch written only in part is cut
back off the file, so the file only ever holds whole lines. A file that cannot be
opened, at start or on a reopen after SIGHUP (its folder moved away, say), is logged and
retried every ``retry_interval`` seconds; meanwhile the file already open, if any, goes
on being written (a rotated log keeps the lines rather than losing them).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from runtime.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


class Output:
    """JSON lines to ``path`` (``None``: stdout); ``errors`` and ``lost`` count the failures."""

    def __init__(self, path: Optional[Path], *, retry_interval: float = 1.0, log_interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.path = path
        self.retry_interval = retry_interval
        self.clock = clock
        self.limiter = RateLimitedLog(log, log_interval, clock)
        self.errors = 0  # failed writes and failed opens
        self.lost = 0  # lines not written
        self._fd: Optional[int] = None
        self._reopen_due: Optional[float] = None  # when to (re)try opening path
        self._failing = False  # the last write failed
        if path is None:
            self.close()  # flush what the stream holds: from here on lines go to its descriptor
        else:
            self._reopen_due = clock()
            self.poll()

    @property
    def healthy(self) -> bool:
        """The last write and the last open both worked."""
        return self._reopen_due is None and not self._failing

    def write_lines(self, lines: list[str]) -> bool:
        """Write whole lines (each ending in a newline) at once; ``False`` if they were lost."""
        self.poll()
        if not lines:
            return True
        data = "".join(lines).encode("utf-8")
        try:
            self._write(data)
        except OSError as e:
            self._failing = True
            self.errors += 1
            self.lost += len(lines)
            self.limiter.error("write", "cannot write to %s: %s; %d line(s) lost so far", self._name, e, self.lost)
            return False
        if self._failing:
            self._failing = False
            log.warning("writing to %s again; %d line(s) were lost", self._name, self.lost)
        return True

    def reopen(self) -> None:
        """Open ``path`` afresh (after log rotation); a failure is retried by ``poll``."""
        if self.path is not None:
            self._reopen_due = self.clock()
            self.poll()

    def poll(self) -> None:
        """Retry a pending open when it is due (call it often: it costs nothing otherwise)."""
        if self._reopen_due is None or self.clock() < self._reopen_due:
            return
        try:
            fd = os.open(self.path, _OPEN_FLAGS, 0o644)
        except OSError as e:
            self.errors += 1
            self._reopen_due = self.clock() + self.retry_interval
            kept = "; still writing to the file open before" if self._fd is not None else ""
            self.limiter.error("open", "cannot open output %s: %s%s (retrying every %.0f s)",
                               self.path, e, kept, self.retry_interval)
            return
        reopened = self._fd is not None
        self._close_fd()
        self._fd, self._reopen_due = fd, None
        log.info("output %s %s", self.path, "reopened" if reopened else "open")

    def close(self) -> None:
        if self.path is None:
            try:
                sys.stdout.flush()
            except (OSError, ValueError):
                pass
        self._close_fd()

    @property
    def _name(self) -> str:
        return "stdout" if self.path is None else str(self.path)

    def _write(self, data: bytes) -> None:
        if self.path is None:
            _write_stdout(data)
        elif self._fd is None:
            raise FileNotFoundError(f"output {self.path} is not open")
        else:
            _write_whole(self._fd, data)

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError as e:  # e.g. a delayed write error reported at close
                self.limiter.error("close", "closing output %s: %s", self.path, e)
            self._fd = None


def _write_whole(fd: int, data: bytes) -> None:
    """All of ``data`` at the end of the file, or nothing (a partial write is cut back)."""
    try:
        start: Optional[int] = os.lseek(fd, 0, os.SEEK_END)
    except OSError:  # a pipe or a device: nothing to cut back
        start = None
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        if start is not None and len(view) < len(data):
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
        raise


def _write_stdout(data: bytes) -> None:
    """To the process's stdout: its file descriptor when it has one, else the stream."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # io.UnsupportedOperation is an OSError
        sys.stdout.write(data.decode("utf-8"))
        sys.stdout.flush()
        return
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
