"""``python -m bench.streams``: many streams through a real Mosquitto broker.

``load``: a private broker on loopback, the daemon (``stepwise serve --mqtt``, device
environment) and a lean socket client publishing ``--streams`` streams at ``--rate``
samples/s each for ``--seconds``; sample-to-prediction latency per prediction, every
stream's predictions checked against ``runtime.replay`` of that stream's own samples
(the function ``stepwise replay`` runs), CPU seconds of the broker and the daemon.
``engine``: the engine's step cost per stream at ``--streams`` lanes (``step_lanes``,
and the lane manager's full round). Prints one JSON object; ``bench.streams_report``
turns it into the README table.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("bench.streams")
PREFIX = "bench"


def sample_pool(artifacts: Path, size: int = 4096) -> np.ndarray:
    """Real samples ``[size, F]`` float32 from the build's test data, as the text
    protocol carries them (float32 repr, parsed back exactly)."""
    with np.load(Path(artifacts) / "test_data.npz", allow_pickle=False) as z:
        X = z["X"].astype(np.float32)
    flat = X.reshape(-1, X.shape[-1])
    return np.resize(flat, (size, flat.shape[1])).astype(np.float32)


def stream_samples(pool: np.ndarray, k: int, n: int) -> np.ndarray:
    """Stream ``k``'s first ``n`` samples ``[n, F]``: the pool from its own offset."""
    return pool[(k * 37 + np.arange(n)) % len(pool)]


