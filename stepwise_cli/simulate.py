"""``stepwise simulate``: the firmware emulator, streaming a data file to a serial port."""
from __future__ import annotations

import signal
from pathlib import Path

import click

from firmware_bridge.simulate import Faults, SimulateOptions, run_simulation

_probability = click.FloatRange(0.0, 1.0)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@click.command("simulate")
@click.option("--port", "url", metavar="URL", help="pyserial URL or device path to write to.")
@click.option("--pty", "pty_link", metavar="LINK", type=click.Path(dir_okay=False),
              help="Instead of --port: create a pseudo-terminal and point the symlink LINK at it "
                   "(then run 'stepwise serve --port LINK').")
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Data file (.npz or .csv) whose samples are sent.")
@click.option("--baud", default=115200, show_default=True, type=click.IntRange(min=1))
@click.option("--rate", default=0.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Samples per second (0: as fast as possible).")
@click.option("--protocol", type=click.Choice(["text", "cobs"]), default="text", show_default=True)
@click.option("--header/--no-header", default=False, show_default=True,
              help="text: send a header line of the data file's feature names first.")
@click.option("--reset-between/--no-reset-between", default=True, show_default=True,
              help="Send #reset / a RESET frame between sequences.")
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(min=0),
              help="Times to send the whole file (0: forever).")
@click.option("--drop", default=0.0, type=_probability, help="Probability a sample is never sent.")
@click.option("--corrupt", default=0.0, type=_probability, help="Probability a sample is sent damaged.")
@click.option("--garbage", default=0.0, type=_probability, help="Probability of a garbage line/frame before a sample.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the fault injection.")
@click.option("--disconnect-after", default=0, type=click.IntRange(min=0), metavar="N",
              help="Unplug the port every N samples (0: never).")
@click.option("--disconnect-wait", default=1.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Seconds the port stays unplugged.")
def simulate_cmd(url, pty_link, input_path, baud, rate, protocol, header, reset_between, repeat,
                 drop, corrupt, garbage, seed, disconnect_after, disconnect_wait) -> None:
    """Firmware emulator: stream a data file to a serial port, one sample at a time."""
    if (url is None) == (pty_link is None):
        raise click.UsageError("give exactly one of --port URL or --pty LINK")
    opts = SimulateOptions(Path(input_path), url=url, pty_link=pty_link, baud=baud, rate=rate,
                           protocol=protocol, header=header, reset_between=reset_between, repeat=repeat,
                           faults=Faults(drop, corrupt, garbage, disconnect_after, disconnect_wait, seed))
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM too unplugs cleanly
    try:
        report = run_simulation(opts, announce=lambda message: click.echo(message, err=True))
    finally:
        signal.signal(signal.SIGTERM, previous)
    click.echo(report.summary())
