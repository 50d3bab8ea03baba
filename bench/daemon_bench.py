"""Row 6: ``stepwise serve`` end to end through a real pseudo-terminal.

The daemon runs in the device environment and opens the slave side of ``os.openpty()``
as its serial port; the bench writes text sample lines to the master and reads the JSON
prediction lines from the daemon's stdout, time-stamping both with ``perf_counter``.

- ready: from spawn until the first prediction is read (a sample line is offered every
  millisecond meanwhile; the daemon discards the first line after opening the port);
- latency: samples fed at a fixed rate (absolute deadlines), sample written -> its
  prediction read, matched by the prediction's sample index ``i``;
- throughput: N samples written as fast as the pty takes them, until the last
  prediction has arrived;
- RSS: ``VmRSS`` once ready and ``VmHWM`` (peak) at the end, from ``/proc``.

The daemon (all its threads) is pinned to one CPU, and on a machine with more than one
the bench itself to the others, so the figures are those of one core.
"""
from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import subprocess
import time
import tty
from pathlib import Path

import numpy as np

from bench.timing import stats
from runtime.errors import StepwiseError

log = logging.getLogger(__name__)


class BenchError(StepwiseError):
    """A measurement could not be made (a probe or the daemon failed); says which and why."""


class DaemonHarness:
    """One daemon process on a fresh pty, its stdout read line by line with arrival times."""

    def __init__(self, command: list[str], cwd: Path, stderr_path: Path):
        cpus = sorted(os.sched_getaffinity(0))
        self.daemon_cpu = cpus[-1]
        self.bench_cpus = set(cpus[:-1]) or {self.daemon_cpu}
        self.command = command
        self.cwd = cwd
        self.stderr_path = stderr_path
        self.lines: list[tuple[float, bytes]] = []
        self._partial = b""

    def start(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line editing until the daemon configures it
        os.set_blocking(self.master, False)
        self.port = os.ttyname(self.slave)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        self._stderr = open(self.stderr_path, "wb")
        self._own_cpus = os.sched_getaffinity(0)
        os.sched_setaffinity(0, self.bench_cpus)
        cpu = self.daemon_cpu
        self.t_spawn = time.perf_counter()
        self.proc = subprocess.Popen([*self.command, "--port", self.port], cwd=self.cwd, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._stderr,
                                     preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
        self.out = self.proc.stdout.fileno()
        os.set_blocking(self.out, False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.out, selectors.EVENT_READ)

    # -- I/O -------------------------------------------------------------------------
    def read(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for output; record complete lines. Returns lines added."""
        if not self.sel.select(max(0.0, timeout)):
            return 0
        return self.consume()

    def consume(self) -> int:
        """Read what the daemon's stdout holds now; record complete lines."""
        now = time.perf_counter()
        try:
            chunk = os.read(self.out, 1 << 16)
        except BlockingIOError:
            return 0
        if not chunk:
            self._check_alive()
            return 0
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        self.lines.extend((now, line) for line in complete)
        return len(complete)

    def write(self, data: bytes) -> int:
        try:
            return os.write(self.master, data)
        except BlockingIOError:
            return 0

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"the daemon exited with code {self.proc.returncode}: {self.stderr_tail()}")

    def stderr_tail(self) -> str:
        self._stderr.flush()
        text = self.stderr_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-5:]) or "(no stderr)"

    def last_index(self) -> int:
        return int(json.loads(self.lines[-1][1])["i"])

    # -- phases ----------------------------------------------------------------------
    def wait_ready(self, line: bytes, timeout: float) -> float:
        """Offer ``line`` every millisecond until the first prediction; seconds since spawn."""
        deadline = self.t_spawn + timeout
        while not self.lines:
            if time.perf_counter() > deadline:
                raise BenchError(f"the daemon gave no prediction within {timeout} s: {self.stderr_tail()}")
            self._check_alive()
            self.write(line)
            self.read(0.001)
        return self.lines[0][0] - self.t_spawn

    def drain(self, quiet: float = 0.3) -> None:
        """Read until no line has arrived for ``quiet`` seconds."""
        while self.read(quiet):
            pass

    def rss_mb(self) -> dict[str, float]:
        fields = {}
        for row in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = row.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024.0
        return fields

    def stop(self) -> int:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            os.sched_setaffinity(0, self._own_cpus)
            self.sel.close()
            self.proc.stdout.close()
            self._stderr.close()
            os.close(self.master)
            os.close(self.slave)
        return self.proc.returncode


