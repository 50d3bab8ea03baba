"""The MQTT sample source: many streams through one broker (docs/PROTOCOL.md, "MQTT").

Topics, under a prefix taken from the URL's path (``mqtt://host:1883/stepwise``; default
``stepwise``)::

    PREFIX/<stream>/sample      one or more text-protocol lines (firmware_bridge.text)
    PREFIX/<stream>/reset       any payload: start a new sequence on that stream
    PREFIX/<stream>/prediction  published by the daemon: the JSON object serve writes (QoS 1)

``MqttSource`` runs its client's network thread (paho-mqtt or libmosquitto,
``firmware_bridge.mqtt_clients``): each message is parsed there (one
``TextParser`` per stream, so a header line changes only its own stream's columns) and
the events go into a bounded queue as ``(stream, event)`` pairs, which the daemon loop
takes with ``get_many``. A bad payload is counted against its stream (``rejected``) and
skipped; it never reaches the queue, the model or another stream. A stream id is one
topic level of at most ``MAX_STREAM_ID`` bytes of ``[A-Za-z0-9_.:-]``; anything else
under the prefix is counted as ``bad_topic``. When the broker goes away the client
reconnects with back-off and subscribes again; nothing else is lost than what the broker
itself dropped.
"""
from __future__ import annotations

import collections
import logging
import re
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Callable, Optional

from firmware_bridge.event_queue import EventQueue
from firmware_bridge.mqtt_clients import make_client
from firmware_bridge.text import MAX_LINE, TextParser
from runtime.events import Reset, Sample
from runtime.errors import ConfigError, FrameError, PortError

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "stepwise"
MAX_STREAM_ID = 64
MAX_PAYLOAD = 64 * 1024  # bytes of one sample message
MAX_PARSERS = 65536  # per-stream parsers kept (least recently used ones are dropped)
MAX_COUNTED_STREAMS = 65536  # per-stream reject counters kept
_STREAM_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,%d}" % MAX_STREAM_ID)


@dataclass(frozen=True)
class MqttAddress:
    """Where the broker is and which topic prefix the streams live under."""

    host: str
    port: int
    prefix: str

    def topic(self, stream: str, kind: str) -> str:
        return f"{self.prefix}/{stream}/{kind}"


def parse_mqtt_url(url: str) -> MqttAddress:
    """``mqtt://host[:port][/prefix]`` -> ``MqttAddress``; ``ConfigError`` otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ConfigError(f"MQTT URL {url!r}: expected mqtt://HOST[:PORT][/PREFIX]")
    try:
        port = parts.port or 1883
    except ValueError:
        raise ConfigError(f"MQTT URL {url!r}: the port is not a number in 1..65535") from None
    prefix = parts.path.strip("/") or DEFAULT_PREFIX
    if any(c in prefix for c in "+#") or "//" in prefix:
        raise ConfigError(f"MQTT URL {url!r}: the topic prefix may not hold +, # or //")
    return MqttAddress(parts.hostname, port, prefix)


def valid_stream_id(stream: str) -> bool:
    return _STREAM_ID.fullmatch(stream) is not None


class StreamRejects:
    """Rejected payloads per stream and reason, for at most ``MAX_COUNTED_STREAMS`` streams
    (the least recently rejected are forgotten; ``totals`` keeps every reason's count)."""

    def __init__(self, limit: int = MAX_COUNTED_STREAMS):
        self.limit = limit
        self.totals: collections.Counter[str] = collections.Counter()
        self._by_stream: collections.OrderedDict[str, collections.Counter[str]] = \
            collections.OrderedDict()
        self._lock = threading.Lock()

    def count(self, stream: str, reason: str) -> None:
        with self._lock:
            self.totals[reason] += 1
            per = self._by_stream.pop(stream, None) or collections.Counter()
            per[reason] += 1
            self._by_stream[stream] = per
            if len(self._by_stream) > self.limit:
                self._by_stream.popitem(last=False)

    def of(self, stream: str) -> dict[str, int]:
        with self._lock:
            return dict(self._by_stream.get(stream, {}))

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.totals)


