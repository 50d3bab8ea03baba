"""The serial link: samples from the device in, predictions back (docs/PROTOCOL.md).

``Link.open(url, protocol, baudrate, feature_names=...)`` opens a pyserial URL (a device
path, ``loop://``, ``socket://host:port``, ``spy://...``) and reads it in pyserial's
``ReaderThread`` with one protocol per wire format:

- ``text``: ``TextLineProtocol``, a ``Packetizer`` with ``TERMINATOR = b"\\n"`` whose
  buffer is capped (``line_too_long``); the first, possibly partial, line of every
  connection is discarded; lines are parsed by ``firmware_bridge.text.TextParser``.
- ``cobs``: ``CobsFrameProtocol``, a ``Packetizer`` with ``TERMINATOR = b"\\x00"``
  decoding through ``firmware_bridge.cobs.FrameDecoder`` (capped too); a HELLO must
  match the feature count, sequence gaps are counted as ``dropped``.

Accepted ``Sample`` and ``Reset`` events go into a bounded queue
(``firmware_bridge.event_queue.EventQueue``), everything one read of the port returned in one
batch, read with ``Link.get(timeout)`` or ``Link.get_many(limit, timeout)``. When the
queue stays full for ``put_timeout`` seconds the new events are dropped and counted as
``overflow``: the reader thread never blocks for
long, so the port keeps being drained and a slow consumer costs samples, not a stall.
Rejected lines and frames are counted by reason and logged at most once per
``log_interval`` per reason. When the port goes away the link logs it and reopens it
with backoff (``firmware_bridge.reconnect``); ``connected`` and the ``reconnects``
counter show the state. Predictions go back through a bounded reply queue written by
its own thread (``firmware_bridge.replies``): a device that never reads them costs
replies (``replies_dropped``), never the pace of the samples.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Callable, Optional, Sequence

import numpy as np
import serial
from serial.threaded import Packetizer

from firmware_bridge import cobs
from firmware_bridge.event_queue import EventQueue
from firmware_bridge.reconnect import PORT_ERRORS, Backoff, PortSupervisor
from firmware_bridge.replies import ReplyWriter
from firmware_bridge.text import MAX_LINE, Comment, Header, TextParser, format_prediction
from runtime.errors import FrameError, PortError
from runtime.events import Reset, Sample, SourceEvent
from runtime.ratelimit import RateLimitedLog

log = logging.getLogger("firmware_bridge.link")

PROTOCOLS = ("text", "cobs")
LinkEvent = SourceEvent

__all__ = ["Link", "LinkCounters", "LinkEvent", "Sample", "Reset", "PROTOCOLS"]


class LinkCounters:
    """Thread-safe counters of one link (the reader thread adds, anyone reads).

    Keys: ``samples``, ``resets`` (delivered to the queue), ``overflow`` (dropped:
    queue full), ``dropped`` (cobs sequence gaps), ``hellos``, ``disconnects``,
    ``reconnects``, ``writes``, ``write_errors``, ``replies_dropped`` (reply queue full);
    rejections by reason in ``rejected``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def reject(self, reason: str) -> None:
        with self._lock:
            self._rejected[reason] += 1

    def __getitem__(self, key: str) -> int:
        with self._lock:
            return self._counts[key]

    @property
    def rejected(self) -> dict[str, int]:
        with self._lock:
            return dict(self._rejected)

    def snapshot(self) -> dict:
        """A plain dict (JSON-ready) of every counter."""
        with self._lock:
            out = dict(self._counts)
            out["rejected"] = dict(self._rejected)
        return out


