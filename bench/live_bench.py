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
import os
import re
import socket
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench.daemon_bench import BenchError, DaemonHarness, paced_latency, throughput
from bench.run import ROOT, _daemon_command
from bench.tflite_rows import load_samples
from firmware_bridge.text import format_sample
from runtime.contract import load_contract

log = logging.getLogger(__name__)

MODES = ("off", "no viewer", "reading viewer", "stuck viewer")


def _free_port() -> int:
    """A port free now (the daemon runs with ``-q``: it does not log the one it would pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    port = _free_port()
    http = [] if mode == "off" else ["--http", f"127.0.0.1:{port}"]
    h = DaemonHarness(command + http, ROOT, work / f"daemon-{mode.replace(' ', '-')}.stderr")
    h.start()
    stop, got, sock, thread = threading.Event(), [0], None, None
    try:
        h.wait_ready(lines[0], 30.0)
        url = f"http://127.0.0.1:{port}/" if http else None
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


def summarize(runs: list[dict]) -> dict:
    """One mode over its rounds: medians (and the range) of the timings, sums of the counts."""
    med = lambda xs: float(np.median(xs))  # noqa: E731
    tput = [r["throughput"]["samples_per_s"] for r in runs]
    live = [r["live"] for r in runs if r["live"]]
    return {"mode": runs[0]["mode"], "rounds": len(runs),
            "p50_us": med([r["latency"]["median_us"] for r in runs]),
            "p99_us": med([r["latency"]["p99_us"] for r in runs]),
            "paced": (sum(r["latency"]["answered"] for r in runs), sum(r["latency"]["sent"] for r in runs)),
            "samples_per_s": med(tput), "samples_per_s_range": (min(tput), max(tput)),
            "flood": (sum(r["throughput"]["answered"] for r in runs), sum(r["throughput"]["samples"] for r in runs)),
            "live": {k: sum(d[k] for d in live) for k in ("live_offered", "live_kept", "live_dropped",
                                                          "live_client_dropped")} if live else {}}


def table(summaries: list[dict]) -> str:
    rows = ["| live view | p50 µs at 1 kHz | p99 µs | answered at 1 kHz | max samples/s (range) | answered (flood) "
            "| points handed to the view | dropped: hand-off / viewer |", "|---|---|---|---|---|---|---|---|"]
    for m in summaries:
        live = m["live"]
        view = f"{live['live_kept']:,} of {live['live_offered']:,}" if live else "-"
        drops = f"{live['live_dropped']} / {live['live_client_dropped']}" if live else "-"
        lo, hi = m["samples_per_s_range"]
        rows.append(f"| {m['mode']} | {m['p50_us']:,.0f} | {m['p99_us']:,.0f} | {m['paced'][0]:,} of "
                    f"{m['paced'][1]:,} | {m['samples_per_s']:,.0f} ({lo:,.0f}-{hi:,.0f}) | {m['flood'][0]:,} of "
                    f"{m['flood'][1]:,} | {view} | {drops} |")
    return "\n".join(rows)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.live_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="built artifacts folder")
    parser.add_argument("--device-python", type=Path, required=True, help="the device environment's python")
    parser.add_argument("--paced", type=int, default=2000, help="samples timed at 1 kHz per run (2000)")
    parser.add_argument("--flood", type=int, default=20000, help="samples of the throughput run (20000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the modes interleaved in each (3)")
    parser.add_argument("--out", type=Path, default=None, help="folder for live_bench.json (<artifacts>/bench)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    contract = load_contract(args.artifacts)
    lines = [format_sample(s) for s in load_samples(args.artifacts, contract)]
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        command = _daemon_command(args.device_python, args.artifacts, work / "state")
        runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
        for k in range(args.rounds):
            for mode in MODES:
                log.info("round %d, live view: %s", k + 1, mode)
                runs[mode].append(measure(mode, command, work, lines, args.paced, args.flood))
    load.append(os.getloadavg()[0])
    summaries = [summarize(r) for r in runs.values()]
    out = args.out or args.artifacts / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "live_bench.json").write_text(json.dumps({"load_average": load, "runs": runs, "summary": summaries},
                                                    indent=1) + "\n")
    print(f"{args.rounds} rounds of {args.paced:,} samples at 1 kHz and {args.flood:,} as fast as the pty takes "
          f"them, per mode; load average {load[0]:.1f} at the start, {load[1]:.1f} at the end "
          f"({os.cpu_count()} CPUs)\n")
    print(table(summaries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
