"""The bulk MQTT source: one socket read in, one block of samples out, on the daemon's thread.

``--mqtt-client bulk``. The other clients (``firmware_bridge.mqtt_clients``) hand every
message to a callback on their network thread, which then parses it and queues its
events: per message that is a thread hand-off, a callback, a parser call and a queue
entry, tens of microseconds of Python. Here the daemon's loop itself reads the socket:
``get_many`` waits for data, reads everything the kernel holds (``PacketSplitter``),
routes each PUBLISH by its topic (cached) and parses the payloads of plain numeric lines
of the whole read together, so the samples leave as one ``SampleBlock`` (stream ids and
an ``[n, F]`` array). Anything else (several lines in a message, a header, ``name:value``
pairs, a bad line) goes through the same per-stream ``TextParser`` as with the other
clients, in order; a reset splits the block. ``publish_many`` frames a whole block of
predictions into one ``sendall``.

Predictions go out at QoS ``qos`` (1 by default): each waits in ``inflight`` until the
broker's PUBACK, and after a reconnect every one still waiting is sent again (DUP set),
so a prediction is lost only when more than ``max_inflight`` wait at once (counted as
``publish_dropped``). Once data is there, the read waits ``linger`` (2 ms) for the rest
of a burst, so samples arriving together are stepped together. QoS 1 messages from sensors are acknowledged in one write per read.
The connection is kept alive with PINGREQ; a dead or silent broker is noticed within 1.5
keep-alive periods, and the source reconnects with back-off (0.05 s doubling to 2 s)
and subscribes again, as the other clients do.
"""
from __future__ import annotations

import collections
import logging
import select
import socket
import time
import uuid
from typing import Callable, Optional

from firmware_bridge.mqtt import MAX_PAYLOAD
from firmware_bridge.mqtt_blocks import MAX_TOPICS, BlockIntake
from firmware_bridge.mqtt_wire import (
    DISCONNECT, MAX_PACKET_ID, PINGREQ, PacketSplitter, ProtocolError, connect_packet,
    mqtt_string, puback_packets, publish_packets, subscribe_packet,
)
from runtime.errors import PortError
from runtime.events import SampleBlock

log = logging.getLogger(__name__)

READ_SIZE = 1 << 20
MAX_READ = 8 << 20  # bytes taken from the socket per get_many at most
# seconds waited after the first bytes of a read: the samples of many sensors arriving
# within it are stepped in one round (a round's cost is mostly fixed, see bench.streams)
LINGER = 0.002


