"""``stepwise watch``: the command around ``runtime.watch``."""
from __future__ import annotations

import shutil
import sys

import click

from runtime.watch import WatchOptions, watch

DEFAULT_SOURCE = "http://127.0.0.1:8321/"


@click.command("watch")
@click.argument("source", default=DEFAULT_SOURCE, metavar="[SOURCE]")
@click.option("--stream", default=None, help="Live view with several streams: show this one.")
@click.option("--width", type=click.IntRange(min=8), default=None,
              help="Points per row (default: fits the terminal).")
@click.option("--follow/--no-follow", default=True, show_default=True,
              help="JSON-lines file: keep reading as it grows.")
@click.option("--once", is_flag=True, help="Print one frame and exit (scripts, logs).")
@click.option("--ascii", "ascii_", is_flag=True, help="ASCII characters instead of block characters.")
def watch_cmd(source: str, stream: str | None, width: int | None, follow: bool, once: bool, ascii_: bool) -> None:
    """Live chart in a terminal: SOURCE is a daemon's live view (serve --http; default
    http://127.0.0.1:8321/), a JSON-lines file of predictions, or - for standard input."""
    columns = shutil.get_terminal_size((100, 24)).columns
    opts = WatchOptions(source=source, stream=stream, width=width or max(8, columns - 45), follow=follow,
                        once=once, ascii=ascii_ or (sys.stdout.encoding or "").lower() not in ("utf-8", "utf8"))
    sys.exit(watch(opts, sys.stdout, stdin=sys.stdin.buffer))