def paced_latency(h: DaemonHarness, lines: list[bytes], rate: float, warmup: int) -> dict:
    """Feed ``lines`` at ``rate`` Hz; latency of each prediction after the first ``warmup``.

    A sample counts as sent at its deadline; if the pty is full then, it waits in a
    backlog and that wait is part of its latency."""
    h.drain()
    base = h.last_index() + 1
    first_line = len(h.lines)
    n = len(lines)
    sent = np.zeros(n)
    period = 1.0 / rate
    t_next = time.perf_counter()
    deadline = t_next + n * period + 10.0
    k, backlog = 0, b""
    while len(h.lines) - first_line < n and time.perf_counter() < deadline:
        if k < n and time.perf_counter() >= t_next:
            sent[k] = time.perf_counter()
            backlog += lines[k]
            k += 1
            t_next += period
        if backlog:
            backlog = backlog[h.write(backlog):]
        h.read(t_next - time.perf_counter() if k < n else 0.05)
    got = {}
    for t, line in h.lines[first_line:]:
        got[int(json.loads(line)["i"]) - base] = t
    lat = np.array([got[j] - sent[j] for j in range(warmup, n) if j in got])
    if lat.size == 0:
        raise BenchError(f"no prediction arrived for the samples fed at {rate:g} Hz: {h.stderr_tail()}")
    return {"rate_hz": rate, **stats(lat), "sent": n - warmup, "answered": int(lat.size)}


def throughput(h: DaemonHarness, lines: list[bytes], stall: float = 3.0) -> dict:
    """Write all ``lines`` as fast as the pty takes them; samples/s until the last prediction."""
    h.drain()
    first_line = len(h.lines)
    data = memoryview(b"".join(lines))
    n = len(lines)
    h.sel.register(h.master, selectors.EVENT_WRITE)
    offset = 0
    t0 = last_progress = time.perf_counter()
    while len(h.lines) - first_line < n and time.perf_counter() - last_progress < stall:
        for key, _ in h.sel.select(0.05):
            if key.fd == h.out and h.consume():
                last_progress = time.perf_counter()
            elif key.fd == h.master:
                offset += h.write(data[offset:offset + 4096])
                last_progress = time.perf_counter()
                if offset == len(data):
                    h.sel.unregister(h.master)
    if offset < len(data):
        h.sel.unregister(h.master)
    arrived = len(h.lines) - first_line
    if arrived == 0:
        raise BenchError(f"no prediction arrived during the throughput run: {h.stderr_tail()}")
    elapsed = h.lines[-1][0] - t0
    return {"samples": n, "answered": arrived, "seconds": elapsed, "samples_per_s": arrived / elapsed}


def run_daemon_bench(command: list[str], cwd: Path, work: Path, lines: list[bytes],
                     paced: int, flood: int, rate: float = 1000.0, warmup: int = 200,
                     ready_timeout: float = 30.0) -> dict:
    """Start the daemon, measure ready time, paced latency, throughput and RSS, stop it."""
    h = DaemonHarness(command, cwd, work / "daemon.stderr")
    h.start()
    try:
        ready = h.wait_ready(lines[0], ready_timeout)
        h.drain()
        rss_ready = h.rss_mb()
        lat = paced_latency(h, [lines[i % len(lines)] for i in range(paced + warmup)], rate, warmup)
        tput = throughput(h, [lines[i % len(lines)] for i in range(flood)])
        rss_end = h.rss_mb()
    finally:
        code = h.stop()
    if code != 0:
        raise BenchError(f"the daemon exited with code {code} after SIGTERM: {h.stderr_tail()}")
    log.info("daemon: ready %.3f s, p99 %.0f us at %g Hz, %.0f samples/s, peak RSS %.1f MB",
             ready, lat["p99_us"], rate, tput["samples_per_s"], rss_end.get("VmHWM", 0))
    return {"ready_s": ready, "latency": lat, "throughput": tput,
            "rss_ready_mb": rss_ready.get("VmRSS"), "peak_rss_mb": rss_end.get("VmHWM"),
            "rss_end_mb": rss_end.get("VmRSS"), "exit_code": code}
