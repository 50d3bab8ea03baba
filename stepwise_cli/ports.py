"""``stepwise ports``: the serial ports of this machine."""
from __future__ import annotations

import json

import click

from firmware_bridge.ports import format_port_table, list_serial_ports


@click.command("ports")
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
def ports_cmd(as_json: bool) -> None:
    """List serial ports (device, description, VID:PID, serial number, manufacturer)."""
    rows = list_serial_ports()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo("no serial ports found", err=True)
    else:
        for line in format_port_table(rows):
            click.echo(line)