class _Delivery:
    """Where the protocols put what they accept and report what they reject."""

    def __init__(self, events: EventQueue, counters: LinkCounters, limiter: RateLimitedLog,
                 put_timeout: float):
        self.events = events
        self.counters = counters
        self.limiter = limiter
        self.put_timeout = put_timeout

    def deliver(self, events: list[LinkEvent]) -> None:
        """Queue the events of one read, in order; those that find no room are dropped."""
        if not events:
            return
        taken = self.events.put_many(events, self.put_timeout)
        samples = sum(type(e) is Sample for e in events[:taken])
        if samples:
            self.counters.add("samples", samples)
        if taken > samples:
            self.counters.add("resets", taken - samples)
        if taken < len(events):
            self.counters.add("overflow", len(events) - taken)
            self.limiter.warning("overflow", "event queue full (%d): %d event(s) dropped; the "
                                 "consumer is too slow", self.events.maxsize, len(events) - taken)

    def reject(self, error: FrameError) -> None:
        self.counters.reject(error.reason)
        self.limiter.warning(f"reject:{error.reason}", "rejected: %s", error)

    def dropped(self, lost: int, seq: int) -> None:
        self.counters.add("dropped", lost)
        self.limiter.warning("dropped", "%d frame(s) lost before seq %d", lost, seq)


class _LinkProtocol(Packetizer):
    """Reports the end of the connection to the supervisor instead of raising."""

    def __init__(self, delivery: _Delivery, on_lost: Callable[[Optional[BaseException]], None]):
        super().__init__()
        self.delivery = delivery
        self.on_lost = on_lost

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.transport = None
        if exc is not None and not isinstance(exc, PORT_ERRORS):
            log.error("serial reader failed: %r", exc, exc_info=exc)
        self.on_lost(exc)


class TextLineProtocol(_LinkProtocol):
    """Text lines: ``\\n`` or ``\\r\\n``; buffer capped at ``max_line``; first line dropped."""

    TERMINATOR = b"\n"

    def __init__(self, parser: TextParser, delivery: _Delivery, on_lost, max_line: int = MAX_LINE):
        super().__init__(delivery, on_lost)
        self.parser = parser
        self.max_line = max_line
        self.first = True  # the first line of a connection may be partial: discarded
        self.skipping = False  # inside an over-long line, up to its "\n"

    def data_received(self, data: bytes) -> None:
        self.buffer.extend(data)
        received = time.monotonic()
        batch: list[LinkEvent] = []
        start = 0
        while (end := self.buffer.find(self.TERMINATOR, start)) >= 0:
            event = self._line(bytes(self.buffer[start:end]), received)
            if event is not None:
                batch.append(event)
            start = end + 1
        del self.buffer[:start]
        self.delivery.deliver(batch)
        if len(self.buffer) > self.max_line + 1:  # +1: room for a "\r" before the "\n"
            self._overlong()

    def _overlong(self) -> None:
        if self.first:
            self.first = False  # it is the discarded first line
        elif not self.skipping:
            self.delivery.reject(FrameError("line_too_long", f"over {self.max_line} bytes without a newline"))
        self.buffer.clear()
        self.skipping = True

    def _line(self, line: bytes, received: float) -> Optional[LinkEvent]:
        if self.skipping:
            self.skipping = False  # the tail of an over-long line, already counted
        elif self.first:
            self.first = False
            log.debug("discarded the first line after opening: %r", line[:80])
        else:
            return self.event_of(line, received)
        return None

    def handle_packet(self, packet: bytes) -> None:
        """One line (``Packetizer`` API; ``data_received`` batches whole reads)."""
        event = self.event_of(bytes(packet), time.monotonic())
        self.delivery.deliver([] if event is None else [event])

    def event_of(self, line: bytes, received: float) -> Optional[LinkEvent]:
        """The line's ``Sample`` or ``Reset``; ``None`` for anything else (a rejected
        line is counted and logged here)."""
        try:
            event = self.parser.parse_line(line, received)
        except FrameError as e:
            self.delivery.reject(e)
            return None
        if isinstance(event, (Sample, Reset)):
            return event
        if isinstance(event, Header):
            log.info("header line: columns are %s", ", ".join(event.names))
        elif isinstance(event, Comment):
            log.debug("device comment: %s", event.text)
        return None


