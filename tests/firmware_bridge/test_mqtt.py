"""The MQTT source against a real Mosquitto broker (the ``broker`` fixture)."""
from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest
from tests.needs import missing

paho = pytest.importorskip("paho.mqtt.client")

from firmware_bridge.mqtt import MqttSource, parse_mqtt_url, valid_stream_id  # noqa: E402
from firmware_bridge.mqtt_bulk import BulkMqttSource  # noqa: E402
from runtime.events import SampleBlock  # noqa: E402
from runtime.events import Reset, Sample  # noqa: E402
from runtime.errors import ConfigError, PortError  # noqa: E402

NAMES = ("ax", "ay", "az")


class Peer:
    """A plain paho client: publishes, and records what arrives on its subscriptions."""

    def __init__(self, broker, subscribe: str | None = None):
        self.got: list[tuple[str, bytes, int]] = []
        self.ready = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda c, u, m: self.got.append((m.topic, m.payload, m.qos))
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if subscribe:
            self.client.subscribe(subscribe, qos=1)
            assert self.ready.wait(5)
        else:
            self.ready.set()

    def send(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def pairs(events) -> list:
    """``(stream, event)`` pairs, a ``SampleBlock`` (bulk source) taken apart in order."""
    out = []
    for e in events:
        if type(e) is SampleBlock:
            assert e.values.dtype == np.float32 and e.values.shape == (len(e), len(NAMES))
            out += [(s, Sample(x, None, e.received)) for s, x in zip(e.streams, e.values)]
        else:
            out.append(e)
    return out


def take(source, n: int, timeout: float = 5.0) -> list:
    out, deadline = [], time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out += pairs(source.get_many(1000, timeout=0.1))
    return out


def wait_until(source, cond, timeout: float) -> bool:
    """Poll ``cond`` while driving the source (the bulk one reads only when asked)."""
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        source.get_many(1000, timeout=0.02)
    return bool(cond())


def open_source(url: str, kind: str, **kw):
    if kind == "bulk":
        return BulkMqttSource(url, NAMES, **kw)
    return MqttSource(url, NAMES, client=kind, **kw)


@pytest.fixture(params=["bulk", "paho", "libmosquitto"])
def kind(request):
    from firmware_bridge.mqtt_clients import libmosquitto

    if request.param == "libmosquitto" and libmosquitto() is None:
        missing("libmosquitto is not installed (it comes with mosquitto: make tools)")
    return request.param


@pytest.fixture
def source(broker, kind):
    src = open_source(broker.url + "/test", kind).start()
    yield src
    src.close()


def test_url_and_stream_ids():
    a = parse_mqtt_url("mqtt://127.0.0.1:1999/plant/line1")
    assert (a.host, a.port, a.prefix) == ("127.0.0.1", 1999, "plant/line1")
    assert parse_mqtt_url("mqtt://broker").port == 1883
    assert parse_mqtt_url("mqtt://broker").prefix == "stepwise"
    for bad in ("http://x", "mqtt://", "mqtt://h:99999", "mqtt://h/a/+"):
        with pytest.raises(ConfigError):
            parse_mqtt_url(bad)
    assert valid_stream_id("pump-7.a:b_c")
    assert not valid_stream_id("") and not valid_stream_id("a" * 65)
    assert not valid_stream_id("a+b") and not valid_stream_id("é")


def test_interleaved_streams_keep_their_own_order_and_columns(broker, source):
    peer = Peer(broker)
    peer.send("test/s1/sample", b"1,2,3")
    peer.send("test/s2/sample", b"az,ax,ay\n30,10,20")  # a header: s2's columns only
    peer.send("test/s1/sample", b"4,5,6\n7,8,9")
    peer.send("test/s2/sample", b"60,40,50")
    peer.send("test/s1/reset", b"")
    events = take(source, 6)
    peer.close()
    by = {}
    for stream, ev in events:
        by.setdefault(stream, []).append(ev)
    assert [e.values.tolist() for e in by["s1"] if type(e) is Sample] == \
        [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert type(by["s1"][-1]) is Reset
    assert [e.values.tolist() for e in by["s2"]] == [[10, 20, 30], [40, 50, 60]]
    assert all(e.values.dtype == np.float32 for e in by["s2"])


def test_bad_payloads_are_counted_against_their_stream_only(broker, source):
    peer = Peer(broker)
    peer.send("test/bad/sample", b"1,2\nnan,1,2\nhello\n\xff\xfe,1,2")
    peer.send("test/bad/sample", b"x" * 70_000)
    peer.send("test/good/sample", b"1,2,3")
    peer.send("test/no id!/sample", b"1,2,3")  # not a valid stream id
    peer.send("test/good/other", b"1,2,3")
    peer.send("test/good/prediction", b"{}")  # output topics are not input
    events = take(source, 1)
    time.sleep(0.2)
    events += pairs(source.get_many(100, timeout=0))
    peer.close()
    assert [(s, e.values.tolist()) for s, e in events] == [("good", [1, 2, 3])]
    assert source.rejects.of("bad") == {"field_count": 1, "non_finite": 1, "not_numeric": 1,
                                        "bad_encoding": 1, "payload_too_large": 1}
    assert source.rejects.of("good") == {}
    assert source.counters["bad_topic"] == 1  # "no id!"; other kinds are not subscribed to
    assert source.counters["messages"] == 3


def test_predictions_are_published_with_qos1(broker, source, kind):
    peer = Peer(broker, subscribe="test/+/prediction")
    assert source.publish("s9", b'{"i": 0}')
    assert wait_until(source, lambda: peer.got, 5)
    peer.close()
    assert peer.got == [("test/s9/prediction", b'{"i": 0}', 1)]
    if kind == "bulk":
        assert wait_until(source, lambda: not source.inflight, 5)  # the PUBACK came back


def test_reconnects_and_resubscribes_after_broker_restart(broker, source):
    broker.stop()
    assert wait_until(source, lambda: not source.connected.is_set(), 5)
    broker.start()
    assert wait_until(source, source.connected.is_set, 10)
    peer = Peer(broker)
    peer.send("test/s1/sample", b"1,2,3")
    events = take(source, 1)
    peer.close()
    assert [(s, e.values.tolist()) for s, e in events] == [("s1", [1, 2, 3])]
    assert source.counters["connects"] == 2 and source.counters["disconnects"] >= 1


def test_sharding_filter_drops_foreign_streams(broker, kind):
    src = open_source(broker.url + "/test", kind, accept=lambda s: s.startswith("mine")).start()
    peer = Peer(broker)
    peer.send("test/theirs/sample", b"1,2,3")
    peer.send("test/mine1/sample", b"4,5,6")
    events = take(src, 1)
    time.sleep(0.1)
    peer.close()
    src.close()
    assert [s for s, _ in events] == ["mine1"] and src.counters["foreign"] == 1


def test_unreachable_broker_is_a_port_error(kind):
    from firmware_bridge.broker import free_port

    with pytest.raises(PortError, match="not reachable"):
        open_source(f"mqtt://127.0.0.1:{free_port()}", kind).start(timeout=0.5)


def test_bulk_source_keeps_an_idle_connection_alive_and_notices_a_silent_broker(broker):
    src = BulkMqttSource(broker.url + "/test", NAMES, keepalive=1).start()
    assert wait_until(src, lambda: False, 3.0) is False  # 3 keep-alive periods, no traffic
    assert src.connected.is_set() and src.counters["disconnects"] == 0
    broker._proc.send_signal(signal.SIGSTOP)  # the broker hangs: nothing comes back
    try:
        assert wait_until(src, lambda: not src.connected.is_set(), 5.0)
    finally:
        broker._proc.send_signal(signal.SIGCONT)
    assert wait_until(src, src.connected.is_set, 10.0)
    src.close()
    assert src.counters["connects"] == 2 and src.counters["disconnects"] == 1
