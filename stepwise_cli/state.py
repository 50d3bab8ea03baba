"""``stepwise state show|clear``: inspect or clear the persisted state checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

import click

from runtime.state_report import check_show, clear_state, format_report, show_state
from runtime.systemd import state_directory

state_dir_option = click.option(
    "--state-dir", type=click.Path(path_type=Path), default=lambda: str(state_directory()),
    show_default="$STATE_DIRECTORY if set, else ./state", help="Where checkpoints are kept.",
)


@click.group("state")
def state_group() -> None:
    """Inspect or clear persisted state."""


@state_group.command("show")
@state_dir_option
@click.option("--artifacts", type=click.Path(path_type=Path), default=Path("artifacts"),
              show_default=True,
              help="If it holds a manifest, say whether the checkpoint fits that model.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show_cmd(state_dir: Path, artifacts: Path, as_json: bool) -> None:
    """Counters, age, model hash, per-tensor L2 norms and per-lane steps of the checkpoint."""
    info = show_state(state_dir, artifacts)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        for line in format_report(info):
            click.echo(line)
    check_show(info)


@state_group.command("clear")
@state_dir_option
def clear_cmd(state_dir: Path) -> None:
    """Move the checkpoints aside (to <state-dir>/cleared/) so the next start is fresh."""
    moved = clear_state(state_dir)
    if not moved:
        click.echo(f"nothing to clear in {state_dir}")
    for src, dest in moved:
        click.echo(f"moved {src} -> {dest}")
