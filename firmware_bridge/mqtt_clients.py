"""The MQTT client under ``MqttSource``: paho-mqtt, or Eclipse Mosquitto's own libmosquitto.

Both do the same for the source: connect in the background and reconnect with back-off,
subscribe on every connection and call ``on_ready`` once the broker granted it, hand
every message to ``on_message(topic, payload)`` on their network thread, publish at
QoS 1 without blocking (False when ``max_queued`` predictions are still unacknowledged),
and call ``on_lost(reason)`` when the connection drops.

``paho`` is pure Python. ``libmosquitto`` (Debian's libmosquitto1, beside the broker) does
the protocol in C through ``ctypes``: about a third of paho's CPU per message, which is
what decides how many samples per second one daemon takes. ``make_client("auto")`` picks
libmosquitto where it is installed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from typing import Callable

from runtime.errors import ConfigError

log = logging.getLogger(__name__)

CLIENTS = ("auto", "paho", "libmosquitto")


class PahoClient:
    switch_interval = 0.0005  # seconds: see runtime.multiserve (a Python network thread)

    def __init__(self, host: str, port: int, subs: list[str], client_id: str, keepalive: int,
                 max_queued: int, on_message: Callable, on_ready: Callable, on_lost: Callable):
        import paho.mqtt.client as mqtt

        self._mqtt, self._host, self._port, self._keepalive = mqtt, host, port, keepalive
        self._subs, self._on_ready, self._on_lost = subs, on_ready, on_lost
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311, clean_session=True)
        # no in-flight cap: paho rescans its whole in-flight list on every PUBACK once a
        # cap is reached; memory stays bounded by max_queued
        self.client.max_inflight_messages_set(0)
        self.client.max_queued_messages_set(max_queued)
        self.client.reconnect_delay_set(min_delay=0.05, max_delay=2)
        self.client.on_connect = self._connected
        self.client.on_subscribe = self._subscribed
        self.client.on_disconnect = lambda c, u, f, rc, p: on_lost(str(rc))
        self.client.on_message = lambda c, u, m: on_message(m.topic, m.payload)

    def _connected(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("MQTT broker refused the connection: %s", reason_code)
            return
        client.subscribe([(f, 1) for f in self._subs])

    def _subscribed(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.error("MQTT broker refused the subscription to %s: %s", self._subs, reason_codes)
            return
        self._on_ready()

    def start(self) -> None:
        self.client.connect_async(self._host, self._port, self._keepalive)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        return self.client.publish(topic, payload, qos=qos, retain=retain).rc != \
            self._mqtt.MQTT_ERR_QUEUE_SIZE

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class _Message(ctypes.Structure):
    _fields_ = [("mid", ctypes.c_int), ("topic", ctypes.c_char_p),
                ("payload", ctypes.c_void_p), ("payloadlen", ctypes.c_int),
                ("qos", ctypes.c_int), ("retain", ctypes.c_bool)]


_P = ctypes.c_void_p
_ON_RC = ctypes.CFUNCTYPE(None, _P, _P, ctypes.c_int)
_ON_MESSAGE = ctypes.CFUNCTYPE(None, _P, _P, ctypes.POINTER(_Message))
_ON_SUBSCRIBE = ctypes.CFUNCTYPE(None, _P, _P, ctypes.c_int, ctypes.c_int,
                                 ctypes.POINTER(ctypes.c_int))
MOSQ_OPT_TCP_NODELAY = 11
_lib = None


def libmosquitto():
    """The loaded libmosquitto (initialised once), or None where it is not installed."""
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("mosquitto")
        if name is None:
            return None
        lib = ctypes.CDLL(name)
        lib.mosquitto_new.restype = _P
        lib.mosquitto_new.argtypes = [ctypes.c_char_p, ctypes.c_bool, _P]
        for fn, args in (("connect_async", [_P, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]),
                         ("publish", [_P, _P, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                      ctypes.c_int, ctypes.c_bool]),
                         ("subscribe", [_P, _P, ctypes.c_char_p, ctypes.c_int]),
                         ("loop_start", [_P]), ("loop_stop", [_P, ctypes.c_bool]),
                         ("disconnect", [_P]), ("int_option", [_P, ctypes.c_int, ctypes.c_int]),
                         ("max_inflight_messages_set", [_P, ctypes.c_uint]),
                         ("reconnect_delay_set", [_P, ctypes.c_uint, ctypes.c_uint, ctypes.c_bool])):
            f = getattr(lib, "mosquitto_" + fn)
            f.argtypes, f.restype = args, ctypes.c_int
        lib.mosquitto_destroy.argtypes, lib.mosquitto_destroy.restype = [_P], None
        for fn, kind in (("connect", _ON_RC), ("disconnect", _ON_RC), ("message", _ON_MESSAGE),
                         ("subscribe", _ON_SUBSCRIBE), ("publish", _ON_RC)):
            f = getattr(lib, f"mosquitto_{fn}_callback_set")
            f.argtypes, f.restype = [_P, kind], None
        lib.mosquitto_lib_init()
        _lib = lib
    return _lib


class MosquittoClient:
    switch_interval = None  # the interpreter's default (a C network thread)

    def __init__(self, host: str, port: int, subs: list[str], client_id: str, keepalive: int,
                 max_queued: int, on_message: Callable, on_ready: Callable, on_lost: Callable):
        lib = libmosquitto()
        if lib is None:
            raise ConfigError("libmosquitto is not installed (Debian: apt-get install "
                              "libmosquitto1), use --mqtt-client paho")
        self._lib, self._host, self._port, self._keepalive = lib, host.encode(), port, keepalive
        self._subs, self._max_queued, self._unacked = [f.encode() for f in subs], max_queued, 0
        self._granted = 0  # SUBACKs of this connection
        self._lock = threading.Lock()
        self._m = lib.mosquitto_new(client_id.encode(), True, None)
        if not self._m:
            raise ConfigError("libmosquitto could not create a client")
        string_at = ctypes.string_at

        def message(mosq, obj, msg):
            m = msg.contents  # valid only during the callback: copied out here
            on_message(m.topic.decode("utf-8", "replace"), string_at(m.payload, m.payloadlen))

        def connected(mosq, obj, rc):
            if rc == 0:
                with self._lock:
                    self._unacked = 0  # what was in flight is resent or gone: count afresh
                self._granted = 0
                for f in self._subs:
                    lib.mosquitto_subscribe(self._m, None, f, 1)
            else:
                log.error("MQTT broker refused the connection (CONNACK %d)", rc)

        def subscribed(mosq, obj, mid, count, granted):
            if count and granted[0] > 2:
                log.error("MQTT broker refused the subscription to %s", subs)
                return
            self._granted += 1
            if self._granted == len(self._subs):
                on_ready()

        def published(mosq, obj, mid):
            with self._lock:
                self._unacked = max(0, self._unacked - 1)

        # kept on self: ctypes callbacks must outlive the C client that calls them
        self._callbacks = (_ON_RC(connected), _ON_RC(lambda m, o, rc: on_lost(f"rc {rc}")),
                           _ON_MESSAGE(message), _ON_SUBSCRIBE(subscribed), _ON_RC(published))
        for fn, cb in zip(("connect", "disconnect", "message", "subscribe", "publish"),
                          self._callbacks):
            getattr(lib, f"mosquitto_{fn}_callback_set")(self._m, cb)
        lib.mosquitto_int_option(self._m, MOSQ_OPT_TCP_NODELAY, 1)
        lib.mosquitto_max_inflight_messages_set(self._m, 0)
        lib.mosquitto_reconnect_delay_set(self._m, 1, 2, True)

    def start(self) -> None:
        rc = self._lib.mosquitto_connect_async(self._m, self._host, self._port, self._keepalive)
        if rc != 0:
            log.warning("MQTT connect to %s:%d failed now (rc %d): retrying",
                        self._host.decode(), self._port, rc)
        self._lib.mosquitto_loop_start(self._m)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        with self._lock:
            if self._unacked >= self._max_queued:
                return False
            self._unacked += 1
        rc = self._lib.mosquitto_publish(self._m, None, topic.encode(), len(payload), payload, qos,
                                         retain)
        if rc != 0:  # not connected: the prediction is not queued (nothing will ack it)
            with self._lock:
                self._unacked -= 1
            return False
        return True

    def close(self) -> None:
        if self._m:
            self._lib.mosquitto_disconnect(self._m)
            self._lib.mosquitto_loop_stop(self._m, False)
            self._lib.mosquitto_destroy(self._m)
            self._m = None


def make_client(kind: str, *args, **kwargs):
    """``kind`` of ``CLIENTS``; ``auto``: libmosquitto where installed, else paho."""
    if kind not in CLIENTS:
        raise ConfigError(f"--mqtt-client {kind!r}: use one of {', '.join(CLIENTS)}")
    if kind == "libmosquitto" or (kind == "auto" and libmosquitto() is not None):
        return MosquittoClient(*args, **kwargs)
    return PahoClient(*args, **kwargs)
