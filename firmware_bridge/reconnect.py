"""Keeping a serial port open: reader thread supervision, reconnect with backoff.

``PortSupervisor`` owns the port's life: it runs pyserial's ``ReaderThread`` on an
open port, notices when the port goes away (a USB adapter unplugged: the read fails
with ``SerialException``/``OSError`` and the protocol's ``connection_lost`` fires), logs
it, and reopens the port with exponential backoff until it is back. Its problems are
logged through ``runtime.ratelimit.RateLimitedLog`` (one line per interval).
"""
from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import serial
from serial.threaded import Protocol, ReaderThread

from runtime.ratelimit import RateLimitedLog

log = logging.getLogger("firmware_bridge.link")

# What opening or using a port raises: SerialException (an OSError), OSError, and
# ValueError for a malformed URL or setting.
PORT_ERRORS = (serial.SerialException, OSError, ValueError)


@dataclass(frozen=True)
class Backoff:
    """Reopen delays: ``initial``, then times ``factor`` per failure, capped at ``maximum``."""

    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.maximum and self.factor >= 1):
            raise ValueError(f"backoff needs 0 < initial <= maximum and factor >= 1, got {self}")

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay
            delay = min(delay * self.factor, self.maximum)


class _ReaderThread(ReaderThread):
    """pyserial's ``ReaderThread``, also ending through ``connection_lost`` on ``OSError``.

    pyserial 3.5 evaluates ``in_waiting`` (an ioctl) where only ``SerialException`` is
    caught; on Linux a vanished tty raises ``OSError`` (EIO) there, which would end the
    thread without telling the protocol.
    """

    def run(self) -> None:
        if not hasattr(self.serial, "cancel_read"):
            self.serial.timeout = 1
        self.protocol = self.protocol_factory()
        try:
            self.protocol.connection_made(self)
        except Exception as e:
            self.alive = False
            self.protocol.connection_lost(e)
            self._connection_made.set()
            return
        error = None
        self._connection_made.set()
        while self.alive and self.serial.is_open:
            try:
                data = self.serial.read(self.serial.in_waiting or 1)
            except (serial.SerialException, OSError) as e:  # the port went away
                error = e
                break
            if data:
                try:
                    self.protocol.data_received(data)
                except Exception as e:  # a bug in the protocol: reported, kept apart
                    error = e
                    break
        self.alive = False
        self.protocol.connection_lost(error)
        self.protocol = None


ProtocolFactory = Callable[[Callable[[Optional[BaseException]], None]], Protocol]


class PortSupervisor(threading.Thread):
    """Runs a ``ReaderThread`` on the port and reopens the port whenever it is lost.

    ``opener()`` returns an open pyserial port or raises one of ``PORT_ERRORS``.
    ``make_protocol(on_lost)`` builds a fresh protocol per connection; the protocol
    must call ``on_lost(exc)`` from its ``connection_lost``. ``port`` is an already
    open port for the first connection (or ``None`` to open in the thread).
    """

    def __init__(self, label: str, opener: Callable[[], serial.SerialBase], make_protocol: ProtocolFactory,
                 *, port: Optional[serial.SerialBase] = None, backoff: Backoff = Backoff(),
                 limiter: Optional[RateLimitedLog] = None,
                 on_connect: Callable[[bool], None] = lambda reconnect: None,
                 on_disconnect: Callable[[], None] = lambda: None):
        super().__init__(name=f"serial-supervisor {label}", daemon=True)
        self.label = label
        self.opener = opener
        self.make_protocol = make_protocol
        self.backoff = backoff
        self.limiter = limiter or RateLimitedLog(log)
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self._port = port
        self._reader: Optional[ReaderThread] = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._state = threading.Condition()
        self._connected = False
        self._lost_error: Optional[BaseException] = None
        self._ever_connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    def wait_state(self, connected: bool, timeout: Optional[float] = None) -> bool:
        """Wait until the port is (``connected=True``) or is not connected; False on timeout."""
        with self._state:
            return self._state.wait_for(lambda: self._connected == connected, timeout)

    def _set_connected(self, connected: bool) -> None:
        with self._state:
            self._connected = connected
            self._state.notify_all()

    def write(self, data: bytes) -> None:
        """Write to the current port (thread-safe); raises ``PORT_ERRORS`` or ``ConnectionError``."""
        with self._lock:
            reader = self._reader
        if reader is None or not reader.alive:
            raise ConnectionError(f"serial port {self.label} is not connected")
        reader.write(data)

    def stop(self, timeout: float = 5.0) -> None:
        """Close the port and end the thread."""
        self._stopping.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)
        elif self._port is not None:  # never started: close the port handed to us
            self._port.close()

    def run(self) -> None:
        delays = self.backoff.delays()
        while not self._stopping.is_set():
            port, self._port = self._port, None
            if port is None:
                port = self._try_open()
            if port is None:
                self._stopping.wait(next(delays))
                continue
            delays = self.backoff.delays()
            self._serve(port)

    def _try_open(self) -> Optional[serial.SerialBase]:
        try:
            return self.opener()
        except PORT_ERRORS as e:
            self.limiter.warning("open", "serial port %s cannot be opened (%s); retrying", self.label, e)
            return None

    def _on_lost(self, exc: Optional[BaseException]) -> None:
        self._lost_error = exc
        self._wake.set()

    def _serve(self, port: serial.SerialBase) -> None:
        """Read from ``port`` until it is lost or ``stop()``; then close it."""
        self._wake.clear()
        self._lost_error = None
        reader = _ReaderThread(port, functools.partial(self.make_protocol, self._on_lost))
        reader.start()
        with self._lock:
            self._reader = reader
        if self._ever_connected:
            log.info("serial port %s is back: reading again", self.label)
        self.on_connect(self._ever_connected)
        self._ever_connected = True
        self._set_connected(True)
        while not self._stopping.is_set() and not self._wake.wait(0.5):
            if not reader.is_alive():  # died without connection_lost (should not happen)
                break
        with self._lock:
            self._reader = None
        reader.close()
        if not self._stopping.is_set():
            self.on_disconnect()
            log.warning("serial port %s lost (%s); reopening with backoff up to %.1f s",
                        self.label, self._lost_error or "reader stopped", self.backoff.maximum)
        self._set_connected(False)
