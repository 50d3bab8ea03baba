"""Measurements that must run in a process of their own, printed as one JSON object.

``python -m bench.device_probe latency ...``: rows 4 and 5 (and the lanes sweep) on one
backend, in whichever environment runs it. ``footprint``: what the device pays to get an
engine going (import + load, then 1000 steps) and its peak RSS. ``footprint-tf``: the same
loop built on TensorFlow (the Keras ``stateful=True`` model), build environment only.

Module-level imports are standard library only, so the footprint probes time the real
imports of a fresh process.
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def footprint(artifacts: str, steps: int, backend: str | None) -> dict:
    """Import the runtime and the interpreter, load the engine as ``serve`` does, step."""
    t0 = time.perf_counter()
    import numpy as np

    from runtime.backend import choose_backend
    from runtime.engine import Engine

    name, _, version = choose_backend(backend)
    t1 = time.perf_counter()
    engine = Engine.load(artifacts, backend=name)
    t2 = time.perf_counter()
    sample = np.asarray(engine.contract.input.mean, np.float32)
    for _ in range(steps):
        engine.step(sample)
    t3 = time.perf_counter()
    return {"what": "stepwise engine", "backend": name, "backend_version": version,
            "import_s": t1 - t0, "load_s": t2 - t1, "import_load_s": t2 - t0,
            "steps": steps, "steps_s": t3 - t2, "peak_rss_mb": _peak_rss_mb()}


def footprint_tf(artifacts: str, steps: int) -> dict:
    """Import TensorFlow and Keras, load model.keras as a stateful copy, step."""
    t0 = time.perf_counter()
    import keras
    import numpy as np
    import tensorflow as tf

    t1 = time.perf_counter()
    from bench.keras_rows import load_keras, stateful_copy

    model = stateful_copy(load_keras(artifacts))
    features = int(model.inputs[0].shape[-1])
    x = np.zeros((1, 1, features), np.float32)
    model.predict_on_batch(x)  # the first call builds the predict function: part of loading
    t2 = time.perf_counter()
    for _ in range(steps):
        model.predict_on_batch(x)
    t3 = time.perf_counter()
    return {"what": "Keras stateful=True", "tensorflow": tf.__version__, "keras": keras.__version__,
            "import_s": t1 - t0, "load_s": t2 - t1, "import_load_s": t2 - t0,
            "steps": steps, "steps_s": t3 - t2, "peak_rss_mb": _peak_rss_mb()}


def latency(artifacts: str, backend: str | None, variants: list[str] | None, lanes: list[int],
            steps: int, warmup: int) -> dict:
    import platform

    from bench.tflite_rows import measure

    out = measure(artifacts, backend, variants, lanes, steps, warmup)
    out["python"] = platform.python_version()
    return out


def _csv(kind):
    return lambda text: [kind(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.device_probe")
    parser.add_argument("mode", choices=["latency", "footprint", "footprint-tf"])
    parser.add_argument("--artifacts", required=True)
    parser.add_argument("--backend", default=None)
    parser.add_argument("--variants", type=_csv(str), default=None)
    parser.add_argument("--lanes", type=_csv(int), default=[])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.mode == "footprint":
        result = footprint(args.artifacts, args.steps, args.backend)
    elif args.mode == "footprint-tf":
        result = footprint_tf(args.artifacts, args.steps)
    else:
        result = latency(args.artifacts, args.backend, args.variants, args.lanes, args.steps,
                         args.warmup)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
