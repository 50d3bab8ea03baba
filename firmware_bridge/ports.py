"""Serial ports: listing the real ones, and the device end the simulator writes to.

- ``stepwise ports``: pyserial's ``list_ports`` (device, description, VID:PID, serial
  number, manufacturer), as a table or ``--json``.
- ``PtyPort``: a pseudo-terminal acting as a plugged-in board. The simulator writes to
  its master side; a symlink (``link``) points at its device side, which is what a
  reader opens like any serial device. Unplugging closes the master (the reader's
  next read fails, like a USB adapter pulled out) and removes the symlink;
  plugging back creates a new pseudo-terminal behind the same symlink.
- ``UrlPort``: the simulator's side of an ordinary pyserial URL (``socket://``,
  a device path wired to a real board, ...).
"""
from __future__ import annotations

import fcntl
import logging
import os
import select
import struct
import termios
import threading
import time
import tty
from pathlib import Path
from typing import Optional, Protocol

import serial
from serial.tools import list_ports

from runtime.errors import PortError

log = logging.getLogger("firmware_bridge.ports")

SETTLE = 0.2  # seconds between a reader opening the port and the first byte sent


class DevicePort(Protocol):
    """What the simulator writes to (``PtyPort`` or ``UrlPort``)."""

    name: str

    def write(self, data: bytes) -> None: ...
    def read(self, timeout: float) -> bytes: ...
    def reader_present(self) -> bool: ...
    def wait_reader(self, timeout: Optional[float], stop: threading.Event) -> bool: ...
    def drain(self, timeout: float = 5.0) -> bool: ...
    def disconnect(self) -> None: ...
    def reconnect(self) -> None: ...
    def close(self) -> None: ...