class CobsFrameProtocol(_LinkProtocol):
    """COBS frames delimited by ``0x00`` (``cobs.FrameDecoder`` buffers, caps, decodes)."""

    TERMINATOR = cobs.DELIMITER

    def __init__(self, feature_count: int, delivery: _Delivery, on_lost):
        super().__init__(delivery, on_lost)
        self.feature_count = feature_count
        self.decoder = cobs.FrameDecoder(feature_count=feature_count)
        self.tracker = cobs.SequenceTracker()  # per connection: the device may have rebooted
        self.hello_ok = True  # until a HELLO with another feature count arrives

    def data_received(self, data: bytes) -> None:
        received = time.monotonic()
        batch: list[LinkEvent] = []
        for item in self.decoder.feed(data):
            if isinstance(item, FrameError):
                self.delivery.reject(item)
            elif (event := self.event_of(item, received)) is not None:
                batch.append(event)
        self.delivery.deliver(batch)

    def handle_packet(self, packet: bytes) -> None:
        """One packet between delimiters (``Packetizer`` API; ``data_received`` batches)."""
        self.data_received(bytes(packet) + self.TERMINATOR)

    def event_of(self, frame: cobs.Frame, received: float) -> Optional[LinkEvent]:
        """The frame's ``Sample`` or ``Reset``; ``None`` for anything else (HELLO handled,
        a refused frame counted and logged here)."""
        if frame.type == cobs.HELLO:
            self._hello(frame)
        elif frame.type == cobs.PREDICTION:
            self.delivery.reject(FrameError("unknown_type", "PREDICTION frames go host -> device"))
        elif not self.hello_ok:
            self.delivery.reject(FrameError(
                "hello_mismatch", f"{frame.type_name} refused until a HELLO with {self.feature_count} features"))
        else:
            lost = self.tracker.observe(frame)
            if lost:
                self.delivery.dropped(lost, frame.seq)
            if frame.type == cobs.SAMPLE:
                values = np.frombuffer(frame.payload, dtype="<f4").astype(np.float32)
                return Sample(values, frame.seq, received)
            return Reset(frame.seq, received)
        return None

    def _hello(self, frame: cobs.Frame) -> None:
        try:
            hello = cobs.check_hello(frame, self.feature_count)
        except FrameError as e:
            self.hello_ok = False
            self.delivery.reject(e)
            return
        self.hello_ok = True
        self.tracker.observe(frame)  # a HELLO restarts sequence tracking
        self.delivery.counters.add("hellos")
        log.info("device HELLO: protocol %d, %d features (seq %d)", hello.version, hello.feature_count, frame.seq)


