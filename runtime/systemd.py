"""systemd's notify protocol (sd_notify), without libsystemd.

``Notifier`` sends ``READY=1``, ``WATCHDOG=1``, ``STATUS=...`` and ``STOPPING=1`` as
datagrams to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace). With
no socket (not started by systemd) every call is a no-op. ``watchdog_due`` paces the
keep-alive at half of ``$WATCHDOG_USEC``; the daemon calls it from its processing loop,
so a stuck loop stops the pings and systemd restarts the service.

``state_directory()`` is where state lives by default: systemd's ``StateDirectory=``.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)


def state_directory(environ: dict[str, str] | None = None) -> Path:
    """``$STATE_DIRECTORY`` (set by systemd's ``StateDirectory=``; its first entry) or ./state."""
    env = os.environ if environ is None else environ
    return Path(env.get("STATE_DIRECTORY", "").split(":")[0] or "state")


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None, clock=time.monotonic):
        env = os.environ if environ is None else environ
        self._address = env.get("NOTIFY_SOCKET") or None
        if self._address and self._address.startswith("@"):
            self._address = "\0" + self._address[1:]
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        mine = pid is None or pid == str(os.getpid())
        self.watchdog_interval = int(usec) / 2e6 if usec and usec.isdigit() and mine else None
        self._clock = clock
        self._last_ping = -1e18
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *fields: str) -> bool:
        if not self._address:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode(), self._address)
            return True
        except OSError as e:
            log.warning("sd_notify to %r failed: %s", self._address, e)
            return False

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog_due(self) -> None:
        """Ping the watchdog if half its interval has passed since the last ping."""
        if self.watchdog_interval is None:
            return
        now = self._clock()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
