"""``stepwise serve`` for many streams: options -> source, metrics, ``MultiDaemon``.

``serve_many`` is what ``stepwise serve`` runs with ``--mqtt``, several ``--port``s,
``--metrics`` or ``--shard``: the composition of the many-stream daemon
(``runtime.multiserve``) with its injected source (``firmware_bridge.mqtt`` or
``firmware_bridge.multiport``) and the Prometheus endpoint (``runtime.metrics``); it
runs until SIGTERM/SIGINT.
"""
from __future__ import annotations

import logging
from pathlib import Path

from runtime.errors import ConfigError
from runtime.multiserve import MultiDaemon, MultiServeOptions
from runtime.shard import ShardSpec

log = logging.getLogger(__name__)


def open_source(mqtt: str | None, ports, feature_names, accept=None, *,
                protocol: str = "text", baud: int = 115200, client: str = "auto", qos: int = 1):
    """An MQTT source (only the streams ``accept`` takes, if given) or a ``PortsSource``."""
    if mqtt and ports:
        raise ConfigError("--mqtt and --port cannot be combined: use one kind of source")
    if mqtt and client in ("auto", "bulk"):
        from firmware_bridge.mqtt_bulk import BulkMqttSource

        return BulkMqttSource(mqtt, feature_names, accept=accept, qos=qos).start()
    if mqtt:
        from firmware_bridge.mqtt import MqttSource

        return MqttSource(mqtt, feature_names, accept=accept, client=client, qos=qos).start()
    from firmware_bridge.multiport import PortsSource

    return PortsSource(list(ports), feature_names, protocol=protocol, baudrate=baud)


def serve_many(*, artifacts: Path, ports=(), mqtt: str | None = None, baud: int = 115200,
               protocol: str = "text", state_dir: Path, checkpoint_interval: float = 60.0,
               reset: str | None = None, variant: str | None = None, output: Path | None = None,
               status_interval: float = 60.0, backend: str | None = None,
               max_streams: int = 1024, stream_idle: float = 300.0, metrics: str | None = None,
               shard: str | None = None, mqtt_client: str = "auto", mqtt_qos: int = 1,
               lease: float = 0.0, ha_discovery: str | None = None, http: tuple[str, int] | None = None) -> int:
    """Run the many-stream daemon; its exit status."""
    spec = ShardSpec.parse(shard) if shard else ShardSpec((0,), 1)
    opts = MultiServeOptions(artifacts=Path(artifacts), state_dir=Path(state_dir),
                             checkpoint_interval=checkpoint_interval, reset=reset,
                             variant=variant, backend=backend, max_streams=max_streams,
                             stream_idle=stream_idle, shard=spec, output=output,
                             stdout=output is None and not mqtt,
                             status_interval=status_interval,
                             legacy_stream=ports[0] if len(ports) == 1 else None,
                             lease=lease if spec.count > 1 else 0.0, ha_discovery=ha_discovery)
    registry = live = None
    if metrics:
        from runtime.metrics import Metrics, parse_hostport

        registry = Metrics()
        registry.serve(*parse_hostport(metrics))
    try:
        daemon = MultiDaemon(opts, metrics=registry)
        if http:
            from runtime.live_http import open_live_view

            live = open_live_view(daemon, daemon.lanes.engine, http)
        source = open_source(mqtt, ports, daemon.lanes.engine.contract.input.feature_names,
                             daemon.accepts if spec.count > 1 else None, protocol=protocol,
                             baud=baud, client=mqtt_client, qos=mqtt_qos)
        daemon.install_signals()
        return daemon.run(source)
    finally:
        if live is not None:
            live.stop()
        if registry is not None:
            registry.close()