class Link:
    """A serial link to the device: events in (``get``), predictions out (``write_prediction``).

    Build it with ``Link.open(...)``; use it as a context manager or call ``close()``.
    ``get`` and ``write_*`` are meant for one consumer thread; the counters and
    ``connected`` may be read from any thread.
    """

    def __init__(self, url: str, *, protocol: str = "text", baudrate: int = 115200,
                 feature_names: Sequence[str], queue_size: int = 1024, put_timeout: float = 0.25,
                 backoff: Backoff = Backoff(), log_interval: float = 10.0, write_timeout: float = 1.0,
                 reply_queue: int = 256, opener: Optional[Callable[[], serial.SerialBase]] = None):
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self.url = url
        self.protocol = protocol
        self.feature_names = tuple(feature_names)
        self.counters = LinkCounters()
        self.limiter = RateLimitedLog(log, log_interval)
        self._events: EventQueue[LinkEvent] = EventQueue(queue_size)
        self._delivery = _Delivery(self._events, self.counters, self.limiter, put_timeout)
        self._parser = TextParser(self.feature_names) if protocol == "text" else None
        if protocol == "cobs" and not 1 <= len(self.feature_names) <= cobs.MAX_FEATURES:
            raise ValueError(f"cobs carries 1..{cobs.MAX_FEATURES} features, got {len(self.feature_names)}")
        self._opener = opener or (lambda: serial.serial_for_url(
            url, baudrate=baudrate, timeout=0.5, write_timeout=write_timeout))
        self._backoff = backoff
        self._supervisor: Optional[PortSupervisor] = None
        self._replies = ReplyWriter(self._send, (ConnectionError, *PORT_ERRORS), self.counters.add,
                                    self.limiter, url, maxsize=reply_queue)
        self._tx_seq = 0

    @classmethod
    def open(cls, url: str, protocol: str = "text", baudrate: int = 115200, *,
             feature_names: Sequence[str], require_port: bool = True, **options) -> "Link":
        """Open the port and start reading. ``options``: see ``Link.__init__``.

        With ``require_port`` (default) a port that cannot be opened now raises
        ``PortError``; without it the link keeps retrying in the background. A port
        lost later is always reopened.
        """
        link = cls(url, protocol=protocol, baudrate=baudrate, feature_names=feature_names, **options)
        link.start(require_port=require_port)
        return link

    def start(self, require_port: bool = True) -> None:
        port = None
        if require_port:
            try:
                port = self._opener()
            except PORT_ERRORS as e:
                raise PortError(f"cannot open serial port {self.url}: {e}") from None
        self._supervisor = PortSupervisor(
            self.url, self._opener, self._make_protocol, port=port, backoff=self._backoff,
            limiter=self.limiter, on_connect=self._on_connect,
            on_disconnect=lambda: self.counters.add("disconnects"))
        self._supervisor.start()
        self._replies.start()
        if port is not None:
            self._supervisor.wait_state(True, timeout=5.0)  # reader running: writes work now

    def _make_protocol(self, on_lost) -> _LinkProtocol:
        if self.protocol == "text":
            return TextLineProtocol(self._parser, self._delivery, on_lost)
        return CobsFrameProtocol(len(self.feature_names), self._delivery, on_lost)

    def _on_connect(self, reconnect: bool) -> None:
        if reconnect:
            self.counters.add("reconnects")
        else:
            log.info("serial port %s open (%s protocol)", self.url, self.protocol)

    # ---------------------------------------------------------------- consumer side

    def get(self, timeout: Optional[float] = None) -> Optional[LinkEvent]:
        """The next ``Sample`` or ``Reset``, or ``None`` after ``timeout`` seconds."""
        events = self._events.get_many(1, timeout)
        return events[0] if events else None

    def get_many(self, limit: int, timeout: Optional[float] = None) -> list[LinkEvent]:
        """Every waiting event up to ``limit``, oldest first, waiting at most ``timeout``
        seconds for the first one (an empty list if none came)."""
        return self._events.get_many(limit, timeout)

    @property
    def connected(self) -> bool:
        return self._supervisor is not None and self._supervisor.connected

    def wait_connected(self, timeout: Optional[float] = None, connected: bool = True) -> bool:
        """Wait until the port is connected (or, with ``connected=False``, lost)."""
        return self._supervisor is not None and self._supervisor.wait_state(connected, timeout)

    @property
    def reconnects(self) -> int:
        return self.counters["reconnects"]

    def _send(self, data: bytes) -> None:
        if self._supervisor is None:
            raise ConnectionError("link not started")
        self._supervisor.write(data)

    def write(self, data: bytes) -> bool:
        """Send raw bytes to the device now (this thread waits for the port); ``False``
        (counted, logged) if it failed. Replies go through ``write_prediction`` instead."""
        try:
            self._send(data)
        except (ConnectionError, *PORT_ERRORS) as e:
            self.counters.add("write_errors")
            self.limiter.warning("write", "cannot write to %s: %s", self.url, e)
            return False
        self.counters.add("writes")
        return True

    def write_prediction(self, outputs: Sequence[float], class_index: int, label: str,
                         seq: Optional[int] = None) -> bool:
        """Queue one prediction for the device: a PREDICTION frame (cobs) or a
        ``p=... c=...`` line (text). Never waits for the port; ``False`` (counted) when
        the port is down or the reply queue is full.

        ``seq`` is the answered SAMPLE's sequence number (cobs); without it the link's
        own counter is used.
        """
        if not self.connected:
            self.counters.add("write_errors")
            self.limiter.warning("write", "cannot write to %s: not connected", self.url)
            return False
        if self.protocol == "text":
            return self._replies.put(format_prediction(outputs, label))
        if seq is None:
            seq, self._tx_seq = self._tx_seq, (self._tx_seq + 1) % 65536
        payload = cobs.prediction_payload(class_index, [float(v) for v in outputs])
        return self._replies.put(cobs.encode_frame(cobs.PREDICTION, seq, payload))

    def close(self) -> None:
        if self._replies.is_alive():
            self._replies.stop()
        if self._supervisor is not None:
            self._supervisor.stop()
            self._supervisor = None
            log.info("serial port %s closed; counters: %s", self.url, self.counters.snapshot())

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