class BulkMqttSource(BlockIntake):
    switch_interval = None  # one thread: nothing to hand over
    client_kind = "BulkClient"

    def __init__(self, url: str, feature_names, *, accept: Callable[[str], bool] | None = None,
                 client_id: str | None = None, keepalive: int = 15, qos: int = 1,
                 max_inflight: int = 60_000, connect_timeout: float = 2.0,
                 linger: float = LINGER):
        super().__init__(url, feature_names, accept)
        self.client_id = client_id or f"stepwise-{uuid.uuid4().hex[:12]}"
        self.keepalive, self.qos, self.connect_timeout = keepalive, qos, connect_timeout
        self.linger = linger
        self.max_inflight = min(max_inflight, MAX_PACKET_ID - 1)
        self.inflight: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._next_id = 1
        self._sock: socket.socket | None = None
        self._state = "down"  # down -> connecting (CONNECT sent) -> subscribing -> up
        self._splitter = PacketSplitter(MAX_PAYLOAD + 1024)
        self._retry_at = 0.0
        self._delay = 0.05
        self._last_in = self._last_out = self._last_ping = 0.0
        self._topics: dict[str, bytes] = {}  # stream -> its prediction topic, length-prefixed
        self._closing = False
        self._pending: list = []  # events read but not yet returned (over ``limit``)

    # -- lifetime ------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> "BulkMqttSource":
        """Connect and subscribe, waiting up to ``timeout``; ``PortError`` if the broker
        cannot be reached by then."""
        deadline = time.monotonic() + timeout
        while not self.connected.is_set() and time.monotonic() < deadline:
            self._pending += self._poll(min(0.05, max(0.0, deadline - time.monotonic())))
        if not self.connected.is_set():
            self.close()
            raise PortError(f"MQTT broker {self.address.host}:{self.address.port} "
                            f"not reachable within {timeout:g} s")
        return self

    def close(self) -> None:
        self._closing = True
        if self._sock is not None:
            try:
                self._sock.sendall(DISCONNECT)
            except OSError:
                pass
            self._drop("closed")

    def _connect(self, now: float) -> None:
        self._retry_at = now + self._delay
        self._delay = min(2.0, self._delay * 2)
        try:
            sock = socket.create_connection((self.address.host, self.address.port),
                                            timeout=self.connect_timeout)
        except OSError as e:
            log.debug("MQTT connect to %s:%d failed (%s)", self.address.host, self.address.port, e)
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(5.0)  # a broker that stops reading: the send fails, reconnect
        self._sock, self._state = sock, "connecting"
        self._splitter.reset()
        self._last_in = self._last_out = self._last_ping = now
        self._send(connect_packet(self.client_id, self.keepalive))

    def _drop(self, reason: str) -> None:
        was_up = self.connected.is_set()
        if self._sock is not None:
            self._sock.close()
        self._sock, self._state = None, "down"
        if was_up:
            self._on_lost(reason)

    def _send(self, data: bytes) -> bool:
        if self._sock is None:
            return False
        try:
            self._sock.sendall(data)
        except OSError as e:
            self._drop(f"send failed: {e}")
            return False
        self._last_out = time.monotonic()
        return True

    # -- input ---------------------------------------------------------------------
    def get_many(self, limit: int, timeout: Optional[float] = None) -> list:
        """What arrived within ``timeout``: ``SampleBlock``s and ``(stream, Reset)``
        pairs in arrival order (``limit`` is the caller's batch hint; a read is never split)."""
        if self._pending:
            out, self._pending = self._pending, []
            return out
        return self._poll(0.05 if timeout is None else timeout)

    def _poll(self, timeout: float) -> list:
        now = time.monotonic()
        if self._sock is None:
            if self._closing:
                return []
            if now < self._retry_at:
                time.sleep(min(timeout, self._retry_at - now))
                return []
            self._connect(now)
            if self._sock is None:
                return []
        self._keep_alive(now)
        if self._sock is None:
            return []
        try:
            ready, _, _ = select.select([self._sock], [], [], timeout)
        except (OSError, ValueError):
            ready = []
        if not ready:
            return []
        if self.linger:
            time.sleep(self.linger)  # let a burst of sensors finish: one block, one invoke
        chunks, total = [], 0
        self._sock.setblocking(False)
        try:
            while total < MAX_READ:
                try:
                    chunk = self._sock.recv(READ_SIZE)
                except BlockingIOError:
                    break
                if not chunk:
                    self._sock.settimeout(5.0)
                    self._drop("closed by the broker")
                    return self._take_bytes(b"".join(chunks), now)
                chunks.append(chunk)
                total += len(chunk)
        except OSError as e:
            self._drop(f"read failed: {e}")
            return []
        if self._sock is not None:
            self._sock.settimeout(5.0)
        return self._take_bytes(b"".join(chunks), time.monotonic())

    def _keep_alive(self, now: float) -> None:
        half = self.keepalive / 2
        if now - self._last_in > 1.5 * self.keepalive:
            self._drop(f"nothing from the broker for {now - self._last_in:.1f} s")
        elif (now - self._last_out > half or now - self._last_in > half) \
                and now - self._last_ping > half:
            self._last_ping = now
            self._send(PINGREQ)

    def _take_bytes(self, data: bytes, received: float) -> list:
        if not data:
            return []
        self._last_in = received
        try:
            got = self._splitter.feed(data)
        except ProtocolError as e:
            self._drop(f"protocol error: {e}")
            return []
        if got.connack is not None:
            self._connected(got.connack)
        for granted in got.subacks:
            if self._state == "subscribing":
                self._subscribed(granted)
        if got.acked:
            pop = self.inflight.pop
            for pid in got.acked:
                pop(pid, None)
        if got.qos1_ids:
            self._send(puback_packets(got.qos1_ids))
        return self._events(got.publishes, received) if got.publishes else []

    def _connected(self, rc: int) -> None:
        if rc != 0:
            log.error("MQTT broker refused the connection (CONNACK %d)", rc)
            self._drop(f"CONNACK {rc}")
            return
        self._state = "subscribing"
        self._send(subscribe_packet(self.filters, 1, 1))

    def _subscribed(self, granted: bytes) -> None:
        if any(g > 2 for g in granted):
            log.error("MQTT broker refused the subscription to %s", self.filters)
            self._drop("subscription refused")
            return
        self._state = "up"
        self._delay = 0.05
        if self.inflight:  # unacknowledged predictions of the last connection: again, DUP
            self._send(b"".join(bytes([p[0] | 0x08]) + p[1:] for p in self.inflight.values()))
            self.counters["republished"] += len(self.inflight)
        self._on_ready()

    def queued(self) -> int:
        return sum(len(e) if type(e) is SampleBlock else 1 for e in self._pending)

    # -- output --------------------------------------------------------------------
    def _topic(self, stream: str) -> bytes:
        t = self._topics.get(stream)
        if t is None:
            if len(self._topics) > MAX_TOPICS:
                self._topics.clear()
            t = self._topics[stream] = mqtt_string(self.address.topic(stream, "prediction"))
        return t

    def publish_many(self, streams: list, payloads: list) -> None:
        """Every ``payloads[k]`` (str or bytes) to ``PREFIX/<streams[k]>/prediction``, in one write."""
        if not streams:
            return
        if isinstance(payloads[0], str):
            payloads = "\n".join(payloads).encode("utf-8").split(b"\n")
        topics = [self._topic(s) for s in streams]
        if self.qos == 0:
            if self._state == "up" and self._send(b"".join(publish_packets(topics, payloads, None))):
                self.counters["published"] += len(streams)
            else:
                self.counters["publish_dropped"] += len(streams)
            return
        room = self.max_inflight - len(self.inflight)
        if room < len(streams):
            self.counters["publish_dropped"] += len(streams) - max(0, room)
            topics, payloads = topics[:max(0, room)], payloads[:max(0, room)]
            if not topics:
                return
        ids = self._ids(len(topics))
        packets = publish_packets(topics, payloads, ids)
        self.inflight.update(zip(ids, packets))
        self.counters["published"] += len(packets)
        if self._state == "up":
            self._send(b"".join(packets))  # not connected: sent after the reconnect

    def publish_retained(self, topic: str, payload: bytes) -> None:
        """One retained message at QoS 1 (kept in flight like a prediction)."""
        if len(self.inflight) >= self.max_inflight:
            self.counters["publish_dropped"] += 1
            return
        ids = self._ids(1)
        packet, = publish_packets([mqtt_string(topic)], [payload], ids, retain=True)
        self.inflight[ids[0]] = packet
        if self._state == "up":
            self._send(packet)

    def publish(self, stream: str, payload: bytes | str) -> bool:
        before = self.counters["publish_dropped"]
        self.publish_many([stream], [payload])
        return self.counters["publish_dropped"] == before

    def _ids(self, n: int) -> list[int]:
        """``n`` packet ids not in flight (1..65535, wrapping)."""
        out, pid, inflight = [], self._next_id, self.inflight
        while len(out) < n:
            if pid not in inflight:
                out.append(pid)
            pid = pid + 1 if pid < MAX_PACKET_ID else 1
        self._next_id = pid
        return out
