"""MQTT 3.1.1 packets as bytes, encoded and split in bulk (no I/O).

What the bulk client (``firmware_bridge.mqtt_bulk``) needs of the protocol, written for
many small messages: ``PacketSplitter.feed(chunk)`` takes whatever one socket read
returned and hands back every complete packet of it at once; ``publish_packets`` frames
a whole batch of predictions into one ``bytes`` for one ``sendall``. Only what a client
that subscribes at QoS 1 at most can receive is decoded (CONNACK, PUBLISH at QoS 0/1,
PUBACK, SUBACK, PINGRESP); anything else from the broker is a protocol error.

A PUBLISH longer than ``max_packet`` is not buffered: its topic is reported (so the
message is counted against its stream) and its remaining bytes are skipped as they
arrive, so the buffer never holds more than one packet of at most ``max_packet`` bytes
plus one read.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP = 0x20, 0x30, 0x40, 0x90, 0xD0
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
MAX_PACKET_ID = 65535


class ProtocolError(Exception):
    """The broker sent bytes that are not MQTT 3.1.1 for this client."""


def varint(n: int) -> bytes:
    """The remaining-length encoding of ``n`` (1 to 4 bytes)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


_VARINT = [varint(n) for n in range(16384)]  # every length of up to two bytes


def mqtt_string(text: str | bytes) -> bytes:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack(">H", len(raw)) + raw


def connect_packet(client_id: str, keepalive: int, clean: bool = True) -> bytes:
    body = mqtt_string("MQTT") + bytes([4, 0x02 if clean else 0]) + struct.pack(">H", keepalive) \
        + mqtt_string(client_id)
    return b"\x10" + varint(len(body)) + body


def subscribe_packet(filters: list[str], qos: int, packet_id: int) -> bytes:
    body = struct.pack(">H", packet_id) + b"".join(mqtt_string(f) + bytes([qos]) for f in filters)
    return b"\x82" + varint(len(body)) + body


def puback_packets(packet_ids: list[int]) -> bytes:
    return b"".join(b"\x40\x02" + struct.pack(">H", p) for p in packet_ids)


def publish_packets(topics: list[bytes], payloads: list[bytes], packet_ids: list[int] | None,
                    retain: bool = False) -> list[bytes]:
    """One PUBLISH per (topic, payload): QoS 0 when ``packet_ids`` is None, else QoS 1
    with those ids. ``topics`` are already length-prefixed (``mqtt_string``)."""
    vi = _VARINT
    if packet_ids is None:
        head = b"\x31" if retain else b"\x30"
        return [head + (vi[n] if n < 16384 else varint(n)) + t + p
                for t, p in zip(topics, payloads) for n in (len(t) + len(p),)]
    head = b"\x33" if retain else b"\x32"
    return [head + (vi[n] if n < 16384 else varint(n)) + t + i.to_bytes(2, "big") + p
            for t, p, i in zip(topics, payloads, packet_ids) for n in (len(t) + len(p) + 2,)]


@dataclass
class Received:
    """What one ``feed`` found, in arrival order where order matters.

    ``publishes``: ``(topic, payload)``, payload ``None`` for one longer than
    ``max_packet`` (skipped); ``qos1_ids``: packet ids of QoS 1 PUBLISHes to acknowledge;
    ``acked``: ids of our own QoS 1 PUBLISHes the broker acknowledged; ``connack``: the
    return code of a CONNACK (None: none came); ``subacks``: granted-QoS bytes of each
    SUBACK; ``pings``: PINGRESPs.
    """

    publishes: list = field(default_factory=list)
    qos1_ids: list = field(default_factory=list)
    acked: list = field(default_factory=list)
    connack: int | None = None
    subacks: list = field(default_factory=list)
    pings: int = 0


class PacketSplitter:
    """Bytes from the broker -> packets, for one connection (``reset`` for the next)."""

    def __init__(self, max_packet: int):
        self.max_packet = max_packet
        self._buf = b""
        self._skip = 0  # bytes of an oversized PUBLISH still to drop

    def reset(self) -> None:
        self._buf, self._skip = b"", 0

    def feed(self, chunk: bytes) -> Received:
        out = Received()
        if self._skip:
            n = min(self._skip, len(chunk))
            self._skip -= n
            chunk = chunk[n:]
        buf = self._buf + chunk if self._buf else chunk
        pos, end, limit = 0, len(buf), self.max_packet
        publishes = out.publishes
        while pos + 2 <= end:
            kind = buf[pos]
            length = buf[pos + 1]
            k = pos + 2
            if length & 0x80:  # a longer remaining length: up to three more bytes
                length, k = _long_length(buf, pos + 1, end)
                if length < 0:
                    break  # the length itself is not complete yet
            stop = k + length
            if kind & 0xF0 == PUBLISH:
                if length > limit:  # report the topic, drop the rest as it comes
                    if k + 2 > end or k + 2 + ((buf[k] << 8) | buf[k + 1]) > end:
                        if end - pos > limit:
                            raise ProtocolError("oversized PUBLISH with an oversized topic")
                        break
                    tlen = (buf[k] << 8) | buf[k + 1]
                    publishes.append((buf[k + 2:k + 2 + tlen], None))
                    t = k + 2 + tlen
                    if kind & 0x06 and t + 2 <= end:
                        out.qos1_ids.append((buf[t] << 8) | buf[t + 1])
                    self._skip = max(0, stop - end)
                    pos = min(stop, end)
                    continue
                if stop > end:
                    break
                tlen = (buf[k] << 8) | buf[k + 1]
                t = k + 2 + tlen
                if kind & 0x06:  # QoS 1 (QoS 2 is never granted to this client)
                    if kind & 0x06 != 0x02:
                        raise ProtocolError("a QoS 2 PUBLISH to a QoS 1 subscription")
                    out.qos1_ids.append((buf[t] << 8) | buf[t + 1])
                    t += 2
                publishes.append((buf[k + 2:k + 2 + tlen], buf[t:stop]))
            else:
                if stop > end:
                    break
                if kind == PUBACK:
                    out.acked.append((buf[k] << 8) | buf[k + 1])
                elif kind == PINGRESP:
                    out.pings += 1
                elif kind == SUBACK:
                    out.subacks.append(buf[k + 2:stop])
                elif kind == CONNACK:
                    out.connack = buf[k + 1]
                else:
                    raise ProtocolError(f"unexpected packet type 0x{kind:02x} from the broker")
            pos = stop
        self._buf = buf[pos:]
        return out


def _long_length(buf: bytes, at: int, end: int) -> tuple[int, int]:
    """The remaining length starting at ``buf[at]`` and the index after it; (-1, end) while
    it is incomplete; ``ProtocolError`` past four bytes."""
    length, shift, k = 0, 0, at
    while k < end:
        byte = buf[k]
        k += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return length, k
        shift += 7
        if shift > 21:
            raise ProtocolError("remaining length longer than 4 bytes")
    return -1, end
