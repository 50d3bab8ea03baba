"""``stepwise serve``: the on-device daemon on a serial port.

The composition of the device side: the daemon (``runtime.daemon``) served from the
serial link (``firmware_bridge.link``), which is the one sample source wired here.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from firmware_bridge.link import Link
from runtime.daemon import Daemon, ServeOptions
from runtime.live_http import open_live_view, parse_address
from runtime.systemd import state_directory


def serve(opts: ServeOptions) -> int:
    """Load the model and state, open the port, serve until SIGTERM/SIGINT; the exit code."""
    daemon = Daemon(opts)
    daemon.install_signals()
    live = open_live_view(daemon, daemon.engine, opts.http) if opts.http else None  # an address in use fails before the port opens
    try:
        # replies go through the link's bounded queue; a short write timeout keeps its writer
        # thread moving past a board that never reads them
        link = Link.open(opts.port, opts.protocol, opts.baud,
                         feature_names=daemon.contract.input.feature_names, write_timeout=0.05)
        return daemon.run(link)
    finally:
        if live is not None:
            live.stop()


@click.command("serve")
@click.option("--artifacts", default="artifacts", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Built artifacts folder.")
@click.option("--port", "ports", multiple=True, help="Serial port: a device path or a pyserial URL "
              "(loop://, socket://...). Repeat it to serve several ports, each one stream.")
@click.option("--baud", default=115200, show_default=True, type=click.IntRange(min=1))
@click.option("--protocol", default="text", show_default=True, type=click.Choice(["text", "cobs"]))
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Checkpoint folder (default: $STATE_DIRECTORY from systemd, else ./state).")
@click.option("--checkpoint-interval", default=60.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between state checkpoints.")
@click.option("--reset", default=None, metavar="POLICY", help="window:N, sliding:N, gap:SECONDS or never "
              "(default: the manifest's).")
@click.option("--variant", default=None, help="Model variant (default: the manifest's default_variant).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON lines file (default: stdout); reopened on SIGHUP.")
@click.option("--reply/--no-reply", default=False, help="Text protocol: send 'p=... c=...' back per sample.")
@click.option("--status-interval", default=60.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between counter log lines / systemd STATUS updates.")
@click.option("--backend", default=None, help="Interpreter package (default: first installed).")
@click.option("--mqtt", default=None, metavar="URL", help="MQTT broker and topic prefix, "
              "mqtt://HOST[:PORT][/PREFIX]: streams are PREFIX/<stream>/sample (docs/PROTOCOL.md).")
@click.option("--mqtt-client", default="auto", show_default=True,
              type=click.Choice(["auto", "bulk", "paho", "libmosquitto"]),
              help="MQTT client (auto: bulk, stepwise's own reader of whole socket reads; "
                   "or the paho-mqtt / libmosquitto libraries).")
@click.option("--mqtt-qos", default=1, show_default=True, type=click.IntRange(0, 1),
              help="QoS of the published predictions.")
@click.option("--max-streams", default=1024, show_default=True, type=click.IntRange(min=1),
              help="Most streams holding an engine lane at once (many-stream mode).")
@click.option("--stream-idle", default=300.0, show_default=True, type=click.FloatRange(min=0.001),
              help="Seconds without a sample after which a stream gives up its lane (its "
                   "state is kept and restored when it comes back).")
@click.option("--metrics", default=None, metavar="HOST:PORT",
              help="Serve Prometheus metrics on http://HOST:PORT/metrics.")
@click.option("--shard", default=None, metavar="I/N", help="Serve only the streams of shard I "
              "of N (rendezvous hashing of the stream id; I may be a list: 0,1/3).")
@click.option("--lease", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="With --shard and a shared --state-dir: hand shards over between running "
                   "daemons, with leases of this many seconds (0: off).")
@click.option("--ha-discovery", default=None, metavar="PREFIX",
              help="With --mqtt: announce each stream's prediction to Home Assistant (retained "
                   "config under PREFIX/sensor/..., usually PREFIX=homeassistant).")
@click.option("--warmup/--no-warmup", default=True, show_default=True,
              help="Write warm-up outputs (zero-padded windows, marked \"warmup\": true) or leave them out.")
@click.option("--http", default=None, metavar="HOST:PORT",
              help="Serve the live page there (off by default; PORT alone binds to loopback).")
def serve_cmd(artifacts, ports, baud, protocol, state_dir, checkpoint_interval, reset, variant, output, reply,
              status_interval, backend, mqtt, mqtt_client, mqtt_qos, max_streams, stream_idle,
              metrics, shard, lease, ha_discovery, warmup, http) -> None:
    """The on-device daemon: samples from a serial port (or many streams) in, one
    prediction per sample out."""
    if not ports and not mqtt:
        raise click.UsageError("give --port (one or more) or --mqtt")
    if ha_discovery and not mqtt:
        raise click.UsageError("--ha-discovery needs --mqtt (it announces MQTT topics)")
    if mqtt or len(ports) > 1 or metrics or shard:
        from stepwise_cli.serve_many import serve_many

        sys.exit(serve_many(artifacts=artifacts, ports=ports, mqtt=mqtt, baud=baud,
                            protocol=protocol, state_dir=state_dir or state_directory(),
                            checkpoint_interval=checkpoint_interval, reset=reset,
                            variant=variant, output=output, status_interval=status_interval,
                            backend=backend, max_streams=max_streams, stream_idle=stream_idle,
                            metrics=metrics, shard=shard, mqtt_client=mqtt_client,
                            mqtt_qos=mqtt_qos, lease=lease, ha_discovery=ha_discovery, http=None if http is None else parse_address(http)))
    port = ports[0]
    opts = ServeOptions(artifacts=artifacts, port=port, baud=baud, protocol=protocol,
                        state_dir=state_dir or state_directory(), checkpoint_interval=checkpoint_interval,
                        reset=reset, variant=variant, output=output, reply=reply,
                        status_interval=status_interval, backend=backend, warmup=warmup,
                        http=None if http is None else parse_address(http))
    sys.exit(serve(opts))
