"""``make serve``: the firmware simulator -> a pseudo-terminal -> the daemon, live.

Runs ``stepwise simulate --pty LINK`` (a simulated sensor board behind a pty whose
device side is the symlink LINK) and ``stepwise serve --port LINK``, and prints the
daemon's predictions as they arrive, until Ctrl-C (or ``--seconds``).
"""
from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click


@click.command()
@click.option("--artifacts", default="artifacts", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--rate", default=20.0, show_default=True, help="Samples per second from the simulated board.")
@click.option("--protocol", default="text", type=click.Choice(["text", "cobs"]), show_default=True)
@click.option("--seconds", default=0.0, help="Stop after this long (0: until Ctrl-C).")
def main(artifacts: Path, rate: float, protocol: str, seconds: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="stepwise-demo-"))
    link = work / "ttySIM"
    cli = [sys.executable, "-m", "stepwise_cli"]
    sim = subprocess.Popen(cli + ["simulate", "--pty", str(link), "--input", str(artifacts / "test_data.npz"),
                                  "--rate", str(rate), "--repeat", "0", "--protocol", protocol])
    try:
        for _ in range(100):
            if link.exists():
                break
            time.sleep(0.05)
        serve = subprocess.Popen(cli + ["serve", "--artifacts", str(artifacts), "--port", str(link),
                                        "--protocol", protocol, "--state-dir", str(work / "state"),
                                        "--status-interval", "5"])
        click.echo(f"simulator -> {link} -> daemon (state in {work / 'state'}); Ctrl-C to stop", err=True)
        try:
            if seconds > 0:
                time.sleep(seconds)
            else:
                serve.wait()
        except KeyboardInterrupt:
            pass
        serve.send_signal(signal.SIGTERM)
        serve.wait(20)
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(20)


if __name__ == "__main__":
    main()
