"""``python -m bench.live_bench --artifacts DIR --device-python PATH``: what the live view costs.

The daemon (device environment, pinned to one CPU, fed through a real pty as in row 6 of
``make bench``) is measured four times: without ``--http``; with it and no viewer; with
one viewer reading the event stream; with one viewer that connects and never reads.
Each run: latency at 1 kHz (sample written -> prediction read), maximum throughput,
and the live view's own counters from ``/api/state`` (points handed over, dropped).
Prints a markdown table; writes ``live_bench.json`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import socket
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench.daemon_bench import BenchError, DaemonHarness, paced_latency, throughput
from bench.run import ROOT, _daemon_command
from bench.tflite_rows import load_samples
from firmware_bridge.text import format_sample
from runtime.contract import load_contract

log = logging.getLogger(__name__)

MODES = ("off", "no viewer", "reading viewer", "stuck viewer")


def _live_url(h: DaemonHarness, timeout: float = 10.0) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = re.search(r"live view on (\S+)", h.stderr_path.read_text(errors="replace"))
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise BenchError(f"the daemon did not report its live view: {h.stderr_tail()}")


def _reader(url: str, stop: threading.Event, got: list) -> None:
    with urllib.request.urlopen(url + "events", timeout=30) as r:
        while not stop.is_set():
            line = r.readline()
            if not line:
                return
            got[0] += line.startswith(b"event: points")


def _stuck(url: str) -> socket.socket:
    host, port = re.match(r"http://([^:/]+):(\d+)/", url).groups()
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: bench\r\n\r\n")
    return sock


def measure(mode: str, command: list[str], work: Path, lines: list[bytes], paced: int, flood: int) -> dict:
    http = [] if mode == "off" else ["--http", "127.0.0.1:0"]
    h = DaemonHarness(command + http, ROOT, work / f"daemon-{mode.replace(' ', '-')}.stderr")
    h.start()
    stop, got, sock, thread = threading.Event(), [0], None, None
    try:
        h.wait_ready(lines[0], 30.0)
        url = _live_url(h) if http else None
        if mode == "reading viewer":
            thread = threading.Thread(target=_reader, args=(url, stop, got), daemon=True)
            thread.start()
        elif mode == "stuck viewer":
            sock = _stuck(url)
        h.drain()
        lat = paced_latency(h, [lines[i % len(lines)] for i in range(paced + 200)], 1000.0, 200)
        tput = throughput(h, [lines[i % len(lines)] for i in range(flood)])
        time.sleep(0.6)  # one more counters snapshot
        counters = {}
        if url:
            with urllib.request.urlopen(url + "api/state", timeout=10) as r:
                counters = json.loads(r.read())["counters"]
    finally:
        stop.set()
        if sock is not None:
            sock.close()
        h.stop()
    return {"mode": mode, "latency": lat, "throughput": tput, "viewer_events": got[0],
            "live": {k: v for k, v in counters.items() if k.startswith("live_")}}


def table(results: list[dict]) -> str:
    rows = ["| live view | p50 µs at 1 kHz | p99 µs | answered at 1 kHz | max samples/s | answered (flood) "
            "| points handed to the view | dropped (hand-off / viewers) |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lat, t, live = r["latency"], r["throughput"], r["live"]
        view = f"{live['live_kept']:,} of {live['live_offered']:,}" if live else "-"
        drops = f"{live['live_dropped']} / {live['live_client_dropped']}" if live else "-"
        rows.append(f"| {r['mode']} | {lat['median_us']:,.0f} | {lat['p99_us']:,.0f} | {lat['answered']:,} of "
                    f"{lat['sent']:,} | {t['samples_per_s']:,.0f} | {t['answered']:,} of {t['samples']:,} | "
                    f"{view} | {drops} |")
    return "\n".join(rows)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.live_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="built artifacts folder")
    parser.add_argument("--device-python", type=Path, required=True, help="the device environment's python")
    parser.add_argument("--paced", type=int, default=2000, help="samples timed at 1 kHz per run (2000)")
    parser.add_argument("--flood", type=int, default=20000, help="samples of the throughput run (20000)")
    parser.add_argument("--out", type=Path, default=None, help="folder for live_bench.json (<artifacts>/bench)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    contract = load_contract(args.artifacts)
    lines = [format_sample(s) for s in load_samples(args.artifacts, contract)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        command = _daemon_command(args.device_python, args.artifacts, work / "state")
        results = []
        for mode in MODES:
            log.info("live view: %s", mode)
            results.append(measure(mode, command, work, lines, args.paced, args.flood))
    out = args.out or args.artifacts / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "live_bench.json").write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