# -- engine cost -------------------------------------------------------------------------
def best_of(fn, n: int, blocks: int = 5) -> float:
    """Seconds per call: the best of ``blocks`` timed blocks of ``n // blocks`` calls (on a
    shared machine the quickest block is the one least disturbed by other work)."""
    per = max(1, n // blocks)
    times = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(per):
            fn()
        times.append((time.perf_counter() - t0) / per)
    return min(times)


def engine_cost(artifacts: Path, streams: int, steps: int) -> dict:
    from runtime.engine import Engine
    from runtime.lanes import LaneManager

    pool = sample_pool(artifacts)
    eng = Engine.load(artifacts, lanes=streams, reset="never")
    X = np.stack([stream_samples(pool, k, 1)[0] for k in range(streams)])
    for _ in range(50):
        eng.step_lanes(X)
    lanes_s = best_of(lambda: eng.step_lanes(X), steps)
    m = LaneManager(lambda n: Engine.load(artifacts, lanes=n, reset="never"), streams, 3600.0)
    batch = [(f"s{k}", X[k], 0.0) for k in range(streams)]
    for _ in range(20):
        m.step(batch)
    round_s = best_of(lambda: m.step(batch), max(20, steps // 10))
    one = Engine.load(artifacts, reset="never")
    for _ in range(200):
        one.step(X[0])
    single_s = best_of(lambda: one.step(X[0]), steps)
    names = [s for s, _, _ in batch]
    for _ in range(20):
        m.step_block(names, X, 0.0)
    block_s = best_of(lambda: m.step_block(names, X, 0.0), max(20, steps // 10))
    part = names[:50]
    block50_s = best_of(lambda: m.step_block(part, X[:50], 0.0), steps)
    return {"streams": streams, "step_lanes_us": lanes_s * 1e6,
            "per_stream_us": lanes_s * 1e6 / streams, "round_us": round_s * 1e6,
            "round_per_stream_us": round_s * 1e6 / streams, "single_stream_step_us": single_s * 1e6,
            "block_us": block_s * 1e6, "block_per_stream_us": block_s * 1e6 / streams,
            "block50_us": block50_s * 1e6, "block50_per_stream_us": block50_s * 1e6 / 50}


def pipeline_cost(artifacts: Path, streams: int, ticks: int, phases: int) -> dict:
    """The daemon's CPU per sample without a broker: PUBLISH packets of ``streams``
    streams in ``phases`` bursts per tick go through the bulk source's parse
    (``_take_bytes``), ``MultiDaemon.handle`` (lanes, engine, JSON lines) and the
    framing of the QoS 1 predictions, as the daemon's loop runs them; only the socket
    calls are left out."""
    from bench.mqtt_load import publish_packet
    from firmware_bridge.mqtt_bulk import BulkMqttSource
    from runtime.multiserve import MultiDaemon, MultiServeOptions

    pool = sample_pool(artifacts)
    lines = [",".join(repr(float(v)) for v in row).encode() for row in pool]
    chunks = [b"".join(publish_packet(f"{PREFIX}/s{k}/sample", lines[(k * 37 + j) % len(lines)])
                       for k in range(g, streams, phases))
              for j in range(ticks) for g in range(phases)]
    feature_names = __import__("runtime.contract", fromlist=["x"]).load_contract(artifacts) \
        .input.feature_names
    src = BulkMqttSource(f"mqtt://127.0.0.1:1/{PREFIX}", feature_names)
    src._state = "up"
    src._send = lambda data: True
    d = MultiDaemon(MultiServeOptions(artifacts=artifacts, state_dir=Path(tempfile.mkdtemp()),
                                      reset="never", max_streams=streams,
                                      checkpoint_interval=1e9))
    warm = 2 * phases  # two ticks: every stream has its lane
    for c in chunks[:warm]:
        d.handle(src._take_bytes(c, time.monotonic()), src)
    src.inflight.clear()
    t0 = time.process_time()
    for c in chunks[warm:]:
        d.handle(src._take_bytes(c, time.monotonic()), src)
        src.inflight.clear()  # what the broker's PUBACKs do
    cpu = time.process_time() - t0
    n = (ticks - 2) * streams
    return {"streams": streams, "phases": phases, "samples": n, "cpu_s": cpu,
            "cpu_per_sample_us": cpu / n * 1e6, "samples_per_cpu_second": n / cpu,
            "load_average": os.getloadavg()[0]}


# -- the load run ------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_daemons(python: str, artifacts: Path, url: str, streams: int, work: Path,
                  client: str = "auto", qos: int = 1, per_process: bool = False):
    """One many-stream daemon for every stream, or (``per_process``) one daemon per
    stream, each under its own prefix ``bench/p<k>``; the processes, the first one's
    metrics port and the client kind it logged."""
    n = streams if per_process else 1
    procs = []
    for k in range(n):
        log_file = work / f"daemon-{k}.log"
        prefix = f"{PREFIX}/p{k}" if per_process else PREFIX
        cmd = [python, "-m", "stepwise_cli", "serve", "--artifacts", str(artifacts), "--mqtt",
               f"{url}/{prefix}", "--reset", "never", "--max-streams", str(1 if per_process else streams),
               "--stream-idle", "3600", "--state-dir", str(work / f"state-{k}"),
               "--checkpoint-interval", "30", "--metrics", "127.0.0.1:0", "--mqtt-client", client,
               "--mqtt-qos", str(qos)]
        procs.append((subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                       stderr=open(log_file, "w")), log_file))
    deadline = time.monotonic() + 60 + 2 * n
    found: dict[int, tuple[int, str]] = {}
    while time.monotonic() < deadline and len(found) < n:
        for k, (proc, log_file) in enumerate(procs):
            if k in found:
                continue
            text = log_file.read_text()
            port = re.search(r"metrics on http://127.0.0.1:(\d+)/", text)
            kind = re.search(r"MQTT connected to \S+ \((\w+)Client\)", text)
            if port and kind:
                found[k] = (int(port.group(1)), kind.group(1))
            elif proc.poll() is not None:
                deadline = 0
        time.sleep(0.1)
    if len(found) < n:
        for proc, _ in procs:
            proc.kill()
        bad = next(f for k, (_, f) in enumerate(procs) if k not in found)
        raise RuntimeError(f"daemon did not start:\n{bad.read_text()[-2000:]}")
    return [p for p, _ in procs], found[0][0], found[0][1]


def topic_of(k: int, per_process: bool) -> str:
    return f"{PREFIX}/p{k}/s{k}/sample" if per_process else f"{PREFIX}/s{k}/sample"


def encode_ticks(pool: np.ndarray, streams: int, rate: float, seconds: float, slots: int,
                 per_process: bool = False) -> tuple[list, list]:
    """Every send of the run, encoded before it starts: ``[(tick, members, packets)]``
    and the groups. Stream ``k`` sends at phase ``(k % slots) / slots`` of the period
    (independent sensors are not phase-locked; ``slots=1``: all at the same instant)."""
    from bench.mqtt_load import _string, _varint

    lines = [",".join(repr(float(v)) for v in row).encode() for row in pool]
    topics = [_string(topic_of(k, per_process)) for k in range(streams)]
    groups = [list(range(g, streams, slots)) for g in range(min(slots, streams))]
    sends = []
    for j in range(int(rate * seconds)):
        for g, members in enumerate(groups):
            packet = b"".join(b"\x30" + _varint(len(topics[k]) + len(pl)) + topics[k] + pl
                              for k, pl in ((k, lines[(k * 37 + j) % len(lines)])
                                            for k in members))
            sends.append((j, g, packet))
    return sends, groups


def publish_ticks(client, sends: list, groups: list, streams: int, rate: float,
                  ticks: int) -> np.ndarray:
    """Sends every pre-encoded burst at its time; the send times ``[streams, ticks]``."""
    sent = np.zeros((streams, ticks))
    t0 = time.monotonic() + 0.2
    n_groups = len(groups)
    for j, g, packet in sends:
        due = t0 + (j + g / n_groups) / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        sent[groups[g], j] = time.monotonic()
        client.sock.sendall(packet)
    return sent


def load_run(artifacts: Path, python: str, streams: int, rate: float, seconds: float,
             warmup: float, slots: int = 20, client: str = "auto", qos: int = 1,
             per_process: bool = False) -> dict:
    from bench.mqtt_load import Collector, RawClient
    from firmware_bridge.broker import LocalBroker

    pool = sample_pool(artifacts)
    work = Path(tempfile.mkdtemp(prefix="stepwise-streams-"))
    sends, groups = encode_ticks(pool, streams, rate, seconds, slots, per_process)
    ticks = int(rate * seconds)
    with LocalBroker(max_queued=1_000_000) as broker:
        daemons, metrics_port, kind = start_daemons(python, artifacts, broker.url, streams, work,
                                                    client, qos, per_process)
        pids = [d.pid for d in daemons]
        try:
            collector = Collector(broker.host, broker.port, f"{PREFIX}/+/+/prediction"
                                  if per_process else f"{PREFIX}/+/prediction")
            sender = RawClient(broker.host, broker.port, "bench-sensors")
            cpu0 = {"broker": cpu_seconds(broker.pid), "daemon": sum(map(cpu_seconds, pids)),
                    "bench": time.process_time()}
            w0 = time.monotonic()
            sent = publish_ticks(sender, sends, groups, streams, rate, ticks)
            wall_send = time.monotonic() - w0
            expected = sent.size
            deadline, last = time.monotonic() + 30, -1
            while collector.count() < expected and time.monotonic() < deadline:
                if collector.count() == last:
                    deadline = min(deadline, time.monotonic() + 5)
                last = collector.count()
                time.sleep(0.5)
            wall = time.monotonic() - w0
            cpu1 = {"broker": cpu_seconds(broker.pid), "daemon": sum(map(cpu_seconds, pids)),
                    "bench": time.process_time()}
            scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                             timeout=10).read().decode()
            rss = sum(map(rss_mb, pids))
            sender.close()
            collector.close()
        finally:
            for d in daemons:
                d.send_signal(signal.SIGTERM)
            for d in daemons:
                d.wait(60)
    shutil.rmtree(work, ignore_errors=True)
    out = summarize(artifacts, pool, streams, rate, sent, collector.records(), warmup,
                    {k: cpu1[k] - cpu0[k] for k in cpu0}, wall, wall_send, scraped, rss)
    out["phases"] = slots
    out["processes"] = len(daemons)
    out["client"] = {"Mosquitto": "libmosquitto", "Paho": "paho-mqtt", "Bulk": "bulk"}.get(kind, kind)
    out["qos"] = qos
    out["load_average"] = os.getloadavg()[0]
    return out


def summarize(artifacts, pool, streams, rate, sent, records, warmup, cpu, wall, wall_send,
              scraped, rss) -> dict:
    from runtime.engine import Engine
    from runtime.replay import iter_replay

    ticks = sent.shape[1]
    got = np.full((streams, ticks), np.nan)
    ys: dict[int, dict[int, list]] = {}
    for topic, payload, t in records:
        k = int(topic.split(b"/")[-2][1:])
        rec = json.loads(payload)
        got[k, rec["i"]] = t - sent[k, rec["i"]]
        ys.setdefault(k, {})[rec["i"]] = rec["y"]
    start = int(warmup * rate)
    lat = got[:, start:].ravel()
    arrived = lat[~np.isnan(lat)]
    worst, checked, missing = 0.0, 0, 0
    for k in range(streams):
        engine = Engine.load(artifacts, reset="never")
        xs = stream_samples(pool, k, ticks)
        want = np.array([p.y for _, _, p in iter_replay(engine, [xs], reset_between=False)])
        mine = ys.get(k, {})
        idx = sorted(mine)
        missing += ticks - len(idx)
        if idx:
            worst = max(worst, float(np.abs(np.array([mine[i] for i in idx]) - want[idx]).max()))
            checked += len(idx)
    total_cpu = sum(cpu.values())
    per_second = np.nanmax(np.where(np.isnan(got), -1, got).reshape(streams, -1, int(rate))
                           .transpose(1, 0, 2).reshape(-1, streams * int(rate)), axis=1) \
        if rate >= 1 and ticks % int(rate) == 0 else np.array([])
    return {
        "streams": streams, "rate_hz": rate, "seconds": ticks / rate, "sent": ticks * streams,
        "predictions": len(records), "missing": missing, "checked": checked,
        "max_abs_dy_vs_replay": worst, "send_wall_s": wall_send, "wall_s": wall,
        "throughput_per_s": len(records) / wall_send,
        "latency_ms": {q: float(np.percentile(arrived, p)) * 1e3 if arrived.size else None
                       for q, p in (("p50", 50), ("p99", 99), ("max", 100))},
        "cpu_s": cpu, "broker_cpu_share_of_machine": cpu["broker"] / (wall * os.cpu_count()),
        "broker_share_of_measured_cpu": cpu["broker"] / total_cpu if total_cpu else None,
        "daemon_cores": cpu["daemon"] / wall, "daemon_rss_mb": rss,
        "metrics_lines": len(scraped.splitlines()),
        "worst_seconds_ms": sorted(((float(v) * 1e3, k) for k, v in enumerate(per_second)),
                                   reverse=True)[:5],
    }


def table(engine: dict, runs: list[dict]) -> str:
    """The README table: one row per load run, then the engine rows."""
    out = ["| streams x rate, daemons, MQTT client, prediction QoS | sent | predictions | p50 / p99 / max latency (ms) "
           "| bar p99 <= 20 ms | max abs dy vs replay | daemon cores | daemon CPU per prediction "
           "| daemon RSS | broker CPU (share of machine) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lat = r["latency_ms"]
        p99 = lat["p99"]
        ok = "PASS" if p99 is not None and p99 <= 20 and r["missing"] == 0 else "MISS"
        fmt = "/".join("-" if lat[q] is None else f"{lat[q]:.1f}" for q in ("p50", "p99", "max"))
        procs = r.get("processes", 1)
        who = "one daemon" if procs == 1 else f"{procs} daemons (one per stream)"
        out.append(f"| {r['streams']} x {r['rate_hz']:g}/s for {r['seconds']:g} s, {who}, "
                   f"{r['client']}, QoS {r.get('qos', 1)} (load avg {r['load_average']:.1f}) "
                   f"| {r['sent']:,} "
                   f"| {r['predictions']:,} ({r['missing']:,} missing) | {fmt} | {ok} "
                   f"| {r['max_abs_dy_vs_replay']:.1e} | {r['daemon_cores']:.2f} "
                   f"| {1e6 * r['cpu_s']['daemon'] / max(1, r['predictions']):.1f} us "
                   f"| {r['daemon_rss_mb']:.0f} MB "
                   f"| {r['cpu_s']['broker']:.1f} s ({100 * r['broker_cpu_share_of_machine']:.1f} %) |")
    if engine is None:
        return "\n".join(out)
    e = engine
    ok = "PASS" if e["per_stream_us"] <= 1.0 else "MISS"
    out += ["", "| engine at %d lanes | per step | per stream | bar <= 1 us |" % e["streams"],
            "|---|---|---|---|",
            f"| Engine.step_lanes (one invoke) | {e['step_lanes_us']:.0f} us "
            f"| {e['per_stream_us']:.2f} us | {ok} |",
            f"| LaneManager round (lanes, bookkeeping, results) | {e['round_us']:.0f} us "
            f"| {e['round_per_stream_us']:.2f} us | - |",
            f"| one stream alone (Engine.step) | {e['single_stream_step_us']:.1f} us "
            f"| {e['single_stream_step_us']:.1f} us | - |"]
    if "block_us" in e:
        out.append(f"| LaneManager.step_block, every stream (bulk source's path) | {e['block_us']:.0f} us "
                   f"| {e['block_per_stream_us']:.2f} us | - |")
        out.append(f"| LaneManager.step_block, 50 of them (one send phase) "
                   f"| {e['block50_us']:.0f} us | {e['block50_per_stream_us']:.2f} us | - |")
    return "\n".join(out)


def pipeline_table(pipes: list[dict]) -> str:
    out = ["| daemon alone, no broker (`pipeline`) | CPU per sample | samples per CPU second |",
           "|---|---|---|"]
    for p in pipes:
        out.append(f"| {p['streams']} streams, bursts of {p['streams'] // p['phases']} samples "
                   f"({p['phases']} send phases), "
                   f"load avg {p['load_average']:.1f} | {p['cpu_per_sample_us']:.1f} us "
                   f"| {p['samples_per_cpu_second']:,.0f} |")
    return "\n".join(out)


def run_all(a) -> int:
    """Engine rows in the device environment, then each load run; the table on stdout."""
    engine, pipes = None, []
    if not a.loads_only:
        cmd = [a.device_python, "-m", "bench.streams", "engine", "--artifacts", str(a.artifacts),
               "--streams", str(a.streams), "--steps", str(a.steps)]
        engine = json.loads(subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True,
                                           text=True).stdout)
    for phases in () if a.loads_only else (20, 4):
        cmd = [a.device_python, "-m", "bench.streams", "pipeline", "--artifacts",
               str(a.artifacts), "--streams", str(a.streams), "--rate", "30", "--phases", str(phases)]
        pipes.append(json.loads(subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True,
                                               text=True).stdout))
    print(json.dumps({"engine": engine, "pipeline": pipes}), file=sys.stderr)
    runs = []
    for client in a.clients:
        for rate in a.rates:
            for qos in a.qos_list:
                r = load_run(a.artifacts, a.device_python, a.streams, rate, a.seconds, a.warmup,
                             a.phases, client, qos)
                print(json.dumps(r), file=sys.stderr)
                runs.append(r)
    for n in a.compare:
        for per_process in (False, True):
            r = load_run(a.artifacts, a.device_python, n, a.compare_rate, a.seconds, a.warmup,
                         a.phases, "auto", 1, per_process)
            print(json.dumps(r), file=sys.stderr)
            runs.append(r)
    print(table(engine, runs))
    if pipes:
        print()
        print(pipeline_table(pipes))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.streams")
    p.add_argument("mode", choices=["load", "engine", "pipeline", "all"])
    p.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    p.add_argument("--device-python", default=str(ROOT / ".venv-device" / "bin" / "python"))
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--clients", type=lambda t: t.split(","), default=["auto"],
                   help="all: the daemon's --mqtt-client values to run, comma-separated")
    p.add_argument("--mqtt-client", default="auto", help="load: the daemon's --mqtt-client")
    p.add_argument("--loads-only", action="store_true",
                   help="all: only the load runs (no engine and pipeline rows)")
    p.add_argument("--per-process", action="store_true",
                   help="load: one daemon per stream (each under its own prefix)")
    p.add_argument("--compare", type=lambda t: [int(v) for v in t.split(",") if v], default=[],
                   help="all: stream counts to run both ways, one daemon and one per stream")
    p.add_argument("--compare-rate", type=float, default=50.0)
    p.add_argument("--qos-list", type=lambda t: [int(v) for v in t.split(",")], default=[1],
                   help="all: prediction QoS values to run, comma-separated")
    p.add_argument("--qos", type=int, default=1, choices=[0, 1],
                   help="load: the daemon's --mqtt-qos (predictions)")
    p.add_argument("--phases", type=int, default=20,
                   help="send phases per period (1: every stream at the same instant)")
    p.add_argument("--rates", type=lambda t: [float(v) for v in t.split(",")], default=[50.0],
                   help="all: the per-stream rates to run, comma-separated")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if a.mode == "all":
        return run_all(a)
    if a.mode == "engine":
        out = engine_cost(a.artifacts, a.streams, a.steps)
    elif a.mode == "pipeline":
        out = pipeline_cost(a.artifacts, a.streams, int(a.rate), a.phases)
    else:
        out = load_run(a.artifacts, a.device_python, a.streams, a.rate, a.seconds, a.warmup,
                       a.phases, a.mqtt_client, a.qos, a.per_process)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
