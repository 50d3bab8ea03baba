"""``stepwise serve --mqtt`` as real processes against a real Mosquitto broker.

A paho client plays the sensors (publishes samples of several streams, interleaved) and
the consumer (subscribes to the predictions). Every stream's predictions must equal the
engine run on that stream's samples alone; restarts, idle streams, bad payloads, a broker
restart, two sharded daemons and the metrics endpoint are exercised on real processes.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

paho = pytest.importorskip("paho.mqtt.client")
pytest.importorskip("prometheus_client")

from runtime.engine import Engine  # noqa: E402
from runtime.shard import shard_of  # noqa: E402
from tests.needs import missing  # noqa: E402

TIMEOUT = 30.0
RESET = "window:7"


class Sensors:
    """Publishes samples and collects the predictions, by stream."""

    def __init__(self, broker, prefix="t"):
        self.prefix = prefix
        self.got: dict[str, list[dict]] = {}
        self.lock = threading.Lock()
        ready = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(f"{prefix}/+/prediction", qos=1)
        assert ready.wait(5)

    def _on_message(self, client, userdata, msg):
        record = json.loads(msg.payload)
        with self.lock:
            self.got.setdefault(msg.topic.split("/")[1], []).append(record)

    def send(self, stream: str, payload: bytes, kind: str = "sample") -> None:
        self.client.publish(f"{self.prefix}/{stream}/{kind}", payload, qos=1).wait_for_publish(5)

    def play(self, data: dict, ks: range) -> None:
        """Samples ``ks`` of every stream of ``data``, interleaved; waits for their predictions."""
        for k in ks:
            for s, xs in data.items():
                self.send(s, line(xs[k]))
        self.wait_for({s: ks.stop for s in data})

    def wait_for(self, counts: dict[str, int], timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if all(len(self.got.get(s, [])) >= n for s, n in counts.items()):
                    return
            time.sleep(0.02)
        raise AssertionError(f"predictions {({s: len(v) for s, v in self.got.items()})}, "
                             f"expected {counts}")

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


RUNNING: list = []  # daemons of the current test, killed at its end if still running


@pytest.fixture(autouse=True)
def no_daemon_left():
    yield
    while RUNNING:
        proc = RUNNING.pop().proc
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


class Daemon:
    def __init__(self, artifacts, broker, state: Path, *extra: str, prefix="t"):
        cmd = [sys.executable, "-m", "stepwise_cli", "serve", "--artifacts", str(artifacts),
               "--mqtt", f"{broker.url}/{prefix}", "--state-dir", str(state), "--reset", RESET,
               "--checkpoint-interval", "0.3", "--status-interval", "0.5", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        RUNNING.append(self)
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_log("MQTT connected")

    def _read(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def wait_log(self, text: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.log):
                if text in line:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not logged; log:\n{''.join(self.log)}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(TIMEOUT)
        self._reader.join(5)
        return rc


def samples(n_streams, n, seed=0):
    rng = np.random.default_rng(seed)
    return {f"s{k}": rng.normal(size=(n, 3)).astype(np.float32) for k in range(n_streams)}


def line(x) -> bytes:
    return ",".join(repr(float(v)) for v in x).encode()


def expected(artifacts, xs) -> np.ndarray:
    eng = Engine.load(artifacts, reset=RESET)
    return np.array([eng.step(x).y for x in xs])


def ys(records) -> np.ndarray:
    return np.array([r["y"] for r in sorted(records, key=lambda r: r["i"])])


def assert_replayed(artifacts, got: dict, data: dict) -> None:
    """Every stream answered once per sample, in order, exactly as its own replay."""
    for s, xs in data.items():
        assert sorted(r["i"] for r in got[s]) == list(range(len(xs)))
        np.testing.assert_allclose(ys(got[s]), expected(artifacts, xs), atol=1e-6, rtol=0)


@pytest.fixture
def sensors(broker):
    s = Sensors(broker)
    yield s
    s.close()


def test_interleaved_streams_restart_and_idle_return(tiny_artifacts, broker, sensors, tmp_path):
    data = samples(4, 12)
    d = Daemon(tiny_artifacts, broker, tmp_path / "state", "--stream-idle", "0.5")
    for k in range(8):  # interleaved; s3 sends two lines per message
        for s, xs in data.items():
            if s != "s3":
                sensors.send(s, line(xs[k]))
            elif k % 2:
                sensors.send(s, line(xs[k - 1]) + b"\n" + line(xs[k]))
    sensors.wait_for({s: 8 for s in data})
    d.wait_log("gave up their lanes")  # all idle for 0.5 s: parked, state kept
    assert d.stop() == 0
    assert "shutdown checkpoint written" in "".join(d.log)
    d = Daemon(tiny_artifacts, broker, tmp_path / "state", "--stream-idle", "0.5")
    d.wait_log("4 stream state(s) restored")
    sensors.play(data, range(8, 12))
    assert d.stop() == 0
    for s in data:
        assert all(r["stream"] == s and "label" in r and "t" in r for r in sensors.got[s])
    assert_replayed(tiny_artifacts, sensors.got, data)


def test_bad_payloads_are_isolated_and_counted_in_metrics(tiny_artifacts, broker, sensors,
                                                          tmp_path):
    d = Daemon(tiny_artifacts, broker, tmp_path / "state", "--metrics", "127.0.0.1:0")
    port = int(re.search(r"metrics on http://127.0.0.1:(\d+)/", d.wait_log("metrics on")).group(1))
    good = samples(1, 3, seed=5)["s0"]
    sensors.send("good", line(good[0]))
    sensors.send("bad", b"1,2\nnan,nan,nan\n\xff\n" + b"9" * 5000)
    sensors.send("good", line(good[1]) + b"\nhello")  # a bad line in a good stream's message
    sensors.send("bad", line(good[0]))
    sensors.send("good", line(good[2]))
    sensors.wait_for({"good": 3, "bad": 1})
    time.sleep(1.2)  # the gauges and reject counts are carried into the metrics every second
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert d.stop() == 0
    from prometheus_client.parser import text_string_to_metric_families

    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for f in text_string_to_metric_families(text) for s in f.samples}
    assert got[("stepwise_predictions_total", ())] == 4
    assert got[("stepwise_samples_total", ())] == 4
    assert got[("stepwise_rejects_total", (("reason", "field_count"),))] == 1
    assert got[("stepwise_rejects_total", (("reason", "non_finite"),))] == 1
    assert got[("stepwise_rejects_total", (("reason", "not_numeric"),))] == 1
    assert got[("stepwise_rejects_total", (("reason", "line_too_long"),))] == 1
    assert got[("stepwise_active_streams", ())] == 2
    assert got[("stepwise_mqtt_connected", ())] == 1
    assert got[("stepwise_step_seconds_count", ())] >= 3
    assert not any(dict(labels).keys() - {"reason", "le"} for _, labels in got)
    np.testing.assert_allclose(ys(sensors.got["good"]), expected(tiny_artifacts, good), atol=1e-6)
    np.testing.assert_allclose(ys(sensors.got["bad"]), expected(tiny_artifacts, good[:1]), atol=1e-6)


@pytest.mark.parametrize("client", ["bulk", "paho", "libmosquitto"])
def test_broker_restart_reconnects_and_keeps_state(tiny_artifacts, broker, tmp_path, client):
    from firmware_bridge.mqtt_clients import libmosquitto

    if client == "libmosquitto" and libmosquitto() is None:
        missing("libmosquitto is not installed (it comes with mosquitto: make tools)")
    xs = samples(1, 6, seed=7)["s0"]
    d = Daemon(tiny_artifacts, broker, tmp_path / "state", "--mqtt-client", client)
    s = Sensors(broker)
    for x in xs[:3]:
        s.send("s0", line(x))
    s.wait_for({"s0": 3})
    s.close()
    broker.stop()
    d.wait_log("connection to")
    broker.start()
    deadline = time.monotonic() + TIMEOUT
    while sum("MQTT connected" in x for x in d.log) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    s = Sensors(broker)
    for x in xs[3:]:
        s.send("s0", line(x))
    s.wait_for({"s0": 3})
    s.close()
    assert d.stop() == 0
    np.testing.assert_allclose(ys(s.got["s0"]), expected(tiny_artifacts, xs)[3:], atol=1e-6)


def test_two_sharded_daemons_split_streams_and_one_takes_over(tiny_artifacts, broker, sensors,
                                                              tmp_path):
    data = samples(8, 10, seed=9)
    owner = {s: shard_of(s, 2) for s in data}
    assert set(owner.values()) == {0, 1}
    state = tmp_path / "shared"
    a = Daemon(tiny_artifacts, broker, state, "--shard", "0/2")
    b = Daemon(tiny_artifacts, broker, state, "--shard", "1/2")
    sensors.play(data, range(6))
    time.sleep(0.3)
    assert all(len(v) == 6 for v in sensors.got.values())  # exactly one daemon answered each
    assert b.stop() == 0
    assert (state / "shard-1-of-2" / "state.ckpt").exists()
    assert a.stop() == 0
    a = Daemon(tiny_artifacts, broker, state, "--shard", "0,1/2")  # takes over shard 1
    a.wait_log("8 stream state(s) restored")
    sensors.play(data, range(6, 10))
    assert a.stop() == 0
    assert_replayed(tiny_artifacts, sensors.got, data)


def test_a_running_daemon_takes_over_a_stopped_peers_shard_and_hands_it_back(
        tiny_artifacts, broker, sensors, tmp_path):
    data = samples(8, 12, seed=13)
    assert {shard_of(s, 2) for s in data} == {0, 1}
    state = tmp_path / "shared"
    a = Daemon(tiny_artifacts, broker, state, "--shard", "0/2", "--lease", "3")
    b = Daemon(tiny_artifacts, broker, state, "--shard", "1/2", "--lease", "3")
    sensors.play(data, range(4))
    assert b.stop() == 0  # final checkpoint, then its lease is released
    n1 = sum(shard_of(s, 2) == 1 for s in data)
    a.wait_log(f"took over shard 1/2: {n1} stream state(s) restored")
    sensors.play(data, range(4, 8))  # a, still running, now answers every stream
    assert all(len(v) == 8 for v in sensors.got.values())
    b = Daemon(tiny_artifacts, broker, state, "--shard", "1/2", "--lease", "3")
    b.wait_log("waiting for it to hand the shard back")
    a.wait_log("shard 1/2 handed back")
    b.wait_log(f"took over shard 1/2: {n1} stream state(s) restored")
    sensors.play(data, range(8, 12))
    time.sleep(0.3)
    assert a.stop() == 0 and b.stop() == 0
    assert {s: len(v) for s, v in sensors.got.items()} == {s: 12 for s in data}  # one answer each
    assert_replayed(tiny_artifacts, sensors.got, data)
    leases = [json.loads(p.read_text()) for p in (state / "leases").glob("*.lease")]
    assert len(leases) == 2 and all(x["expires"] == 0 for x in leases)  # released on the way out
    assert not list((state / "leases").glob("*.alive"))


def test_home_assistant_discovery_config_is_retained_per_stream(tiny_artifacts, broker, sensors,
                                                                tmp_path):
    d = Daemon(tiny_artifacts, broker, tmp_path / "state", "--ha-discovery", "homeassistant")
    xs = samples(1, 2, seed=3)["s0"]
    sensors.send("pump-1.a", line(xs[0]))
    sensors.send("pump-1.a", line(xs[1]))  # announced once only
    sensors.wait_for({"pump-1.a": 2})
    assert d.stop() == 0
    got, ready = [], threading.Event()  # subscribed after the fact: the retained copy
    c = paho.Client(paho.CallbackAPIVersion.VERSION2)
    c.on_message = lambda cl, u, m: got.append((m.topic, m.retain, json.loads(m.payload)))
    c.on_subscribe = lambda *a: ready.set()
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.subscribe("homeassistant/#", qos=1)
    assert ready.wait(5)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    c.disconnect()
    c.loop_stop()
    eng = Engine.load(tiny_artifacts)
    assert got == [("homeassistant/sensor/stepwise/t_pump-1_a/config", True, {
        "name": "prediction", "unique_id": "stepwise_t_pump-1_a", "object_id": "stepwise_t_pump-1_a",
        "state_topic": "t/pump-1.a/prediction", "value_template": "{{ value_json.label }}",
        "json_attributes_topic": "t/pump-1.a/prediction",
        "json_attributes_template":
            "{{ {'y': value_json.y, 'step': value_json.step, 'seq': value_json.seq} | tojson }}",
        "device": {"identifiers": ["stepwise_t_pump-1_a"], "name": "pump-1.a",
                   "manufacturer": "stepwise", "model": f"step model {eng.model_sha256[:12]}"},
        "icon": "mdi:chart-bell-curve-cumulative"})]


def test_many_stream_options_are_checked_at_the_command_line(tiny_artifacts, tmp_path):
    from click.testing import CliRunner

    from stepwise_cli.main import cli

    r = CliRunner().invoke(cli, ["serve", "--artifacts", str(tiny_artifacts), "--port", "loop://",
                                 "--ha-discovery", "homeassistant"])
    assert r.exit_code == 2 and "--ha-discovery needs --mqtt" in r.output
    r = CliRunner().invoke(cli, ["serve", "--artifacts", str(tiny_artifacts), "--mqtt",
                                 "mqtt://127.0.0.1:1/t", "--mqtt-qos", "2"])
    assert r.exit_code == 2 and "--mqtt-qos" in r.output
