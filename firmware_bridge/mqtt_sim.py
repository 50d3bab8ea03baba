"""Simulated sensors over MQTT: N streams of a data file published to a broker.

``MqttSimulator`` publishes, ``rate`` times a second, the next sample of every stream
to ``PREFIX/<stream>/sample`` (stream ``k`` reads the file's samples from its own
offset, round and round). ``python -m firmware_bridge.mqtt_sim --demo`` is the
many-stream ``make serve``: a private Mosquitto broker, the daemon serving it, N
simulated streams, and one line a second of what came back.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from firmware_bridge.mqtt import parse_mqtt_url
from firmware_bridge.text import format_sample
from runtime.datafile import read_sequences

log = logging.getLogger(__name__)


class MqttSimulator:
    def __init__(self, url: str, samples: np.ndarray, streams: int, rate: float):
        import paho.mqtt.client as mqtt

        self.address = parse_mqtt_url(url)
        self.lines = [format_sample(row).rstrip(b"\n") for row in samples]
        self.streams, self.rate = streams, rate
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.max_queued_messages_set(0)
        self.client.connect(self.address.host, self.address.port)
        self.client.loop_start()
        self.sent = 0

    def run(self, stop: threading.Event) -> None:
        t0, j = time.monotonic(), 0
        topics = [self.address.topic(f"sensor-{k:04d}", "sample") for k in range(self.streams)]
        while not stop.is_set():
            for k, topic in enumerate(topics):
                self.client.publish(topic, self.lines[(k * 37 + j) % len(self.lines)])
            self.sent += len(topics)
            j += 1
            stop.wait(max(0.0, t0 + j / self.rate - time.monotonic()))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Watcher:
    """Counts the predictions and remembers the latest label of each stream."""

    def __init__(self, url: str):
        import paho.mqtt.client as mqtt

        address = parse_mqtt_url(url)
        self.count, self.labels = 0, {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.connect(address.host, address.port)
        self.client.subscribe(f"{address.prefix}/+/prediction")
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        self.count += 1
        rec = json.loads(msg.payload)
        self.labels[rec["stream"]] = rec["label"]


def demo(artifacts: Path, streams: int, rate: float, seconds: float) -> None:
    from firmware_bridge.broker import LocalBroker

    samples = np.concatenate(read_sequences(artifacts / "test_data.npz").X)
    work = Path(tempfile.mkdtemp(prefix="stepwise-streams-demo-"))
    with LocalBroker() as broker:
        url = f"{broker.url}/demo"
        serve = subprocess.Popen([sys.executable, "-m", "stepwise_cli", "serve", "--artifacts",
                                  str(artifacts), "--mqtt", url, "--reset", "never",
                                  "--max-streams", str(max(streams, 1)), "--stream-idle", "10",
                                  "--state-dir", str(work / "state"), "--status-interval", "10",
                                  "--metrics", "127.0.0.1:0"])
        time.sleep(2.0)
        watcher, sim, stop = Watcher(url), MqttSimulator(url, samples, streams, rate), threading.Event()
        print(f"{streams} streams x {rate:g}/s -> {url} -> daemon (state in {work / 'state'}); "
              "Ctrl-C to stop", file=sys.stderr)
        thread = threading.Thread(target=sim.run, args=(stop,), daemon=True)
        thread.start()
        t0, last = time.monotonic(), 0
        try:
            while seconds <= 0 or time.monotonic() - t0 < seconds:
                time.sleep(1.0)
                shown = ", ".join(f"{s}={v}" for s, v in sorted(watcher.labels.items())[:4])
                print(f"sent {sim.sent}, predictions {watcher.count} (+{watcher.count - last}/s), "
                      f"streams answered {len(watcher.labels)}: {shown} ...", flush=True)
                last = watcher.count
        except KeyboardInterrupt:
            pass
        stop.set()
        thread.join(2)
        sim.close()
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m firmware_bridge.mqtt_sim")
    p.add_argument("--demo", action="store_true", help="broker + daemon + simulated streams")
    p.add_argument("--url", help="publish to this broker (without --demo)")
    p.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    p.add_argument("--input", type=Path, default=None, help="data file (default: test data)")
    p.add_argument("--streams", type=int, default=20)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=0.0, help="0: until Ctrl-C")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if a.demo:
        demo(a.artifacts, a.streams, a.rate, a.seconds)
        return 0
    if not a.url:
        p.error("give --url (or --demo)")
    samples = np.concatenate(read_sequences(a.input or a.artifacts / "test_data.npz").X)
    sim, stop = MqttSimulator(a.url, samples, a.streams, a.rate), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        sim.run(stop)
    except KeyboardInterrupt:
        pass
    sim.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
