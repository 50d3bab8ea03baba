"""Firmware emulator: streams a data file to a serial port the way a sensor board would.

``stepwise simulate --port URL --input F`` writes every sample of ``F`` (``.npz`` or
``.csv``) in the ``text`` or ``cobs`` protocol, paced by a monotonic clock, with
optional fault injection (dropped samples, corrupted lines/frames, garbage between
them, unplugging the port). ``--pty LINK`` instead creates a pseudo-terminal, the
simulated device, and points the symlink ``LINK`` at its device side, which is what
``stepwise serve --port LINK`` opens: no hardware or socat needed.

``FirmwareSimulator`` is the same as a library class for tests and demos.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from firmware_bridge import cobs
from firmware_bridge.ports import DevicePort, PtyPort, UrlPort
from firmware_bridge.text import TextParser, format_sample
from runtime.datafile import Sequences, read_sequences
from runtime.errors import DataError, FrameError, PortError

log = logging.getLogger("firmware_bridge.simulate")

GREETING = b"# stepwise simulate\n"  # the receiver discards the first line after opening


@dataclass(frozen=True)
class Faults:
    """Fault injection: probabilities per sample, and unplugging every N samples (0: never)."""

    drop: float = 0.0
    corrupt: float = 0.0
    garbage: float = 0.0
    disconnect_after: int = 0
    disconnect_wait: float = 1.0
    seed: Optional[int] = 0


@dataclass
class SimulatorReport:
    """What was written. ``sent`` samples arrived intact on the wire; ``dropped`` were
    never written; ``corrupted`` were written damaged (always rejected by a receiver);
    ``garbage`` lines/frames were written between samples (always rejected)."""

    samples: int = 0
    sent: int = 0
    dropped: int = 0
    corrupted: int = 0
    garbage: int = 0
    resets: int = 0
    announcements: int = 0
    disconnects: int = 0
    replies: int = 0
    elapsed: float = 0.0
    corrupted_by_reason: dict = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{self.samples} samples in {self.elapsed:.2f} s: sent {self.sent}, dropped {self.dropped}, "
                f"corrupted {self.corrupted}, garbage {self.garbage}, resets {self.resets}, "
                f"disconnects {self.disconnects}, replies {self.replies}")


class FirmwareSimulator:
    """Writes ``sequences`` to ``port`` in ``protocol`` (``text`` or ``cobs``).

    ``rate`` is samples per second (0: as fast as the port takes them); sample k is
    due at ``start + k / rate`` so pacing never drifts. ``repeat`` 0 repeats forever.
    """

    def __init__(self, port: DevicePort, sequences: Sequences, *, protocol: str = "text",
                 rate: float = 0.0, header: bool = False, reset_between: bool = True, repeat: int = 1,
                 faults: Faults = Faults(), reader_timeout: Optional[float] = None):
        if protocol not in ("text", "cobs"):
            raise ValueError(f"unknown protocol {protocol!r}: use text or cobs")
        if protocol == "cobs" and sequences.features > cobs.MAX_FEATURES:
            raise DataError(f"cobs carries at most {cobs.MAX_FEATURES} features; the data has {sequences.features}")
        self.port = port
        self.sequences = sequences
        self.protocol = protocol
        self.rate = rate
        self.header = header
        self.reset_between = reset_between
        self.repeat = repeat
        self.faults = faults
        self.reader_timeout = reader_timeout
        self.report = SimulatorReport()
        self.next_seq = 0  # cobs: sequence number of the next frame
        self._rng = random.Random(faults.seed)
        self._checker = TextParser(sequences.feature_names)  # proves garbage is rejected
        self._stop = threading.Event()
        self._closed = threading.Event()
        self._replies = threading.Thread(target=self._drain, name="simulator-replies", daemon=True)

    def stop(self) -> None:
        """Stop streaming (from another thread or a signal handler)."""
        self._stop.set()

    def run(self) -> SimulatorReport:
        """Send everything (or until ``stop()``); returns the report (also ``self.report``).

        Replies (predictions) are read from the port until ``close()``.
        """
        start = time.monotonic()
        if not self._replies.is_alive():
            self._replies.start()
        try:
            self._await_reader()
            self._stream()
            self.port.drain()  # everything written has been read before run() returns
        finally:
            self.report.elapsed = time.monotonic() - start
        return self.report

    def wait_replies(self, quiet: float = 0.2, timeout: float = 2.0) -> int:
        """Wait until no reply arrived for ``quiet`` seconds (at most ``timeout``); the count."""
        deadline = time.monotonic() + timeout
        seen = -1
        while seen != self.report.replies and time.monotonic() < deadline:
            seen = self.report.replies
            self._closed.wait(quiet)
        return self.report.replies

    def close(self) -> None:
        """Stop streaming and reading replies; the port itself belongs to the caller."""
        self._stop.set()
        self._closed.set()
        if self._replies.is_alive():
            self._replies.join(2)

    def __enter__(self) -> "FirmwareSimulator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- streaming

    def _stream(self) -> None:
        clock = _Pacer(self.rate, self._stop)
        rounds = 0
        first = True
        while not self._stop.is_set() and (self.repeat == 0 or rounds < self.repeat):
            for x in self.sequences.X:
                if not first and self.reset_between:
                    self._send(self._reset_bytes())
                    self.report.resets += 1
                first = False
                for row in x:
                    if not clock.wait():
                        return
                    self._sample(row)
                    if self._unplug_due():
                        self._unplug()
                        clock.restart()
            rounds += 1

    def _sample(self, row: np.ndarray) -> None:
        self.report.samples += 1
        if self._rng.random() < self.faults.garbage:
            self._send(self._garbage())
            self.report.garbage += 1
        if self._rng.random() < self.faults.drop:
            self.report.dropped += 1
            self.next_seq = (self.next_seq + 1) % 65536  # a frame lost on the wire still used its number
            return
        if self._rng.random() < self.faults.corrupt:
            data, reason = self._corrupted(row)
            self._send(data)
            self.report.corrupted += 1
            counts = self.report.corrupted_by_reason
            counts[reason] = counts.get(reason, 0) + 1
            return
        self._send(self._sample_bytes(row))
        self.report.sent += 1

    def _unplug_due(self) -> bool:
        n = self.faults.disconnect_after
        return n > 0 and self.report.samples % n == 0

    def _unplug(self) -> None:
        log.info("unplugging the port for %.2f s after %d samples", self.faults.disconnect_wait, self.report.samples)
        self.port.drain()  # the board finishes sending before it is unplugged: nothing in flight is lost
        self.port.disconnect()
        self.report.disconnects += 1
        self._stop.wait(self.faults.disconnect_wait)
        self.port.reconnect()
        self._await_reader()

    def _await_reader(self) -> None:
        """Wait for the receiving side to open the port, then (re)introduce the device."""
        if not self.port.wait_reader(self.reader_timeout, self._stop):
            raise PortError(f"nobody opened {self.port.name} within {self.reader_timeout} s")
        self._announce()

    def _announce(self) -> None:
        if self.protocol == "text":
            data = GREETING
            if self.header:
                data += (",".join(self.sequences.feature_names) + "\n").encode("utf-8")
        else:
            data = cobs.DELIMITER + self._frame(cobs.HELLO, cobs.hello_payload(features=self.sequences.features))
        self.port.write(data)
        self.report.announcements += 1

    def _send(self, data: bytes) -> None:
        if not self.port.reader_present():
            log.info("the receiver closed %s: waiting for it to come back", self.port.name)
            self._await_reader()
        self.port.write(data)

    # ---------------------------------------------------------------- bytes

    def _frame(self, type_: int, payload: bytes = b"") -> bytes:
        data = cobs.encode_frame(type_, self.next_seq, payload)
        self.next_seq = (self.next_seq + 1) % 65536
        return data

    def _sample_bytes(self, row: np.ndarray) -> bytes:
        if self.protocol == "text":
            return format_sample(row)
        return self._frame(cobs.SAMPLE, cobs.sample_payload(row))

    def _reset_bytes(self) -> bytes:
        return b"#reset\n" if self.protocol == "text" else self._frame(cobs.RESET)

    def _corrupted(self, row: np.ndarray) -> tuple[bytes, str]:
        """A sample damaged so that any receiver rejects it; returns (bytes, reason)."""
        if self.protocol == "cobs":
            body = bytearray(cobs.encode_body(cobs.SAMPLE, self.next_seq, cobs.sample_payload(row)))
            self.next_seq = (self.next_seq + 1) % 65536
            body[self._rng.randrange(len(body))] ^= 1 << self._rng.randrange(8)  # CRC-16 catches any 1-bit error
            return cobs.cobs_encode(bytes(body)) + cobs.DELIMITER, "crc"
        tokens = format_sample(row).decode("ascii").strip().split(",")
        reason = self._rng.choice(("not_numeric", "field_count", "non_finite"))
        i = self._rng.randrange(len(tokens))
        if reason == "not_numeric":
            tokens[i] += "x"
        elif reason == "field_count":
            tokens.append("0")
        else:
            tokens[i] = "nan"
        return (",".join(tokens) + "\n").encode("ascii"), reason

    def _garbage(self) -> bytes:
        """Random bytes (noise, or text/COBS-shaped junk) forming one line/frame every receiver rejects."""
        rng = self._rng
        while True:
            if self.protocol == "cobs":
                data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
                data = cobs.cobs_encode(data) if rng.random() < 0.5 else data.replace(b"\x00", b"\x01")
                try:
                    cobs.decode_packet(data, self.sequences.features)
                except FrameError:
                    return data + cobs.DELIMITER
            else:
                alphabet = _PRINTABLE if rng.random() < 0.5 else _NOT_NEWLINE
                data = bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 60)))
                try:
                    self._checker.parse_line(data)
                except FrameError:
                    return data + b"\n"

    def _drain(self) -> None:
        """Read what the receiver sends back (predictions) so its writes never block."""
        decoder = cobs.FrameDecoder(max_frame=cobs.MAX_ENCODED)
        pending = b""
        while not self._closed.is_set():
            data = self.port.read(0.1)
            if not data:
                continue
            if self.protocol == "cobs":
                self.report.replies += sum(
                    1 for f in decoder.feed(data) if isinstance(f, cobs.Frame) and f.type == cobs.PREDICTION)
            else:
                *lines, pending = (pending + data).split(b"\n")
                pending = pending[-4096:]
                self.report.replies += sum(1 for line in lines if line.startswith(b"p="))


_NOT_NEWLINE = [b for b in range(256) if b != 0x0A]
_PRINTABLE = list(b"0123456789.,:+-eE \tabcxyz_nanif#")


class _Pacer:
    """Sample k is due at ``start + k / rate`` (monotonic clock, no drift accumulation)."""

    def __init__(self, rate: float, stop: threading.Event):
        self.rate = rate
        self.stop = stop
        self.restart()

    def restart(self) -> None:
        self.start = time.monotonic()
        self.k = 0

    def wait(self) -> bool:
        """Sleep until the next sample is due; False if stopped meanwhile."""
        if self.rate > 0:
            delay = self.start + self.k / self.rate - time.monotonic()
            if delay > 0 and self.stop.wait(delay):
                return False
        self.k += 1
        return not self.stop.is_set()


# ----------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class SimulateOptions:
    """One ``stepwise simulate`` run: exactly one of ``url`` (pyserial URL or device path)
    and ``pty_link`` (a pseudo-terminal behind that symlink)."""

    input_path: Path
    url: Optional[str] = None
    pty_link: Optional[str] = None
    baud: int = 115200
    rate: float = 0.0
    protocol: str = "text"
    header: bool = False
    reset_between: bool = True
    repeat: int = 1
    faults: Faults = field(default_factory=Faults)


def run_simulation(opts: SimulateOptions, announce: Callable[[str], None] = log.info) -> SimulatorReport:
    """Stream ``opts.input_path`` to the port until done or ``KeyboardInterrupt``; the
    port is closed either way. ``announce`` gets the one-line messages for the user."""
    sequences = read_sequences(opts.input_path, labels=False)
    port = PtyPort(opts.pty_link) if opts.pty_link else UrlPort(opts.url, opts.baud)
    if opts.pty_link:
        announce(f"simulated device on {port.device}, symlink {opts.pty_link}: waiting for a reader")
    simulator = FirmwareSimulator(port, sequences, protocol=opts.protocol, rate=opts.rate, header=opts.header,
                                  reset_between=opts.reset_between, repeat=opts.repeat, faults=opts.faults)
    try:
        simulator.run()
        if simulator.report.replies:
            simulator.wait_replies()  # the receiver answers: let its last answers arrive
    except KeyboardInterrupt:
        announce("interrupted")
    finally:
        simulator.close()
        port.close()
    return simulator.report
