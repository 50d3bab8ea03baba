"""Prometheus metrics of the daemon (``--metrics HOST:PORT``), with the official client.

One private registry per daemon, served by prometheus-client's own HTTP server on a
thread. Names follow the Prometheus conventions (``stepwise_`` prefix, base units,
``_total`` counters); the only label is ``reason`` on rejects, from a fixed set of
reasons: never a label per stream id, so the series count does not grow with streams.
"""
from __future__ import annotations

import logging
import time

from runtime.errors import ConfigError

log = logging.getLogger(__name__)

# step latency of one batched invoke: from tens of microseconds to a second
STEP_BUCKETS = (25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
                50e-3, 100e-3, 250e-3, 1.0)
CHECKPOINT_BUCKETS = (1e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 0.5, 1.0, 2.5, 5.0, 10.0)


def parse_hostport(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9100"``, ``":9100"`` (all interfaces) or ``"[::1]:9100"``."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not 0 <= number <= 65535:
        raise ConfigError(f"--metrics {text!r}: expected HOST:PORT (port 0..65535)")
    return host, number


class Metrics:
    """The daemon's metrics; ``serve(host, port)`` starts the endpoint."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.samples = Counter("stepwise_samples", "Samples received", registry=r)
        self.predictions = Counter("stepwise_predictions", "Predictions made", registry=r)
        self.rejects = Counter("stepwise_rejects", "Samples or payloads rejected, by reason",
                               ["reason"], registry=r)
        self.resets = Counter("stepwise_resets", "Stream resets requested by a device",
                              registry=r)
        self.active_streams = Gauge("stepwise_active_streams", "Streams holding an engine lane",
                                    registry=r)
        self.known_streams = Gauge("stepwise_known_streams",
                                   "Streams with state (active or parked)", registry=r)
        self.lanes = Gauge("stepwise_engine_lanes", "Lanes of the engine's batch", registry=r)
        self.step_seconds = Histogram("stepwise_step_seconds", "Time of one batched step "
                                      "(all pending streams, one invoke)", buckets=STEP_BUCKETS,
                                      registry=r)
        self.checkpoint_seconds = Histogram("stepwise_checkpoint_duration_seconds",
                                            "Time to write one checkpoint",
                                            buckets=CHECKPOINT_BUCKETS, registry=r)
        self.checkpoint_failures = Counter("stepwise_checkpoint_failures",
                                           "Checkpoints that could not be written", registry=r)
        self.broker_connected = Gauge("stepwise_mqtt_connected",
                                      "1 while connected to the MQTT broker", registry=r)
        self._last_checkpoint = time.time()
        Gauge("stepwise_checkpoint_age_seconds", "Seconds since the last written checkpoint "
              "(or since start)", registry=r).set_function(
                  lambda: time.time() - self._last_checkpoint)
        self.server = None

    def checkpointed(self, seconds: float, ok: bool) -> None:
        if ok:
            self.checkpoint_seconds.observe(seconds)
            self._last_checkpoint = time.time()
        else:
            self.checkpoint_failures.inc()

    def serve(self, host: str, port: int) -> tuple[str, int]:
        """Start the HTTP endpoint (``/metrics``); the address it listens on."""
        from prometheus_client import start_http_server

        try:
            self.server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            raise ConfigError(f"--metrics {host}:{port}: cannot listen ({e.strerror})") from None
        bound = self.server.server_address[:2]
        log.info("metrics on http://%s:%d/metrics", bound[0], bound[1])
        return bound

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
