"""A private Mosquitto broker for tests, demos and benchmarks.

``LocalBroker().start()`` writes a generated configuration (loopback listener, anonymous
clients, no persistence) into a temporary folder, starts ``mosquitto -c`` on a free port
and waits until it accepts connections. ``stop``/``start`` again reuse the same port, so
clients that reconnect find the broker where it was. Never a fixed port: several
brokers (and test runs) can share one machine.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from runtime.errors import ConfigError

log = logging.getLogger(__name__)

SEARCH = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str | None:
    """The mosquitto executable (PATH, then Debian's /usr/sbin), or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in SEARCH if os.access(p, os.X_OK)), None)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalBroker:
    """One mosquitto process on ``host``; ``port`` is chosen at the first ``start``."""

    def __init__(self, host: str = "127.0.0.1", executable: str | None = None,
                 max_queued: int = 100_000):
        self.host = host
        self.executable = executable or find_mosquitto()
        if self.executable is None:
            raise ConfigError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        self.port: int | None = None
        self.max_queued = max_queued
        self._dir = Path(tempfile.mkdtemp(prefix="stepwise-broker-"))
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _config(self) -> Path:
        conf = self._dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "set_tcp_nodelay true\n"
            f"max_queued_messages {self.max_queued}\n"
            "max_inflight_messages 0\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n")
        return conf

    def start(self, timeout: float = 10.0) -> "LocalBroker":
        """Start (or restart on the same port); ``ConfigError`` if it does not come up."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        restart = self.port is not None  # a restart keeps its port: clients come back to it
        for attempt in range(1 if restart else 5):  # a fresh port can be taken before bind
            if not restart:
                self.port = free_port(self.host)
            log_file = open(self._dir / "broker.log", "ab")
            self._proc = subprocess.Popen([self.executable, "-c", str(self._config())],
                                          stdout=log_file, stderr=log_file,
                                          stdin=subprocess.DEVNULL)
            log_file.close()
            if self._wait_listening(timeout):
                log.info("mosquitto %d listening on %s", self._proc.pid, self.url)
                return self
            self._kill()
        raise ConfigError(f"mosquitto did not start; see {self._dir / 'broker.log'}")

    def _wait_listening(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; the port is kept for the next ``start``."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._kill()
        self._proc = None

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
