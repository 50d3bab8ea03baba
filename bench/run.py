"""``python -m bench.run --artifacts DIR --device-python PATH [--steps N] [--smoke] [--out DIR]``.

Measures everything in one run (see ``bench/__init__.py``), writes ``bench.json``,
``bench.md`` and ``latency.png`` into ``--out`` (default ``<artifacts>/bench``), prints
PASS/MISS per bar and then bench.md. A missed bar is reported, not an error: the exit
code is non-zero only when a measurement could not be made.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.daemon_bench import BenchError, run_daemon_bench
from bench.flash import flash_figures
from bench.host import installed_sizes, machine_info
from bench.report import write_outputs
from bench.rows import build_rows, evaluate_bars
from bench.tflite_rows import load_samples
from firmware_bridge.text import format_sample
from runtime.contract import load_contract
from runtime.errors import StepwiseError

log = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parent.parent
DEVICE_BACKEND, BUILD_BACKEND = "tflite_runtime", "ai_edge_litert"


@dataclass(frozen=True)
class Plan:
    """How much of everything to measure."""

    steps: int
    warmup: int
    tf_steps: int
    tf_warmup: int
    paced: int
    paced_warmup: int
    flood: int
    footprint_steps: int = 1000
    flash_repeats: int = 20
    lanes: tuple[int, ...] = (1, 8, 64)

    @classmethod
    def make(cls, steps: int | None, smoke: bool) -> "Plan":
        if smoke:
            n = steps or 200
            return cls(steps=n, warmup=20, tf_steps=min(n, 50), tf_warmup=5, paced=n, paced_warmup=20,
                       flood=max(n, 500), flash_repeats=3)
        n = steps or 10_000
        return cls(steps=n, warmup=1000, tf_steps=n, tf_warmup=200, paced=n, paced_warmup=500,
                   flood=max(n, 20_000))


def _env() -> dict[str, str]:
    drop = ("PYTHONPATH", "PYTHONHOME", "STEPWISE_BACKEND")
    return {k: v for k, v in os.environ.items() if k not in drop} | {"TF_CPP_MIN_LOG_LEVEL": "2"}


def probe(python: str | Path, mode: str, artifacts: Path, *args: str, timeout: float = 900) -> dict:
    """Run ``bench.device_probe`` in a fresh process of ``python``; its JSON result."""
    cmd = [str(python), "-m", "bench.device_probe", mode, "--artifacts", str(artifacts), *args]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"probe {mode} ({python}) took over {timeout:.0f} s") from None
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-5:])
        raise BenchError(f"probe {mode} with {python} exited with {proc.returncode}: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1]) | {"process_wall_s": wall}


def _latency_probe(python, artifacts: Path, backend: str, plan: Plan, lanes=True, variants=None) -> dict:
    args = ["--backend", backend, "--steps", str(plan.steps), "--warmup", str(plan.warmup)]
    if lanes:
        args += ["--lanes", ",".join(map(str, plan.lanes))]
    if variants:
        args += ["--variants", ",".join(variants)]
    return probe(python, "latency", artifacts, *args)


def _daemon_command(device_python: Path, artifacts: Path, state_dir: Path) -> list[str]:
    stepwise = device_python.parent / "stepwise"
    head = [str(stepwise)] if stepwise.exists() else [str(device_python), "-m", "stepwise_cli"]
    return head + ["-q", "serve", "--protocol", "text", "--state-dir", str(state_dir),
                   "--artifacts", str(artifacts), "--backend", DEVICE_BACKEND]


def measure_device(artifacts: Path, device_python: Path, plan: Plan, work: Path, results: dict) -> None:
    """Everything that runs in other processes on the built model: rows 4-6, process cost."""
    build_python = sys.executable
    log.info("rows 4-5 on %s (device env) and %s (build env)", DEVICE_BACKEND, BUILD_BACKEND)
    results["backends"] = {DEVICE_BACKEND: _latency_probe(device_python, artifacts, DEVICE_BACKEND, plan),
                           BUILD_BACKEND: _latency_probe(build_python, artifacts, BUILD_BACKEND, plan)}
    log.info("process cost: engine probe (device env), TensorFlow probe (build env)")
    steps = ["--steps", str(plan.footprint_steps)]
    results["process"] = {"engine": probe(device_python, "footprint", artifacts, "--backend", DEVICE_BACKEND, *steps),
                          "tensorflow": probe(build_python, "footprint-tf", artifacts, *steps)}
    contract = load_contract(artifacts)
    lines = [format_sample(s) for s in load_samples(artifacts, contract)]
    command = _daemon_command(device_python, artifacts, work / "state")
    log.info("row 6: the daemon through a pty")
    daemon = run_daemon_bench(command, ROOT, work, lines, paced=plan.paced, flood=plan.flood,
                              warmup=plan.paced_warmup)
    shown = [Path(command[0]).name if i == 0 else c for i, c in enumerate(command)]
    results["daemon"] = daemon | {"backend": DEVICE_BACKEND, "variant": contract.default_variant,
                                  "reset": contract.window.reset, "command": command,
                                  "command_shown": [c.replace(str(work), "$TMP") for c in shown]}


def measure_tensorflow(artifacts: Path, device_python: Path, plan: Plan, work: Path, results: dict) -> None:
    """Rows 1-3 in this process, and the wider model (built here, timed in both envs)."""
    from bench.bigmodel import build_wider_artifacts, default_model_info
    from bench.keras_rows import keras_rows, load_keras

    contract = load_contract(artifacts)
    samples = load_samples(artifacts, contract)
    normalised = (samples - np.asarray(contract.input.mean, np.float32)) / np.asarray(contract.input.std, np.float32)
    log.info("rows 1-3: Keras and TensorFlow")
    results["keras"] = keras_rows(load_keras(artifacts), normalised, plan.tf_steps, plan.tf_warmup)
    log.info("model size: a 4x wider model")
    wide = work / "wider"
    sizes = {"default": default_model_info(artifacts), "x4": build_wider_artifacts(artifacts, wide, 4)}
    for name, folder in (("default", artifacts), ("x4", wide)):
        per_backend = {}
        for python, backend in ((device_python, DEVICE_BACKEND), (sys.executable, BUILD_BACKEND)):
            if name == "default":
                per_backend[backend] = results["backends"][backend]["variants"]["float32"]
            else:
                per_backend[backend] = _latency_probe(python, folder, backend, plan, lanes=False,
                                                      variants=["float32"])["variants"]["float32"]
        sizes[name]["float32"] = per_backend
    results["model_size"] = sizes


def versions(results: dict) -> dict:
    import keras
    import tensorflow as tf

    b = results["backends"]
    return {"python": results["machine"]["python"], "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy (build env)": np.__version__, "numpy (device env)": b[DEVICE_BACKEND]["numpy"],
            "tflite_runtime": b[DEVICE_BACKEND]["backend_version"],
            "ai_edge_litert": b[BUILD_BACKEND]["backend_version"]}


def run_bench(artifacts: Path, device_python: Path, plan: Plan, out: Path, smoke: bool) -> str:
    results: dict = {"generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "smoke": smoke,
                     "settings": asdict(plan), "machine": machine_info()}
    results["installed"] = installed_sizes(device_python.parent.parent, Path(sys.prefix))
    with tempfile.TemporaryDirectory(prefix="stepwise-bench-") as tmp:
        work = Path(tmp)
        measure_device(artifacts, device_python, plan, work, results)
        contract = load_contract(artifacts)
        log.info("flash: checkpoint cost")
        results["flash"] = flash_figures(artifacts, load_samples(artifacts, contract),
                                         repeats=plan.flash_repeats)
        measure_tensorflow(artifacts, device_python, plan, work, results)
    results["lanes"] = {b: r["lanes"] for b, r in results["backends"].items()}
    results["versions"] = versions(results)
    results["machine_end"] = {"load_average": list(os.getloadavg())}
    results["rows"] = build_rows(results)
    results["bars"] = evaluate_bars(results["rows"], results)
    for bar in results["bars"]:
        log.info("%s: %s (%.3g %s, limit %s %.3g)", bar["result"], bar["bar"], bar["value"], bar["unit"],
                 bar["op"], bar["limit"])
    return write_outputs(results, out)


def _at_least_10(text: str) -> int:
    value = int(text)
    if value < 10:
        raise argparse.ArgumentTypeError(f"{value} is smaller than the minimum 10")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=(
        "Per-step latency, daemon, process, flash and scale figures: stepwise next to the usual ways."))
    p.add_argument("--artifacts", required=True, type=Path,
                   help="Built artifacts folder (manifest.json, model.keras, step models).")
    p.add_argument("--device-python", required=True, type=Path,
                   help="The device environment's python (tflite-runtime, no TensorFlow).")
    p.add_argument("--steps", type=_at_least_10, default=None,
                   help="Timed steps per latency row (default 10000; --smoke: 200).")
    p.add_argument("--smoke", action="store_true", help="Few steps everywhere: checks that the bench runs.")
    p.add_argument("--out", type=Path, default=None, help="Output folder (default: <artifacts>/bench).")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.artifacts.is_dir():
        parser.error(f"--artifacts {args.artifacts}: not a folder")
    if not args.device_python.is_file():
        parser.error(f"--device-python {args.device_python}: not a file")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    artifacts = args.artifacts.absolute()
    plan = Plan.make(args.steps, args.smoke)
    out = (args.out or artifacts / "bench").absolute()
    try:
        text = run_bench(artifacts, args.device_python.absolute(), plan, out, args.smoke)
    except StepwiseError as e:
        sys.stderr.write(f"Error: {e}\n")
        return 1
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
