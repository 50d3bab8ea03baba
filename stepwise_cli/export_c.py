"""``stepwise export-c``: the firmware files of built artifacts."""
from __future__ import annotations

from pathlib import Path

import click

from firmware_bridge.export_c import export_c
from runtime.contract import load_contract
from runtime.engine import warmup_payload


@click.command("export-c")
@click.option("--artifacts", default="artifacts", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Built artifacts folder.")
@click.option("--out", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder  [default: <artifacts>/firmware]")
def export_c_cmd(artifacts: Path, out: Path | None) -> None:
    """Model arrays (<variant>_model_data.h/.cc) and stepwise_model.h for firmware."""
    contract = load_contract(artifacts)
    warm = warmup_payload(artifacts) if contract.window.mode == "window_head" else None
    for path in export_c(contract, artifacts, out, warm):
        click.echo(str(path))