class PtyPort:
    """A simulated board behind the symlink ``link`` (see the module docstring)."""

    def __init__(self, link: str | os.PathLike, settle: float = SETTLE):
        self.link = Path(link)
        self.name = str(self.link)
        self.settle = settle
        self.device = ""
        self._master: Optional[int] = None
        self._lock = threading.Lock()
        self.reconnect()

    def reconnect(self) -> None:
        """Plug in: a new pseudo-terminal behind the symlink."""
        with self._lock:
            if self._master is not None:
                return
            master, slave = os.openpty()
            tty.setraw(slave)  # binary-clean: no echo, no CR/LF translation, no flow control
            self.device = os.ttyname(slave)
            os.close(slave)
            os.set_blocking(master, False)
            try:
                _point_symlink(self.link, self.device)
            except BaseException:
                os.close(master)
                raise
            self._master = master
        log.info("simulated device %s -> %s", self.link, self.device)

    def disconnect(self) -> None:
        """Unplug: the reader's port fails; the symlink disappears until ``reconnect``."""
        with self._lock:
            if self._master is None:
                return
            os.close(self._master)
            self._master = None
            if self.link.is_symlink() and os.readlink(self.link) == self.device:
                self.link.unlink()

    close = disconnect

    def _poll(self, events: int, timeout: float) -> int:
        poller = select.poll()
        poller.register(self._master, events)
        ready = poller.poll(timeout * 1000)
        return ready[0][1] if ready else 0

    def reader_present(self) -> bool:
        """True while the device side is open (a pseudo-terminal master sees POLLHUP otherwise)."""
        return self._master is not None and not self._poll(select.POLLOUT, 0) & select.POLLHUP

    def wait_reader(self, timeout: Optional[float], stop: threading.Event) -> bool:
        """Wait until a reader opens the device side (then ``settle``); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.reader_present():
            if stop.is_set():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            stop.wait(0.02)
        stop.wait(self.settle)  # the reader flushes its input right after opening
        return True

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until the reader has taken everything written; False if it left or on timeout.

        Closing the master discards what the reader has not read yet, so the simulator
        drains before unplugging. The device side's input queue must stay empty for
        three checks in a row (bytes still on their way into it show up within them).
        """
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 3:
            if not self.reader_present() or time.monotonic() > deadline:
                return False
            quiet = quiet + 1 if self._pending() == 0 else 0
            time.sleep(0.02)
        return True

    def _pending(self) -> int:
        """Bytes waiting in the device side's input queue."""
        try:
            fd = os.open(self.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            return 0
        try:
            return struct.unpack("I", fcntl.ioctl(fd, termios.TIOCINQ, b"\0" * 4))[0]
        finally:
            os.close(fd)

    def write(self, data: bytes) -> None:
        """Write all of ``data``; waits while the reader lags, gives up if the reader leaves."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._master, view):]
            except BlockingIOError:
                if self._poll(select.POLLOUT, 0.1) & select.POLLHUP:
                    log.warning("the reader of %s left mid-write: %d byte(s) lost", self.name, len(view))
                    return

    def read(self, timeout: float) -> bytes:
        """What the reader sent back, or ``b""`` after ``timeout``."""
        with self._lock:
            if self._master is not None:
                events = self._poll(select.POLLIN, timeout)
                if events & select.POLLIN:
                    try:
                        return os.read(self._master, 4096)
                    except OSError:  # EIO: the reader closed the device side
                        pass
                if not events:
                    return b""
        time.sleep(timeout)
        return b""


class UrlPort:
    """The simulator's end of a pyserial URL; unplugging closes and reopens it."""

    def __init__(self, url: str, baudrate: int = 115200, reopen_timeout: float = 10.0):
        self.url = self.name = url
        self.baudrate = baudrate
        self.reopen_timeout = reopen_timeout
        self._lock = threading.Lock()
        self._serial: Optional[serial.SerialBase] = None
        self.reconnect()

    def reconnect(self) -> None:
        deadline = time.monotonic() + self.reopen_timeout
        while True:
            try:
                port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0.1)
                break
            except (serial.SerialException, OSError, ValueError) as e:
                if time.monotonic() >= deadline:
                    raise PortError(f"cannot open serial port {self.url}: {e}") from None
                time.sleep(0.1)
        with self._lock:
            self._serial = port

    def disconnect(self) -> None:
        with self._lock:
            if self._serial is not None:
                self._serial.close()
                self._serial = None

    close = disconnect

    def reader_present(self) -> bool:
        return True

    def wait_reader(self, timeout: Optional[float], stop: threading.Event) -> bool:
        return True

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until the port has sent everything written."""
        if self._serial is not None:
            self._serial.flush()
        return True

    def write(self, data: bytes) -> None:
        if self._serial is None:
            raise PortError(f"cannot write to {self.url}: it is unplugged")
        try:
            self._serial.write(data)
        except (serial.SerialException, OSError) as e:
            raise PortError(f"cannot write to {self.url}: {e}") from None

    def read(self, timeout: float) -> bytes:
        with self._lock:
            if self._serial is not None:
                try:
                    return self._serial.read(self._serial.in_waiting or 1)
                except (serial.SerialException, OSError):
                    pass
        time.sleep(timeout)
        return b""


def _point_symlink(link: Path, target: str) -> None:
    """Make ``link`` a symlink to ``target`` atomically; never replaces a non-symlink."""
    if os.path.lexists(link) and not link.is_symlink():
        raise PortError(f"{link} exists and is not a symlink: refusing to replace it")
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    if os.path.lexists(tmp):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


# ----------------------------------------------------------------------------- listing


def list_serial_ports() -> list[dict]:
    """Every serial port pyserial finds: device, description, vid_pid, serial_number, manufacturer."""
    rows = []
    for p in sorted(list_ports.comports(), key=lambda p: p.device):
        vid_pid = f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None and p.pid is not None else ""
        rows.append({
            "device": p.device,
            "description": p.description if p.description != "n/a" else "",
            "vid_pid": vid_pid,
            "serial_number": p.serial_number or "",
            "manufacturer": p.manufacturer or "",
        })
    return rows


def format_port_table(rows: list[dict]) -> list[str]:
    """``list_serial_ports()`` rows as the lines of an aligned table, titles first."""
    columns = ("device", "description", "vid_pid", "serial_number", "manufacturer")
    titles = ("DEVICE", "DESCRIPTION", "VID:PID", "SERIAL", "MANUFACTURER")
    widths = [max(len(t), *(len(r[c]) for r in rows)) for c, t in zip(columns, titles)]
    return ["  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()
            for values in [titles] + [tuple(r[c] for c in columns) for r in rows]]
