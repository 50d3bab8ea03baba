"""``stepwise replay``: a data file through the device engine, JSON lines out."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from runtime.backend import backend_names
from runtime.replay import ReplayOptions, run_replay


@click.command("replay")
@click.option("--artifacts", default="artifacts", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Built artifacts folder.")
@click.option("--variant", default=None, help="Model variant (default: the manifest's).")
@click.option("--reset", "reset", default=None, metavar="POLICY",
              help="window:N, sliding:N, gap:SECONDS or never. Given: the file is one "
                   "stream reset only by it. Default: the manifest's policy, plus a reset "
                   "at every sequence of the file.")
@click.option("--backend", default=None, type=click.Choice(backend_names()),
              help="Interpreter package (default: first installed, or $STEPWISE_BACKEND).")
@click.option("--warmup/--no-warmup", default=True, show_default=True,
              help="Write the warm-up outputs (from zero-left-padded windows, marked "
                   "\"warmup\": true) or leave them out.")
@click.argument("input_file", metavar="INPUT", type=click.Path(dir_okay=False, path_type=Path))
def replay_cmd(artifacts: Path, variant: str | None, reset: str | None, backend: str | None,
               warmup: bool, input_file: Path) -> None:
    """Stream INPUT (.npz or .csv) through the runtime; one JSON object per sample."""
    run_replay(ReplayOptions(artifacts, input_file, variant=variant, reset=reset, backend=backend,
                             warmup=warmup), sys.stdout)
