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
from runtime.systemd import state_directory


def serve(opts: ServeOptions) -> int:
    """Load the model and state, open the port, serve until SIGTERM/SIGINT; the exit code."""
    daemon = Daemon(opts)
    daemon.install_signals()
    # replies go through the link's bounded queue; a short write timeout keeps its writer
    # thread moving past a board that never reads them
    link = Link.open(opts.port, opts.protocol, opts.baud,
                     feature_names=daemon.contract.input.feature_names, write_timeout=0.05)
    return daemon.run(link)


@click.command("serve")
@click.option("--artifacts", default="artifacts", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Built artifacts folder.")
@click.option("--port", required=True, help="Serial port: a device path or a pyserial URL (loop://, socket://...).")
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
def serve_cmd(artifacts, port, baud, protocol, state_dir, checkpoint_interval, reset, variant, output, reply,
              status_interval, backend) -> None:
    """The on-device daemon: samples from a serial port in, one prediction per sample out."""
    opts = ServeOptions(artifacts=artifacts, port=port, baud=baud, protocol=protocol,
                        state_dir=state_dir or state_directory(), checkpoint_interval=checkpoint_interval,
                        reset=reset, variant=variant, output=output, reply=reply,
                        status_interval=status_interval, backend=backend)
    sys.exit(serve(opts))