class StreamIntake:
    """What every MQTT source shares: the address, topic routing (stream id, kind,
    sharding), per-stream text parsers and reject counts, the counters."""

    def __init__(self, url: str, feature_names, accept: Callable[[str], bool] | None):
        self.address = parse_mqtt_url(url)
        self.feature_names = tuple(feature_names)
        TextParser(self.feature_names)  # checks the names once
        self.accept = accept
        self.rejects = StreamRejects()
        self.counters: collections.Counter[str] = collections.Counter()
        self.connected = threading.Event()
        self._parsers: collections.OrderedDict[str, TextParser] = collections.OrderedDict()
        # only samples and resets: the daemon's own predictions never come back to it
        self.filters = [f"{self.address.prefix}/+/sample", f"{self.address.prefix}/+/reset"]
        self._skip = len(self.address.prefix) + 1

    def _route(self, topic: str) -> tuple[str, str | None]:
        """``(stream, "sample" | "reset")``, or ``(reason, None)`` for a message that is
        not this daemon's input (``bad_topic``, ``foreign``, ``own_output``)."""
        stream, sep, kind = topic[self._skip:].partition("/")
        if kind == "prediction":
            return "own_output", None  # another daemon's output, under a wider subscription
        if not sep or kind not in ("sample", "reset") or not valid_stream_id(stream):
            return "bad_topic", None
        if self.accept is not None and not self.accept(stream):
            return "foreign", None
        return stream, kind

    def _parse(self, stream: str, payload: bytes, received: float) -> list:
        if len(payload) > MAX_PAYLOAD:
            self.rejects.count(stream, "payload_too_large")
            return []
        parser = self._parser(stream)
        out = []
        for line in payload.split(b"\n"):
            try:
                event = parser.parse_line(line, received)
            except FrameError as e:
                self.rejects.count(stream, e.reason)
                log.debug("stream %s: line rejected (%s)", stream, e)
                continue
            if type(event) is Sample or type(event) is Reset:
                out.append((stream, event))
        return out

    def _parser(self, stream: str) -> TextParser:
        parsers = self._parsers
        parser = parsers.get(stream)
        if parser is None:
            parser = parsers[stream] = TextParser(self.feature_names, MAX_LINE)
            if len(parsers) > MAX_PARSERS:
                parsers.popitem(last=False)
        return parser

    def _on_ready(self) -> None:
        self.counters["connects"] += 1
        self.connected.set()  # connected means subscribed: nothing published after is missed
        log.info("MQTT connected to %s:%d (%s), subscribed to %s", self.address.host,
                 self.address.port, self.client_kind, " and ".join(self.filters))

    def _on_lost(self, reason: str) -> None:
        self.connected.clear()
        if self._closing:
            return
        self.counters["disconnects"] += 1
        log.warning("MQTT connection to %s:%d lost (%s): reconnecting", self.address.host,
                    self.address.port, reason)

    def status(self) -> dict[str, int]:
        rejected = self.rejects.snapshot()
        return {**self.counters, **{f"rejected_{k}": v for k, v in rejected.items()},
                "queued": self.queued()}

    def queued(self) -> int:
        return 0

    def set_accept(self, accept: Callable[[str], bool] | None) -> None:
        """Change which streams are kept (a shard hand-off)."""
        self.accept = accept


class MqttSource(StreamIntake):
    """Samples and resets of many streams from one broker; predictions back to it.

    ``accept(stream) -> bool`` keeps only this daemon's streams (sharding); the others
    are counted as ``foreign`` and dropped before parsing.
    """

    def __init__(self, url: str, feature_names, *, accept: Callable[[str], bool] | None = None,
                 queue_size: int = 200_000, client_id: str | None = None,
                 keepalive: int = 15, max_queued_publishes: int = 200_000,
                 client: str = "auto", qos: int = 1):
        super().__init__(url, feature_names, accept)
        self.queue: EventQueue = EventQueue(queue_size)
        self.qos = qos
        self._closing = False
        self.client = make_client(client, self.address.host, self.address.port, self.filters,
                                  client_id or f"stepwise-{uuid.uuid4().hex[:12]}", keepalive,
                                  max_queued_publishes, self._on_message, self._on_ready,
                                  self._on_lost)
        self.client_kind = type(self.client).__name__
        self.switch_interval = self.client.switch_interval  # the daemon loop's hint

    # -- lifetime ------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> "MqttSource":
        """Connect (retrying in the background) and wait up to ``timeout`` until the
        subscription is granted; ``PortError`` if the broker cannot be reached by then."""
        self.client.start()
        if not self.connected.wait(timeout):
            self.close()
            raise PortError(f"MQTT broker {self.address.host}:{self.address.port} "
                            f"not reachable within {timeout:g} s")
        return self

    def close(self) -> None:
        self._closing = True
        self.client.close()

    # -- input ---------------------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            self._take(topic, payload, time.monotonic())
        except Exception:  # a callback error must never stop the network thread
            self.counters["callback_errors"] += 1
            log.exception("MQTT message on %r could not be handled (skipped)", topic)

    def _take(self, topic: str, payload: bytes, received: float) -> None:
        stream, kind = self._route(topic)
        if kind is None:
            self.counters[stream] += 1
            return
        self.counters["messages"] += 1
        if kind == "reset":
            events = [(stream, Reset(None, received))]
        else:
            events = self._parse(stream, payload, received)
        if events and self.queue.put_many(events, timeout=1.0) < len(events):
            self.counters["queue_full"] += 1
            log.warning("event queue full: samples of stream %s dropped", stream)

    def get_many(self, limit: int, timeout: Optional[float] = None) -> list:
        """Up to ``limit`` ``(stream, event)`` pairs, oldest first (see ``EventQueue``)."""
        return self.queue.get_many(limit, timeout)

    # -- output --------------------------------------------------------------------
    def publish_many(self, streams: list, payloads: list) -> None:
        for stream, payload in zip(streams, payloads):
            self.publish(stream, payload)

    def publish(self, stream: str, payload: bytes | str) -> bool:
        """Queue one prediction for ``PREFIX/<stream>/prediction`` (QoS ``qos``); False
        (counted) when the client's own queue is full. Never blocks."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        if not self.client.publish(self.address.topic(stream, "prediction"), payload, self.qos):
            self.counters["publish_dropped"] += 1
            return False
        self.counters["published"] += 1
        return True

    def publish_retained(self, topic: str, payload: bytes) -> None:
        if not self.client.publish(topic, payload, 1, retain=True):
            self.counters["publish_dropped"] += 1

    def queued(self) -> int:
        return len(self.queue)
