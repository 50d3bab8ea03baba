"""A lean MQTT 3.1.1 load generator and collector on plain sockets, for the stream bench.

The bench must measure the daemon and the broker, not its own client: paho-mqtt spends
tens of microseconds per message in Python, as much as the daemon itself. Here every
tick's PUBLISH packets (QoS 0) are encoded once up front and written with one
``sendall``, and the collector parses the broker's PUBLISH packets straight from the
socket reads, keeping them with their arrival time and parsing them after the run.
"""
from __future__ import annotations

import socket
import struct
import threading
import time


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def connect_packet(client_id: str, keepalive: int = 60) -> bytes:
    body = _string("MQTT") + bytes([4, 0x02]) + struct.pack(">H", keepalive) + _string(client_id)
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: str, payload: bytes) -> bytes:
    body = _string(topic) + payload
    return b"\x30" + _varint(len(body)) + body


def subscribe_packet(topic: str, qos: int = 0, packet_id: int = 1) -> bytes:
    body = struct.pack(">H", packet_id) + _string(topic) + bytes([qos])
    return b"\x82" + _varint(len(body)) + body


class RawClient:
    """One TCP connection to the broker, CONNECTed (clean session)."""

    def __init__(self, host: str, port: int, client_id: str):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.sendall(connect_packet(client_id))
        ack = self._read_exact(4)
        if ack[0] != 0x20 or ack[3] != 0:
            raise ConnectionError(f"broker refused the connection: {ack!r}")
        self.sock.settimeout(None)

    def _read_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            buf += chunk
        return buf

    def close(self) -> None:
        try:
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT
        except OSError:
            pass
        self.sock.close()


class Collector:
    """Subscribes (QoS 0) and keeps every read with its arrival time; ``records()``
    parses them after the run (PUBLISH packets: topic, payload, time of their read), so
    the bench spends nothing on parsing while it measures. ``count()`` counts the
    predictions so far (each payload holds ``"stream"`` once)."""

    def __init__(self, host: str, port: int, topic: str, marker: bytes = b'"stream"'):
        self.client = RawClient(host, port, f"bench-collector-{time.monotonic_ns()}")
        self.client.sock.sendall(subscribe_packet(topic))
        self.marker = marker
        self._reads: list[tuple[bytes, float]] = []
        self._count = 0
        self._stop = False
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._subscribed.wait(10):
            raise ConnectionError("no SUBACK from the broker")

    def _run(self) -> None:
        sock, reads, clock, marker = self.client.sock, self._reads, time.monotonic, self.marker
        first = sock.recv(5)  # the SUBACK
        if first[:1] == b"\x90":
            self._subscribed.set()
        while not self._stop:
            try:
                chunk = sock.recv(1 << 22)
            except OSError:
                return
            if not chunk:
                return
            reads.append((chunk, clock()))
            self._count += chunk.count(marker)
            # at most one read per millisecond: the broker writes each message on its own,
            # and waking per message would cost the bench more CPU than the daemon; a
            # prediction is stamped at the read that took it, at most 1 ms late
            time.sleep(0.001)

    def count(self) -> int:
        return self._count

    def records(self) -> list[tuple[bytes, bytes, float]]:
        out: list = []
        buf = b""
        for chunk, t in self._reads:
            buf = self._parse(buf + chunk, out, t)
        return out

    @staticmethod
    def _parse(buf: bytes, out: list, now: float) -> bytes:
        pos, n = 0, len(buf)
        while pos + 2 <= n:
            kind = buf[pos]
            length, shift, k = 0, 0, pos + 1
            while k < n:
                byte = buf[k]
                length |= (byte & 0x7F) << shift
                shift += 7
                k += 1
                if not byte & 0x80:
                    break
            else:
                break
            if k + length > n:
                break
            if kind & 0xF0 == 0x30:
                tlen = (buf[k] << 8) | buf[k + 1]
                out.append((buf[k + 2:k + 2 + tlen], buf[k + 2 + tlen:k + length], now))
            pos = k + length
        return buf[pos:]

    def close(self) -> None:
        self._stop = True
        self.client.close()
        self._thread.join(2)
